"""Lock wait under 64-way contention for the diagnostics directory.

    python benchmarks/lock_contention.py [--writers 64] [--rounds 3]

64 processes, released at the same instant (EOF on one pipe they all read), each
publish a dump into one directory and then run retention under the directory's
filelock, exactly as a watchdog does after a dump. Each reports how long it
waited for the lock. filelock's default poll interval (50 ms) is compared side
by side with ours (5 ms, watchdog_core._store.LOCK_POLL); p50/p99 are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import os, sys, time
from watchdog_core._store import DiagnosticsDir
fd, directory, poll, keep = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
store = DiagnosticsDir(directory, max_files=keep)
store.open()
os.read(fd, 1)  # every writer wakes on the same EOF
name = store.publish("s", time.time_ns(), b"{}" * 2000)
store.prune(keep=name, poll_interval=poll)
print(store.last_lock_wait or 0.0)
"""


def one_round(writers: int, poll: float, directory: Path, keep: int) -> list[float]:
    read_end, write_end = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(read_end), str(directory),
                               str(poll), str(keep)], pass_fds=(read_end,),
                              stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(writers)]
    os.close(read_end)
    time.sleep(2.0)  # let every interpreter reach its read(); a start-up race is not measured
    os.close(write_end)
    waits = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        waits.append(float(out.strip()))
    return waits


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # keep=100: the everyday case, under the limits (retention looks without the lock);
    # keep=8: every writer must prune, so all 64 contend for the lock.
    cases = [(0.05, 8), (0.005, 8), (0.005, 100)]
    results: dict[tuple[float, int], list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for poll, keep in cases:  # interleaved: every case sees the same machine
                directory = Path(tmp) / f"r{r}-{poll}-{keep}"
                results[poll, keep].extend(one_round(args.writers, poll, directory, keep))
                dumps = len(list(directory.glob("*.json")))
                assert dumps == min(args.writers, max(keep, dumps)), dumps
    for (poll, keep), waits in results.items():
        label = "filelock default poll 50 ms" if poll == 0.05 else f"poll {poll * 1000:.0f} ms"
        print(f"{label}, keep {keep}: lock wait p50 "
              f"{pct(waits, 0.5) * 1000:.1f} ms, p99 {pct(waits, 0.99) * 1000:.1f} ms, max "
              f"{max(waits) * 1000:.1f} ms over {len(waits)} writers; mean "
              f"{statistics.mean(waits) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
