"""The throwaway host of ``watchdog-core demo``.

python -m watchdog_core.cli._demo_host DIR LIMIT
"""

from __future__ import annotations

import os
import signal
import sys
import time

from watchdog_core import PressureLevel, start_watchdog
from watchdog_core._config import parse_size

CHUNK = 8 * 1024 * 1024


def main() -> None:
    directory, limit = sys.argv[1], parse_size(sys.argv[2])
    wd = start_watchdog(session_id=f"demo-{os.getpid()}", diagnostics_dir=directory,
                        memory_limit=limit, interval=0.05)
    history: list[bytearray] = []
    size = 0
    wd.mark("demo:allocating")
    while size < 0.95 * limit:
        history.append(bytearray(b"x") * CHUNK)  # filled, so the pages are really resident
        size += CHUNK
        wd.record(historyEntries=len(history), estimatedHistoryBytes=size)
        time.sleep(0.02)
        if wd.level >= PressureLevel.CRITICAL:
            break
    print(f"reached {wd.level.label} with {size // 1048576} MiB of history", flush=True)
    deadline = time.monotonic() + 10
    ours = f"memory-{wd.session_id}-"  # the directory may hold others' dumps
    while time.monotonic() < deadline and len(
        [n for n in os.listdir(directory) if n.startswith(ours) and n.endswith(".json")]
    ) < 2:
        time.sleep(0.05)
    wd.mark("demo:about-to-be-killed")
    print("killing myself with SIGKILL: the watchdog writes the postmortem", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
