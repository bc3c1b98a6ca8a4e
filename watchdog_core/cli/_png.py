"""``show FILE --png OUT``: a dump's timeline as a PNG, drawn by matplotlib.

matplotlib is an extra (``pip install 'watchdog-core[plot]'``), imported only here. The
figure is drawn by the Agg canvas, never through pyplot, so no display is ever looked
for. Text from the dump is made printable and never read as mathtext (a ``$`` in a
label stays a dollar sign).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import TYPE_CHECKING

from . import printable
from ._timeline import GIB, MIB, Timeline, byte_label, place_labels, size, verdict

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

    from .._diagnostics import Diagnostics

SIZE_INCHES, DPI = (10.0, 5.6), 100  # 1000 x 560 pixels
PLOT = (0.08, 0.14, 0.72, 0.66)  # the axes: left, bottom, width, height, of the figure
PLOT_PIXELS = SIZE_INCHES[0] * DPI * PLOT[2]
MARK_ROWS = 3
LABEL_CHARS = 24  # of a mark's label on the plot
CHAR_PIXELS = 5.2  # a character of the 8-point labels, at DPI
PAD = 0.025  # of the time axis, after the dump; of the y axis, above its top
# As on the page: each band up to the next threshold (critical: to the limit), then over.
BANDS = (("soft", "#fff1b8"), ("hard", "#ffd3a1"), ("critical", "#ffb0ab"),
         ("over", "#ffe1de"))
RSS, LIMIT, MARK, DUMP = "#1f5fbf", "#b00020", "#6a4c93", "#b00020"


def png(dump: Diagnostics, timeline: Timeline) -> bytes:
    """The PNG file's bytes. ImportError when matplotlib (or what it needs) is missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    low, high = timeline.x_range()
    high += (high - low) * PAD  # room for the dump's point at the right edge
    top, step, unit = timeline.y_axis()
    scale = GIB if unit == "GiB" else MIB
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes(PLOT)
    legend: list[Artist] = [Line2D([], [], color=RSS, lw=2, label="RSS")]
    limit = timeline.limit if timeline.limit_in_view() else None
    if limit is not None:
        edges = [*timeline.thresholds, 1.0, math.inf]
        for (name, color), low_ratio, high_ratio in zip(BANDS, edges, edges[1:], strict=False):
            axes.axhspan(low_ratio * limit / scale, min(high_ratio * limit, top * 2) / scale,
                         color=color, zorder=0, lw=0)
            if name != "over":
                legend.append(Patch(color=color, label=f"{name} {low_ratio:.0%}"))
        axes.axhline(limit / scale, color=LIMIT, ls="--", lw=1.5, zorder=2)
        legend.append(Line2D([], [], color=LIMIT, ls="--",
                             label=f"limit {byte_label(limit, unit)}"))
    points = timeline.points
    if points:
        ts, values = [t for t, _ in points], [rss / scale for _, rss in points]
        axes.fill_between(ts, values, color=RSS, alpha=0.12, lw=0, zorder=3)
        axes.plot(ts, values, color=RSS, lw=2, zorder=4,
                  marker="o" if len(points) <= 30 else None, ms=4)
    else:
        axes.text(0.5, 0.5, "no samples: the watchdog had not sampled the host yet",
                  transform=axes.transAxes, ha="center", color="#777", parse_math=False)
    _marks(axes, timeline, low, high)
    if timeline.marks:
        legend.append(Line2D([], [], color=MARK, ls=":", label="mark"))
    drawn = sorted(timeline.drawn_siblings(), key=lambda s: s.t)
    names = [printable(s.trigger) for s in drawn]
    widths = [len(n) * CHAR_PIXELS for n in names]
    places = place_labels([_pixels(s.t, low, high) - w / 2 for s, w in zip(drawn, widths,
                                                                           strict=True)],
                          widths, 1, math.inf)  # one row: a label that would overlap is left out
    for other, name, place in zip(drawn, names, places, strict=True):
        assert other.rss is not None
        axes.scatter([other.t], [other.rss / scale], s=45, facecolor="white",
                     edgecolor="#444", lw=2, zorder=5)
        if place is not None:
            axes.annotate(name, (other.t, other.rss / scale), textcoords="offset points",
                          xytext=(0, -14), ha="center", fontsize=8, color="#444",
                          parse_math=False)
    if timeline.drawn_siblings():
        legend.append(Line2D([], [], ls="", marker="o", mfc="white", mec="#444",
                             label="other dumps"))
    if timeline.rss is not None:
        axes.scatter([0.0], [timeline.rss / scale], s=60, color=DUMP, zorder=6,
                     edgecolor="white", clip_on=False)
        legend.append(Line2D([], [], ls="", marker="o", color=DUMP, label="this dump"))
    axes.set_xlim(low, high)
    axes.set_ylim(0, top * (1 + PAD) / scale)
    ticks = [k * step for k in range(round(top / step) + 1)]
    axes.set_yticks([v / scale for v in ticks], [byte_label(v, unit) for v in ticks])
    axes.set_xlabel("seconds before the dump")
    axes.grid(alpha=0.25)
    axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                fontsize=9)
    headline = printable(f"{dump.trigger} dump of session {dump.session_id}")
    figure.text(0.08, 0.955, _cut(headline, 110), fontsize=13, weight="bold",
                parse_math=False)
    figure.text(0.08, 0.915, _cut(printable(verdict(dump)), 120), fontsize=11,
                parse_math=False)
    m = dump.memory
    figure.text(0.08, 0.025, _cut(
        f"rss {size(m.rss)} of {size(m.heap_limit)} ({printable(m.limit_source)}), ratio "
        f"{m.ratio:.3f}; risks: {', '.join(printable(r) for r in dump.risks) or 'none'}; "
        f"bands: thresholds of {timeline.thresholds_from}", 150), fontsize=8.5,
        color="#444", parse_math=False)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a glyph the font lacks: drawn as a box, said not
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _marks(axes: Axes, timeline: Timeline, low: float, high: float) -> None:
    """A dotted line per mark; its label above the plot where a row has room."""
    from matplotlib.transforms import blended_transform_factory

    marks = timeline.marks
    shorts = [_cut(printable(m.label), LABEL_CHARS) for m in marks]
    places = place_labels([_pixels(m.t, low, high) for m in marks],
                          [len(s) * CHAR_PIXELS + 4 for s in shorts], MARK_ROWS,
                          PLOT_PIXELS + 150)
    transform = blended_transform_factory(axes.transData, axes.transAxes)
    for mark, short, place in zip(marks, shorts, places, strict=True):
        axes.axvline(mark.t, color=MARK, ls=":", lw=1, alpha=0.7, zorder=2)
        if place is None:
            continue
        row, start = place
        t = low + start / PLOT_PIXELS * (high - low)
        axes.text(t, 1.02 + 0.05 * row, short, transform=transform, fontsize=8,
                  family="DejaVu Sans Mono", color=MARK, parse_math=False, clip_on=False)


def _pixels(t: float, low: float, high: float) -> float:
    """Where ``t`` falls across the plot, in pixels from its left edge."""
    return (t - low) / (high - low) * PLOT_PIXELS


def _cut(line: str, most: int) -> str:
    return line if len(line) <= most else line[: most - 1] + "\u2026"
