"""``show FILE --png OUT``: a dump's timeline as a PNG, drawn by matplotlib.

matplotlib is an extra (``pip install 'watchdog-core[plot]'``), imported only here. The
figure is drawn by the Agg canvas, never through pyplot, so no display is ever looked
for. Text from the dump is made printable and never read as mathtext (a ``$`` in a
label stays a dollar sign). Where a text goes is decided from its extent as the Agg
renderer measures it, so that no label overlaps another or leaves the figure.
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from typing import TYPE_CHECKING

from . import UsageError, printable
from ._timeline import (
    UNITS,
    Timeline,
    byte_label,
    descendant_verdict,
    dots,
    nice_seconds,
    place_labels,
    seconds,
    size,
    verdict,
)

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    from .._diagnostics import Diagnostics

SIZE_INCHES, DPI = (10.0, 5.6), 100  # 1000 x 560 pixels
FIGURE_PIXELS = (SIZE_INCHES[0] * DPI, SIZE_INCHES[1] * DPI)
PLOT = (0.08, 0.14, 0.72, 0.66)  # the axes: left, bottom, width, height, of the figure
PLOT_PIXELS = FIGURE_PIXELS[0] * PLOT[2]
MARGIN = 10  # pixels kept clear at the figure's edges
MARK_ROWS = 3
LABEL_CHARS = 24  # of a mark's label on the plot
MARK_FONT = "DejaVu Sans Mono"  # of the marks' 8-point labels: matplotlib's own, always there
PAD = 0.025  # of the time axis, after the dump; of the y axis, above its top
# As on the page: each band up to the next threshold (critical: to the limit), then over.
COLOURS = {"soft": "#fff1b8", "hard": "#ffd3a1", "critical": "#ffb0ab", "over": "#ffe1de"}
RSS, LIMIT, MARK, DUMP = "#1f5fbf", "#b00020", "#6a4c93", "#b00020"
NO_START = "--png: matplotlib does not start"


def png(dump: Diagnostics, timeline: Timeline) -> bytes:
    """The PNG file's bytes. ImportError when matplotlib (or what it needs) is missing;
    UsageError when it is there but fails to start."""
    figure = draw(dump, timeline)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a glyph the font lacks: drawn as a box, said not
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _start_matplotlib() -> None:
    """matplotlib imported, ready to draw on an Agg canvas. Its import reads MPLBACKEND,
    which nothing here needs (the canvas is Agg's, named): in our own process, with
    matplotlib not imported yet, a bad one (Jupyter's inline backend, a typo) is
    replaced by Agg; and any failure but a missing module is one line, not a traceback."""
    if "matplotlib" not in sys.modules:
        os.environ["MPLBACKEND"] = "Agg"
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.figure
        import matplotlib.font_manager  # noqa: F401
    except ImportError:
        raise
    except Exception as exc:  # installed but broken: a font cache, an rc file, a backend
        raise UsageError(f"{NO_START} ({type(exc).__name__}: {printable(exc)})") from None


def draw(dump: Diagnostics, timeline: Timeline) -> Figure:
    """The figure ``png`` saves, on an Agg canvas."""
    _start_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    low, high = timeline.x_range()  # never empty: MIN_SPAN at least
    high += (high - low) * PAD  # room for the dump's point at the right edge
    top, step, unit = timeline.y_axis()
    scale = dict(UNITS)[unit]
    ceiling = top * (1 + PAD)
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    renderer = FigureCanvasAgg(figure).get_renderer()  # type: ignore[no-untyped-call]
    axes = figure.add_axes(PLOT)
    legend: list[Artist] = [Line2D([], [], color=RSS, lw=2, label="RSS")]
    limit = timeline.limit if timeline.limit_in_view() else None
    if limit is not None:
        for name, low_ratio, high_ratio in timeline.bands():
            if low_ratio * limit >= ceiling:
                continue  # wholly above the axis: never drawn outside the plot
            axes.axhspan(low_ratio * limit / scale, min(high_ratio * limit, ceiling) / scale,
                         color=COLOURS[name], zorder=0, lw=0)
            if name != "over":
                legend.append(Patch(color=COLOURS[name], label=f"{name} {low_ratio:.0%}"))
        axes.axhline(limit / scale, color=LIMIT, ls="--", lw=1.5, zorder=2)
        legend.append(Line2D([], [], color=LIMIT, ls="--",
                             label=f"limit {size(limit)}"))
    points = timeline.points
    if points:
        ts, values = [t for t, _ in points], [rss / scale for _, rss in points]
        axes.fill_between(ts, values, color=RSS, alpha=0.12, lw=0, zorder=3)
        axes.plot(ts, values, color=RSS, lw=2, zorder=4)
        spots = dots(points, lambda t: _pixels(t, low, high),
                     lambda v: v / ceiling * FIGURE_PIXELS[1] * PLOT[3])
        if spots:  # a dot for each place, up to MAX_SAMPLE_DOTS: 50 samples at one time too
            axes.scatter([t for t, _ in spots], [rss / scale for _, rss in spots], s=16,
                         color=RSS, zorder=4)
    else:
        axes.text(0.5, 0.5, "no samples: the watchdog had not sampled the host yet",
                  transform=axes.transAxes, ha="center", color="#777", parse_math=False)
    _marks(axes, timeline, low, high, renderer, FontProperties(family=MARK_FONT, size=8))
    if timeline.marks:
        legend.append(Line2D([], [], color=MARK, ls=":", label="mark"))
    _siblings(axes, timeline, low, high, scale, renderer, FontProperties(size=8))
    if timeline.drawn_siblings():
        legend.append(Line2D([], [], ls="", marker="o", mfc="white", mec="#444",
                             label="other dumps"))
    if timeline.rss is not None:
        axes.scatter([0.0], [min(timeline.rss, ceiling) / scale], s=60, color=DUMP, zorder=6,
                     edgecolor="white", clip_on=False)
        legend.append(Line2D([], [], ls="", marker="o", color=DUMP, label="this dump"))
    axes.set_xlim(low, high)
    axes.set_ylim(0, ceiling / scale)
    every = nice_seconds(high - low)
    xticks = [k * every for k in range(math.ceil(low / every - 1e-9),
                                       math.floor(high / every + 1e-9) + 1)]
    axes.set_xticks(xticks, [seconds(t) for t in xticks])
    yticks = [k * step for k in range(round(top / step) + 1)]
    axes.set_yticks([v / scale for v in yticks], [byte_label(v, unit) for v in yticks])
    axes.set_xlabel(timeline.x_title())
    axes.grid(alpha=0.25)
    axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                fontsize=9)
    _words(figure, dump, timeline, renderer)
    return figure


def _words(figure: Figure, dump: Diagnostics, timeline: Timeline,
           renderer: RendererBase) -> None:
    """The headline and the verdict above the plot, the figures and the risks under it:
    each a line cut to the figure's width."""
    from matplotlib.font_manager import FontProperties

    room = FIGURE_PIXELS[0] * (1 - PLOT[0]) - MARGIN
    news = verdict(dump)
    if dump.descendant is not None:  # the news of such a dump; the host lived on
        news = f"{descendant_verdict(dump.descendant)}; {news}"
    m = dump.memory
    notes = []
    if len(timeline.drawn_marks()) < len(timeline.marks):
        notes.append(f"{len(timeline.marks)} marks, {len(timeline.drawn_marks())} drawn")
    if timeline.left_out:
        notes.append(f"{timeline.left_out} sample{'s' if timeline.left_out != 1 else ''} "
                     "of absurd times left out")
    lines = [  # (where, what, points, weight, colour)
        (0.955, f"{dump.trigger} dump of session {dump.session_id}", 13, "bold", "#1d1d1f"),
        (0.915, news, 11, "normal", "#1d1d1f"),
        (0.040, f"rss {size(m.rss)} of {size(m.heap_limit)} ({m.limit_source}), ratio "
         f"{m.ratio:.3f}; {timeline.samples()}; bands: thresholds of "
         f"{timeline.thresholds_from}", 8.5, "normal", "#444"),
        (0.012, "; ".join([f"risks: {', '.join(dump.risks) or 'none'}", *notes]), 8.5,
         "normal", "#444")]
    for at, line, points, weight, colour in lines:
        prop = FontProperties(size=points, weight=weight)
        figure.text(PLOT[0], at, _fit(printable(line), room, renderer, prop),
                    fontproperties=prop, color=colour, parse_math=False)


def _marks(axes: Axes, timeline: Timeline, low: float, high: float, renderer: RendererBase,
           prop: FontProperties) -> None:
    """A dotted line per mark drawn (at most MAX_DRAWN_MARKS, thinned evenly); its label
    above the plot where a row has room for its measured width."""
    drawn = [mark for _, mark in timeline.drawn_marks()]
    shorts = [_cut(printable(m.label), LABEL_CHARS) for m in drawn]
    right = FIGURE_PIXELS[0] * (1 - PLOT[0]) - MARGIN  # from the plot's left edge
    places = place_labels([_pixels(m.t, low, high) for m in drawn],
                          [_width(s, renderer, prop) for s in shorts], MARK_ROWS, right)
    for mark, short, place in zip(drawn, shorts, places, strict=True):
        axes.axvline(mark.t, color=MARK, ls=":", lw=1, alpha=0.7, zorder=2)
        if place is not None:
            row, start = place
            axes.text(start / PLOT_PIXELS, 1.02 + 0.05 * row, short, transform=axes.transAxes,
                      fontproperties=prop, color=MARK, parse_math=False, clip_on=False)


def _siblings(axes: Axes, timeline: Timeline, low: float, high: float, scale: int,
              renderer: RendererBase, prop: FontProperties) -> None:
    """The other dumps of the session within the timeline, each a point, its trigger
    under it while the one row of them has room."""
    drawn = sorted(timeline.drawn_siblings(), key=lambda s: s.t)
    names = [printable(s.trigger) for s in drawn]
    widths = [_width(n, renderer, prop) for n in names]
    places = place_labels([_pixels(s.t, low, high) - w / 2
                           for s, w in zip(drawn, widths, strict=True)],
                          widths, 1, math.inf)  # one row: a label that would overlap is left out
    for other, name, place in zip(drawn, names, places, strict=True):
        assert other.rss is not None
        axes.scatter([other.t], [other.rss / scale], s=45, facecolor="white",
                     edgecolor="#444", lw=2, zorder=5)
        if place is not None:
            axes.annotate(name, (other.t, other.rss / scale), textcoords="offset points",
                          xytext=(0, -14), ha="center", fontproperties=prop, color="#444",
                          parse_math=False)


def _width(line: str, renderer: RendererBase, prop: FontProperties) -> float:
    """``line``'s width in pixels, as the Agg renderer draws it in ``prop``, and a gap."""
    width, _, _ = renderer.get_text_width_height_descent(line, prop, ismath=False)
    return float(width) + 4


def _fit(line: str, room: float, renderer: RendererBase, prop: FontProperties) -> str:
    """``line``, or the longest start of it that fits in ``room`` pixels with an
    ellipsis."""
    if _width(line, renderer, prop) <= room:
        return line
    low, high = 0, len(line)  # fits, does not fit
    while high - low > 1:
        middle = (low + high) // 2
        low, high = ((middle, high) if _width(line[:middle] + "\u2026", renderer, prop)
                     <= room else (low, middle))
    return line[:low] + "\u2026"


def _pixels(t: float, low: float, high: float) -> float:
    """Where ``t`` falls across the plot, in pixels from its left edge."""
    return (t - low) / (high - low) * PLOT_PIXELS


def _cut(line: str, most: int) -> str:
    return line if len(line) <= most else line[: most - 1] + "\u2026"
