"""A dump's timeline drawn in a terminal (``show``): RSS against the limit, a block chart
of a few rows, the marks under it.

Block characters where the output's encoding has them; plain ASCII where it has not
(``LANG=C``, ``PYTHONIOENCODING=latin-1``), never a ``\\uNNNN`` escape inside a chart.
"""

from __future__ import annotations

import math
import shutil
import sys

from . import printable
from ._timeline import Timeline, byte_label, seconds, size

WIDTH = 60  # columns of the chart: a column is a 60th of the minute
MIN_WIDTH = 20  # the fewest columns worth a chart; a terminal narrower gets one line
# Columns of a chart's line beside its plot: "  " + a label of 10 + " " + the axis, and
# " limit" after it; and one to spare, so that a terminal never wraps at its last column.
MARGINS = 2 + 10 + 1 + 1 + len(" limit") + 1
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


def terminal_columns() -> int | None:
    """The columns of the terminal stdout is, or None when it is none (piped output
    keeps WIDTH)."""
    try:
        if not sys.stdout.isatty():
            return None
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return None
    return shutil.get_terminal_size().columns


def draw(timeline: Timeline, glyphs: Glyphs = BLOCKS, columns: int | None = None) -> list[str]:
    """The lines ``show`` prints under its fields, each ending in a newline; the marks'
    labels made printable, the rest is figures. The chart fits in ``columns`` (default:
    the terminal's, when stdout is one), WIDTH columns of plot at most, MIN_WIDTH at
    least: narrower than that, one line says the samples instead."""
    columns = terminal_columns() if columns is None else columns
    width = WIDTH if columns is None else min(WIDTH, columns - MARGINS)
    points = timeline.points
    limit = timeline.limit
    of_limit = f" of the {size(limit)} limit" if limit else " (no limit known)"
    n = timeline.left_out
    left_out = ([f"              {n} sample{'s' if n != 1 else ''} of absurd times left out\n"]
                if n else [])
    if not points:
        return ["  timeline    no samples: the watchdog had not sampled the host yet\n",
                *left_out]
    if len(points) == 1 or width < MIN_WIDTH:
        t, rss = max(points, key=lambda p: p[1])
        share = f" ({rss / limit:.0%}{of_limit})" if limit else of_limit
        what = (f"one sample: rss {size(rss)} at {seconds(t)}" if len(points) == 1 else
                f"{timeline.samples()}, rss up to {size(rss)} at {seconds(t)}")
        return [f"  timeline    {what}{share}\n", *left_out, *_mark_lines(timeline, columns)]
    low, high = timeline.x_range()
    span = (f"the last {high - low:.1f} s" if high <= 0
            else f"{seconds(low)} to {high:+.1f} s from the dump")
    lines = [f"  timeline    rss against{of_limit.removeprefix(' of')}, {span} "
             f"({len(points)} samples)\n", *left_out]
    top, step, unit = timeline.y_axis(counts=(4, 5))
    steps = round(top / step)  # 3 to 5: rows of half a step, or a third for 3
    per = 2 if steps >= 4 else 3
    height = steps * per
    eighths = [_eighths(v, top, height) for v in _columns(points, low, high, width)]
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
    lines.append(f"  {'0':>10} {glyphs.corner}{glyphs.rule * width}\n")
    lines.append(f"  {'':>10}  {_time_axis(low, high, width)}\n")
    if limit is not None and limit_row < 0:
        lines.append(f"  {'':>10}  the limit, {size(limit)}, is far above the chart\n")
    if timeline.marks:
        ticks = [" "] * width
        for mark in timeline.marks:
            ticks[_column(mark.t, low, high, width)] = glyphs.mark
        lines.append(f"  {'':>10}  {''.join(ticks).rstrip()}\n")
    return lines + _mark_lines(timeline, columns)


def _time_axis(low: float, high: float, width: int) -> str:
    """The first, the middle and the last time under ``width`` columns of plot; the
    middle left out when it would touch another."""
    digits = 1 if high - low >= 2 else 2
    left, middle, right = (seconds(t, digits) for t in (low, (low + high) / 2, high))
    at = width // 2 - len(middle) // 2
    if at < len(left) + 1 or at + len(middle) + 1 > width - len(right):
        middle, at = "", len(left)
    return (left.ljust(at) + middle).ljust(width - len(right)) + right


def _mark_lines(timeline: Timeline, columns: int | None) -> list[str]:
    marks = timeline.marks
    if not marks:
        return []
    shown = marks[-MAX_MARKS_LISTED:]
    earlier = f" (and {len(marks) - len(shown)} earlier)" if len(marks) > len(shown) else ""
    lines = []
    for n, mark in enumerate(shown):
        head = f"{'  marks' if n == 0 else '':<14}{seconds(mark.t)} "
        most = MAX_LABEL if columns is None else max(10, min(MAX_LABEL,
                                                             columns - 1 - len(head)))
        lines.append(f"{head}{_label(mark.label, most)}\n")
    return lines + ([f"              {earlier.strip()}\n"] if earlier else [])


def _label(text: str, most: int) -> str:
    text = printable(text)
    return text if len(text) <= most else text[: most - 3] + "..."


def _column(t: float, low: float, high: float, width: int) -> int:
    return min(width - 1, max(0, int((t - low) / (high - low) * width)))


def _columns(points: list[tuple[float, int]], low: float, high: float,
             width: int) -> list[int]:
    """Each column's RSS: the highest sample in its slice of time, else the one before
    (a sample holds until the next)."""
    peaks: list[int | None] = [None] * width
    for t, rss in points:
        c = _column(t, low, high, width)
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
