"""The throwaway host of ``watchdog-core demo``.

python -m watchdog_core.cli._demo_host DIR LIMIT

It grows towards LIMIT in STEPS steps of STEP_SECONDS, slow enough to be watched,
printing its status line (``wd.status_line(always=True)``) after each, and each dump
as ``on_pressure`` names it. Once the watchdog has graded it critical and written that
dump, it SIGKILLs itself: the watchdog then writes the postmortem.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from watchdog_core import PressureLevel, start_watchdog
from watchdog_core._config import parse_size

STEPS = 32  # the limit in this many chunks: critical (80 %) in about 25
STEP_SECONDS = 0.25
DUMP_WAIT = 10.0  # seconds to wait for the critical dump before the kill

_print_lock = threading.Lock()  # on_pressure runs in a thread of its own


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main() -> None:
    directory, limit = sys.argv[1], parse_size(sys.argv[2])
    critical_told = threading.Event()

    def on_pressure(level: PressureLevel, info: dict[str, object]) -> None:
        dump = f": dump written: {info['dump']}" if info["dump"] else ""
        say(f"pressure {level.label}{dump}")
        if level >= PressureLevel.CRITICAL:
            critical_told.set()

    wd = start_watchdog(session_id=f"demo-{os.getpid()}", diagnostics_dir=directory,
                        memory_limit=limit, interval=0.05, on_pressure=on_pressure)
    chunk = max(limit // STEPS, 1 << 20)
    history: list[bytearray] = []
    wd.mark("demo:allocating")
    deadline = time.monotonic() + DUMP_WAIT
    while wd.status() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the watchdog's first sample: the first line has numbers
    say(wd.status_line(always=True))
    while len(history) * chunk < limit and wd.level < PressureLevel.CRITICAL:
        history.append(bytearray(b"x") * chunk)  # filled, so the pages are really resident
        wd.record(historyEntries=len(history), estimatedHistoryBytes=len(history) * chunk)
        time.sleep(STEP_SECONDS)
        say(wd.status_line(always=True))
    # The critical dump is on disk before on_pressure names it: wait for that, so the
    # kill never races the watchdog's writing.
    critical_told.wait(DUMP_WAIT)
    wd.mark("demo:about-to-be-killed")
    say("killing myself with SIGKILL: the watchdog writes the postmortem")
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
