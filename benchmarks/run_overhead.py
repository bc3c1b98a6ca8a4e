"""What `watchdog-core run` costs the program it watches, measured side by side.

    .venv/bin/python benchmarks/run_overhead.py

- start: wall time from invoking `run` to the child's first instruction (it prints
  the clock), against invoking the child directly;
- a CPU-bound child's wall time under `run` against bare, interleaved rounds;
- `run`'s own RSS and USS, and its CPU share, while it watches an idle child.

No budget is set for these; the figures go in docs/performance.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, "-m", "watchdog_core", "run"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
WORK = "s = 0\nfor i in range(30_000_000):\n    s += i\n"


def started_after(argv: list[str]) -> float:
    """Seconds from launching ``argv`` (ending in a child that prints time.time()) to
    that print."""
    before = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV, check=True).stdout
    return float(out.split()[-1]) - before


def wall(argv: list[str]) -> float:
    before = time.perf_counter()
    subprocess.run(argv, capture_output=True, env=ENV, check=True)
    return time.perf_counter() - before


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        opts = ["--dir", folder, "--"]
        clock = [sys.executable, "-c", "import time; print(time.time())"]
        bare = [started_after(clock) for _ in range(7)]
        under = [started_after([*RUN, *opts, *clock]) for _ in range(7)]
        print(f"child started: {statistics.median(under) * 1000:.0f} ms under run, "
              f"{statistics.median(bare) * 1000:.0f} ms bare (median of 7)")
        child = [sys.executable, "-c", WORK]
        rounds = [(wall(child), wall([*RUN, *opts, *child])) for _ in range(5)]
        b = statistics.median(r[0] for r in rounds)
        u = statistics.median(r[1] for r in rounds)
        print(f"CPU-bound child, wall time under run / bare: "
              f"{statistics.median(r[1] / r[0] for r in rounds):.3f}x ({u:.2f} s vs {b:.2f} s, "
              "median of 5 interleaved rounds; run's start and end included)")
        with subprocess.Popen([*RUN, *opts, "sleep", "12"], env=ENV) as proc:
            time.sleep(2)
            runner = psutil.Process(proc.pid)
            cpu0 = sum(runner.cpu_times()[:2])
            time.sleep(10)
            cpu = (sum(runner.cpu_times()[:2]) - cpu0) / 10
            mem = runner.memory_full_info()
            print(f"run watching an idle child: RSS {mem.rss / 2**20:.1f} MiB, USS "
                  f"{mem.uss / 2**20:.1f} MiB, CPU {cpu * 100:.2f} % of a core")
            proc.wait()


if __name__ == "__main__":
    main()
