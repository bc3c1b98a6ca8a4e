"""``watchdog-core ls --watch``: the live view of a machine's sessions.

The segments are read again every few seconds with ``ls``'s own reader
(``ls.sessions()``) and drawn as one table. On a terminal the table is redrawn in place
(ANSI escapes: home, erase line, erase below; the cursor hidden while it runs, shown
again at the end) and cut to the terminal's width and height, so a line never wraps
and the redraw never scrolls. Anywhere else (a pipe, a file) each refresh is a table of
its own after a blank line, whole, with no escapes. Ctrl-C ends it with exit 0: that is
how a live view is left.

A session whose segment went away since the last refresh (its host ended, or died and
its watchdog wrote the postmortem) stays listed, ALIVE ``gone``, with what it last said.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import signal
import time
import unicodedata
from typing import TextIO

from .._statusline import FLAT, duration, size
from . import UsageError, printable
from .ls import COLUMNS, Column, session_lines, sessions

# How long a session that went away stays listed as gone: this many seconds, and on
# this many refreshes at least (with --watch 10, 5 s would be one look).
GONE_SECONDS = 5.0
GONE_REFRESHES = 3

SHORTEST, LONGEST = 0.1, 3600.0  # seconds between refreshes
LABEL_WIDTH = 20  # characters of the last mark's label that LAST ACTIVITY shows

# The escapes of the redraw, the only ones written, and only to a terminal.
HOME, CLEAR, ERASE_LINE, ERASE_BELOW = "\x1b[H", "\x1b[2J", "\x1b[2K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def refresh_seconds(text: str) -> float:
    """``--watch SECONDS`` as a number; UsageError unless it is from SHORTEST to LONGEST."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not SHORTEST <= seconds <= LONGEST:  # NaN fails this too
        raise UsageError(f"--watch takes the seconds between refreshes, from {SHORTEST:g} "
                         f"to {LONGEST:g}; got {text!r}")
    return seconds


def _growth(r: dict[str, object]) -> str:
    growth = r.get("growth")
    if not isinstance(growth, float) or not math.isfinite(growth):
        return "-"
    if abs(growth) * 60 < FLAT:  # what the status line calls not worth a mention
        return "flat"
    return f"{'+' if growth > 0 else '-'}{size(abs(growth))}/s"


def _activity(r: dict[str, object]) -> str:
    """The last mark's label (cut) and how long ago the newest record reached the ring."""
    label = printable(r["lastLabel"]) if r.get("lastLabel") else ""
    if len(label) > LABEL_WIDTH:
        label = label[: LABEL_WIDTH - 3] + "..."
    age = r.get("lastRecordAge")
    ago = f"{duration(age)} ago" if isinstance(age, (int, float)) else ""
    return ", ".join(part for part in (label, ago) if part) or "-"


WATCH_TABLE = (
    *(COLUMNS[name] for name in ("session", "pid", "alive", "level", "ratio", "rss",
                                 "limit")),
    Column("GROWTH", ">11", _growth),
    Column("LAST ACTIVITY", f"<{LABEL_WIDTH + 12}", _activity, gap="  "),
    COLUMNS["owner"],
)


class LiveView:
    """The sessions of one refresh and those that went away in the last few."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, object]] = {}  # segment -> its row, last refresh
        # segment -> (its last row, marked gone; the refreshes and the time it is kept)
        self.gone: dict[str, tuple[dict[str, object], int, float]] = {}

    def refresh(self, rows: list[dict[str, object]], now: float) -> list[dict[str, object]]:
        """``rows`` of this refresh with the gone ones among them, by segment name."""
        current = {str(r["segment"]): r for r in rows if "sessionId" in r}
        for name, row in self.seen.items():
            if name not in current:
                self.gone[name] = ({**row, "gone": True}, GONE_REFRESHES, now + GONE_SECONDS)
        self.seen = current
        shown = list(rows)
        for name, (row, refreshes, until) in list(self.gone.items()):
            if name in current or (refreshes <= 0 and now >= until):
                del self.gone[name]  # back (a segment of the same name), or kept enough
                continue
            shown.append(row)
            self.gone[name] = (row, refreshes - 1, until)
        return sorted(shown, key=lambda r: str(r["segment"]))


def watch(seconds: float, out: TextIO) -> int:
    """Draw the table every ``seconds`` until Ctrl-C (or SIGTERM); 0 then."""
    tty = out.isatty()
    view = LiveView()
    beat = time.monotonic()
    size_before: tuple[int, ...] | None = None
    # SIGTERM (`kill`) ends the view as Ctrl-C does, so the cursor is shown again.
    # Only the main thread may set a handler: elsewhere (main() called from a thread)
    # SIGTERM keeps its own.
    try:
        before = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        before = None
    try:
        if tty:
            out.write(HIDE_CURSOR)
        for refresh in itertools.count():
            rows = view.refresh(sessions(), time.monotonic())
            title = f"every {seconds:g} s, {time.strftime('%H:%M:%S')}"
            if tty:
                screen = shutil.get_terminal_size()
                lines = fit([f"{title}  (Ctrl-C to stop)",
                             *session_lines(rows, WATCH_TABLE)], screen)
                # Home, each line erased as it is written, and the rest erased below: no
                # flicker. A changed size may have wrapped the last frame: all of it goes.
                top = HOME + (CLEAR if tuple(screen) != size_before else "")
                size_before = tuple(screen)
                out.write(top + "".join(f"{ERASE_LINE}{line}\n" for line in lines)
                          + ERASE_BELOW)
            else:
                lines = [title, *session_lines(rows, WATCH_TABLE)]
                out.write(("\n" if refresh else "") + "\n".join(lines) + "\n")
            out.flush()
            # On a fixed beat, so the time a refresh takes does not add up; after a stall
            # (a suspended terminal) one refresh at once, not one per missed beat.
            beat = max(beat + seconds, time.monotonic())
            time.sleep(max(0.0, beat - time.monotonic()))
    except KeyboardInterrupt:
        return 0
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)
        if tty:
            out.write(SHOW_CURSOR)
            out.flush()
    return 0  # not reached: the loop ends only by an interrupt


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def fit(lines: list[str], screen: os.terminal_size) -> list[str]:
    """``lines`` cut to the terminal: each to its width (in cells: a wide character
    takes two), and as many as leave the last row free, the last of them saying how
    many were left out. A line that wrapped or a redraw that scrolled would leave the
    previous frame's remains on the screen."""
    rows = max(screen.lines - 1, 2)
    if len(lines) > rows:
        lines = [*lines[: rows - 1], f"({len(lines) - rows + 1} more lines: a taller "
                 "terminal shows them)"]
    return [_cut(line, screen.columns) for line in lines]


def _cut(line: str, columns: int) -> str:
    if line.isascii():
        return line[:columns]
    used = 0
    for i, char in enumerate(line):
        cells = (0 if unicodedata.combining(char)
                 else 2 if unicodedata.east_asian_width(char) in "WF" else 1)
        if used + cells > columns:
            return line[:i]
        used += cells
    return line
