"""A dump's timeline drawn in a terminal (``show``): RSS against the limit, a block chart
of a few rows, the marks under it.

Block characters where the output's encoding has them; plain ASCII where it has not
(``LANG=C``, ``PYTHONIOENCODING=latin-1``), never a ``\\uNNNN`` escape inside a chart.
"""

from __future__ import annotations

import math

from . import printable
from ._timeline import Timeline, byte_label, seconds, size

WIDTH = 60  # columns of the chart: a column is a 60th of the minute
MAX_MARKS_LISTED = 10
MAX_LABEL = 40  # characters of a mark's label in the list under the chart


class Glyphs:
    """The characters a chart is drawn with."""

    __slots__ = ("fill", "limit", "tick", "axis", "corner", "rule", "mark")

    def __init__(self, fill: str, limit: str, tick: str, axis: str, corner: str, rule: str,
                 mark: str) -> None:
        # fill: 9 characters, a cell filled 0/8 .. 8/8 from the bottom
        self.fill, self.limit, self.tick, self.axis = fill, limit, tick, axis
        self.corner, self.rule, self.mark = corner, rule, mark

    def chars(self) -> str:
        return (self.fill + self.limit + self.tick + self.axis + self.corner + self.rule
                + self.mark)


BLOCKS = Glyphs(" \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588", "\u2504", "\u2524",
                "\u2502", "\u2514", "\u2500", "\u25b2")
ASCII = Glyphs(" ...::::#", "-", "+", "|", "+", "-", "^")


def glyphs_for(encoding: str | None) -> Glyphs:
    """BLOCKS when ``encoding`` can write them (None: a text buffer, it can), else ASCII."""
    if encoding is None:
        return BLOCKS
    try:
        BLOCKS.chars().encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return BLOCKS


def draw(timeline: Timeline, glyphs: Glyphs = BLOCKS) -> list[str]:
    """The lines ``show`` prints under its fields, each ending in a newline; the marks'
    labels made printable, the rest is figures."""
    points = timeline.points
    limit = timeline.limit
    of_limit = f" of the {size(limit)} limit" if limit else " (no limit known)"
    if not points:
        return ["  timeline    no samples: the watchdog had not sampled the host yet\n"]
    if len(points) == 1 or points[0][0] == points[-1][0]:
        t, rss = points[-1]
        share = f" ({rss / limit:.0%}{of_limit})" if limit else of_limit
        return [f"  timeline    one sample: rss {size(rss)} at {seconds(t)}{share}\n",
                *_mark_lines(timeline)]
    low, high = points[0][0], max(0.0, points[-1][0])
    lines = [f"  timeline    rss against{of_limit.removeprefix(' of')}, the last "
             f"{high - low:.1f} s ({len(points)} samples)\n"]
    top, step, unit = timeline.y_axis(counts=(4, 5))
    steps = round(top / step)  # 3 to 5: rows of half a step, or a third for 3
    per = 2 if steps >= 4 else 3
    height = steps * per
    eighths = [_eighths(v, top, height) for v in _columns(points, low, high)]
    limit_row = -1
    if limit is not None and timeline.limit_in_view():
        limit_row = height - min(height, max(1, math.ceil(limit / top * height)))
    for row in range(height):
        floor = (height - 1 - row) * 8
        cells = "".join(glyphs.fill[min(8, max(0, e - floor))] for e in eighths)
        if row == limit_row:
            cells = "".join(glyphs.limit if c == " " else c for c in cells) + " limit"
        label = (byte_label(step * ((height - row) // per), unit) if (height - row) % per == 0
                 else "")
        lines.append(f"  {label:>10} {glyphs.tick if label else glyphs.axis}{cells}".rstrip()
                     + "\n")
    lines.append(f"  {'0':>10} {glyphs.corner}{glyphs.rule * WIDTH}\n")
    digits = 1 if high - low >= 2 else 2
    left, middle, right = (seconds(t, digits) for t in (low, (low + high) / 2, high))
    axis = (left.ljust(WIDTH // 2 - len(middle) // 2) + middle).ljust(WIDTH - len(right))
    lines.append(f"  {'':>10}  {axis}{right}\n")
    if limit is not None and limit_row < 0:
        lines.append(f"  {'':>10}  the limit, {size(limit)}, is far above the chart\n")
    if timeline.marks:
        ticks = [" "] * WIDTH
        for mark in timeline.marks:
            ticks[_column(mark.t, low, high)] = glyphs.mark
        lines.append(f"  {'':>10}  {''.join(ticks).rstrip()}\n")
    return lines + _mark_lines(timeline)


def _mark_lines(timeline: Timeline) -> list[str]:
    marks = timeline.marks
    if not marks:
        return []
    shown = marks[-MAX_MARKS_LISTED:]
    earlier = f" (and {len(marks) - len(shown)} earlier)" if len(marks) > len(shown) else ""
    return [f"  marks       {seconds(m.t)} {_label(m.label)}\n" for m in shown[:1]] + [
        f"              {seconds(m.t)} {_label(m.label)}\n" for m in shown[1:]] + (
        [f"              {earlier.strip()}\n"] if earlier else [])


def _label(text: str) -> str:
    text = printable(text)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 3] + "..."


def _column(t: float, low: float, high: float) -> int:
    return min(WIDTH - 1, max(0, int((t - low) / (high - low) * WIDTH)))


def _columns(points: list[tuple[float, int]], low: float, high: float) -> list[int]:
    """Each column's RSS: the highest sample in its slice of time, else the one before
    (a sample holds until the next)."""
    peaks: list[int | None] = [None] * WIDTH
    for t, rss in points:
        c = _column(t, low, high)
        peak = peaks[c]
        peaks[c] = rss if peak is None else max(peak, rss)
    out, last = [], 0
    for peak in peaks:
        last = last if peak is None else peak
        out.append(last)
    return out


def _eighths(value: int, top: float, height: int) -> int:
    """``value`` as eighths of a row: at least one for any RSS at all."""
    e = round(value / top * height * 8) if top > 0 else 0
    return min(height * 8, max(1 if value > 0 else 0, e))
