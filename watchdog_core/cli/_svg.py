"""The timeline of ``show --html``'s page as an inline SVG: RSS against the limit, the
soft, hard and critical bands, the marks as labelled ticks (at most MAX_DRAWN_MARKS),
this dump and the other dumps of its session as points. Its colours are in the page's
style (``_page``). Every string of the dump goes through ``text()``.
"""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING

from . import printable
from ._timeline import Timeline, byte_label, dots, nice_seconds, place_labels, seconds, size

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._diagnostics import Diagnostics

# The SVG's own units; the page scales it to its column.
WIDTH, HEIGHT = 800, 430
LEFT, RIGHT, TOP, BOTTOM = 74, 690, 84, 384  # the plot area
MARK_ROWS = 3  # rows of mark labels above the plot
ROW = 15  # their spacing
LINE = 13  # the spacing of the lines of a label in the right margin
CHAR = 6.7  # the width of a character of the marks' 11 px monospace font
SANS = 6.5  # about that of the other dumps' 11 px labels
BOLD = 7.5  # and of the 12 px bold of "this dump", a little more than it needs
MAX_TICK_LABEL = 30  # characters of a label drawn on the plot; the table has them all
PAD = 0.025  # of the time axis, after the dump; of the y axis, above its top

# Each band from its threshold to the next one's (critical: to the limit); above the
# limit, "over". Their colours are in the page's style.
BANDS = ("soft", "hard", "critical", "over")

# XML has no U+FFFE or U+FFFF, even as a reference; printable() leaves them be.
_NOT_XML = re.compile("[\ufffe\uffff]")


def text(value: object) -> str:
    """A string from the dump as it may go into the page (element text or a quoted
    attribute): printable() (no control character reaches the page, a newline in a
    label shows as ``\\x0a``) and escaped (``<``, ``&``, both quotes)."""
    shown = _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", printable(value))
    return html.escape(shown, quote=True)


def svg(dump: Diagnostics, timeline: Timeline) -> str:
    """The timeline as an ``<svg>`` element, well-formed XML on its own."""
    low, high = timeline.x_range()  # never empty: MIN_SPAN at least
    high += (high - low) * PAD  # room for the dump's point at the right edge
    top, step, unit = timeline.y_axis()

    def x(t: float) -> float:
        return LEFT + (t - low) / (high - low) * (RIGHT - LEFT)

    def y(value: float) -> float:  # a little room above the top: a limit there stays seen
        return BOTTOM - min(value, top) / (top * (1 + PAD)) * (BOTTOM - TOP)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'role="img" aria-label="RSS against the limit, {high - low:.0f} s">\n',
           f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" '
           f'height="{BOTTOM - TOP}"/>\n']
    side: list[tuple[float, str, list[str]]] = []  # the right margin's: (y, class, lines)
    limit = timeline.limit if timeline.limit_in_view() else None
    if limit is not None:
        for name, low_ratio, high_ratio in timeline.bands():
            # Inside the plot, whatever the thresholds: bands() keeps them in [0, 1].
            y_low = y(low_ratio * limit)
            y_high = y(high_ratio * limit) if high_ratio * limit < top else TOP
            if y_low - y_high < 0.5:
                continue
            what = "over the limit" if name == "over" else f"{low_ratio:.0%} of the limit"
            out.append(f'<rect class="band {name}" x="{LEFT}" y="{y_high:.1f}" '
                       f'width="{RIGHT - LEFT}" height="{y_low - y_high:.1f}">'
                       f"<title>{name}: {what} and above</title></rect>\n")
            if y_low - y_high >= 12 and name != "over":
                side.append(((y_low + y_high) / 2 + 4, f"band-label {name}",
                             [f"{name} {low_ratio:.0%}"]))
    for k in range(1, round(top / step) + 1):  # the grid and the y axis's labels
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y(k * step):.1f}" x2="{RIGHT}" '
                   f'y2="{y(k * step):.1f}"/>\n')
    for k in range(round(top / step) + 1):
        out.append(f'<text class="axis" x="{LEFT - 8}" y="{y(k * step) + 4:.1f}" '
                   f'text-anchor="end">{byte_label(k * step, unit)}</text>\n')
    every = nice_seconds(high - low)
    tick = math.ceil(low / every - 1e-9) * every
    while tick <= high + 1e-9:
        out.append(f'<line class="grid" x1="{x(tick):.1f}" y1="{TOP}" x2="{x(tick):.1f}" '
                   f'y2="{BOTTOM}"/>\n<text class="axis" x="{x(tick):.1f}" y="{BOTTOM + 18}" '
                   f'text-anchor="middle">{seconds(tick)}</text>\n')
        tick += every
    out.append(f'<text class="axis title" x="{(LEFT + RIGHT) / 2}" y="{BOTTOM + 38}" '
               f'text-anchor="middle">{timeline.x_title()}</text>\n')
    if limit is not None:
        out.append(f'<line class="limit" x1="{LEFT}" y1="{y(limit):.1f}" x2="{RIGHT}" '
                   f'y2="{y(limit):.1f}"><title>the limit: {size(limit)}</title></line>\n')
        # "limit" over its line, the figure under it.
        side.append((y(limit) - 3, "limit-label", ["limit", size(limit)]))
    elif timeline.limit is not None:
        side.append((TOP + 4, "limit-label", ["limit above:", size(timeline.limit)]))
    out.extend(_marks(timeline, x))
    points = timeline.points
    if points:
        coords = " ".join(f"{x(t):.1f},{y(rss):.1f}" for t, rss in points)
        out.append(f'<polygon class="area" points="{x(points[0][0]):.1f},{BOTTOM} {coords} '
                   f'{x(points[-1][0]):.1f},{BOTTOM}"/>\n'
                   f'<polyline class="rss" points="{coords}"/>\n')
        out.extend(f'<circle class="sample" cx="{x(t):.1f}" cy="{y(rss):.1f}" r="3">'
                   f"<title>{seconds(t)}: {size(rss)}</title></circle>\n"
                   for t, rss in dots(points, x, y))
    else:
        out.append(f'<text class="empty" x="{(LEFT + RIGHT) / 2}" y="{BOTTOM - 24}" '
                   'text-anchor="middle">no samples: the watchdog had not sampled the host '
                   "yet</text>\n")
    out.extend(_siblings(timeline, x, y))
    if timeline.rss is not None:
        cx, cy = x(0.0), y(timeline.rss)
        # Its label on the left of the point, unless it would run into the y axis's
        # labels there; under it near the top, away from the marks' labels.
        label_x, anchor = (cx - 10, "end") if cx - 10 - 9 * BOLD >= LEFT else (cx + 10,
                                                                              "start")
        label_y = cy - 10 if cy - 24 >= TOP else cy + 22
        out.append(f'<g class="dump"><title>this dump: {text(dump.trigger)}, '
                   f"{size(timeline.rss)}</title>"
                   f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6"/>'
                   f'<text x="{label_x:.1f}" y="{label_y:.1f}" text-anchor="{anchor}">'
                   "this dump</text></g>\n")
    for at, cls, lines in _spread(side):
        spans = "".join(f'<tspan x="{RIGHT + 6}" dy="{0 if n == 0 else LINE}">{line}</tspan>'
                        for n, line in enumerate(lines))
        out.append(f'<text class="{cls}" x="{RIGHT + 6}" y="{at:.1f}">{spans}</text>\n')
    out.append("</svg>\n")
    return "".join(out)


def _marks(timeline: Timeline, x: Callable[[float], float]) -> list[str]:
    """A tick per mark drawn (at most MAX_DRAWN_MARKS, thinned evenly), its label in the
    first row above the plot with room for it (none when no row has: its tooltip and
    the table still name it)."""
    drawn = timeline.drawn_marks()
    shorts = [_short(printable(m.label)) for _, m in drawn]
    places = place_labels([x(m.t) - 2 for _, m in drawn],
                          [len(short) * CHAR + 4 for short in shorts], MARK_ROWS, WIDTH - 4)
    out = []
    for (n, mark), short, place in zip(drawn, shorts, places, strict=True):
        at = x(mark.t)
        title = f"<title>mark {n}, {seconds(mark.t)}: {text(mark.label)}</title>"
        if place is None:
            out.append(f'<g class="mark">{title}<line x1="{at:.1f}" y1="{TOP}" '
                       f'x2="{at:.1f}" y2="{BOTTOM}"/></g>\n')
            continue
        row, start = place
        label_y = TOP - 8 - row * ROW  # the first row nearest the plot
        out.append(f'<g class="mark">{title}<line x1="{at:.1f}" y1="{label_y + 3}" '
                   f'x2="{at:.1f}" y2="{BOTTOM}"/><text x="{start + 2:.1f}" y="{label_y}">'
                   f"{text(short)}</text></g>\n")
    return out


def _siblings(timeline: Timeline, x: Callable[[float], float],
              y: Callable[[float], float]) -> list[str]:
    """The other dumps of the session within the timeline, each a point, its trigger
    under it where there is room in the one row of them."""
    drawn = sorted(timeline.drawn_siblings(), key=lambda s: s.t)
    names = [printable(s.trigger) for s in drawn]
    places = place_labels([x(s.t) - len(n) * SANS / 2 for s, n in zip(drawn, names, strict=True)],
                          [len(n) * SANS for n in names], 1, WIDTH)  # one row: no overlap
    out = []
    for other, name, place in zip(drawn, names, places, strict=True):
        assert other.rss is not None
        label = "" if place is None else (
            f'<text x="{place[1]:.1f}" y="{y(other.rss) + 18:.1f}">{text(name)}</text>')
        out.append(f'<g class="sibling"><title>{text(other.name)}: {text(other.trigger)}, '
                   f"{text(other.level)}, {size(other.rss)}, {other.t:+.2f} s</title>"
                   f'<circle cx="{x(other.t):.1f}" cy="{y(other.rss):.1f}" r="5"/>{label}'
                   "</g>\n")
    return out


def _short(label: str) -> str:
    return label if len(label) <= MAX_TICK_LABEL else label[: MAX_TICK_LABEL - 1] + "\u2026"


def _spread(labels: list[tuple[float, str, list[str]]]) -> list[tuple[float, str, list[str]]]:
    """The right margin's labels moved apart so that none overlaps the one above."""
    placed: list[tuple[float, str, list[str]]] = []
    for wanted, cls, lines in sorted(labels):
        below = placed[-1][0] + LINE * len(placed[-1][2]) if placed else wanted
        placed.append((max(wanted, below), cls, lines))
    return placed
