"""What watching for hangs costs the host, and how soon a stuck main thread is named.

    python benchmarks/hang_watch.py [--seconds 5] [--rounds 3]

Side by side in one run (the machines are shared and noisy, so only ratios count):
hosts running the same busy loop for the same time, without a watchdog, with one and
no hang_after, and with hang_after=0.5, count their iterations. Two loop shapes: one
calling a function at every step (the heartbeat looks densely at it every beat, since it
is busy and often seen in its own frame) and a main thread that sleeps. Then the time
from the start of a `while True: pass` to its main-thread-stuck dump on disk, against
hang_after (the dump is due after hang_after plus up to one beat and one sample).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOOP = """
import sys, time
mode, seconds, directory = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if mode != "none":
    import watchdog_core
    wd = watchdog_core.start_watchdog(
        diagnostics_dir=directory, hang_after=0.5 if mode == "hang" else None)
    while wd.status() is None:
        time.sleep(0.01)
def step(b):
    return b * 2 + 1
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for b in range(1000):
        n += step(b)
print(n)
"""

STUCK = """
import sys, time, watchdog_core
wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], hang_after=float(sys.argv[2]))
while wd.status() is None:
    time.sleep(0.01)
print(time.monotonic(), flush=True)
while True:
    pass
"""


def throughput(mode: str, seconds: float, directory: str) -> int:
    out = subprocess.run([sys.executable, "-c", LOOP, mode, str(seconds), directory],
                         capture_output=True, text=True, check=True, timeout=seconds + 60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return int(out.stdout)


def stuck_latency(hang_after: float, directory: Path) -> float:
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(directory), str(hang_after)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout is not None
        began = float(proc.stdout.readline())
        deadline = began + hang_after + 30
        while time.monotonic() < deadline:
            for path in directory.glob("memory-*.json"):
                try:
                    dump = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if dump["trigger"] == "unresponsive":
                    return time.monotonic() - began
            time.sleep(0.002)
        raise SystemExit("no unresponsive dump")
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        counts: dict[str, list[int]] = {"none": [], "watched": [], "hang": []}
        for _ in range(args.rounds):
            for mode, runs in counts.items():  # interleaved: noise hits all three alike
                runs.append(throughput(mode, args.seconds, tmp))
        base = statistics.median(counts["none"])
        print(f"busy loop calling a function, {args.seconds:g} s x {args.rounds}:")
        for mode, label in (("watched", "watchdog, no hang_after"),
                            ("hang", "watchdog, hang_after=0.5")):
            print(f"  {label:<26} {statistics.median(counts[mode]) / base:.3f} x the "
                  "iterations of no watchdog")
        for hang_after in (0.5, 1.0, 2.0):
            folder = Path(tmp) / f"stuck-{hang_after}"
            folder.mkdir(mode=0o700)
            took = [stuck_latency(hang_after, folder / str(i)) for i in range(args.rounds)]
            print(f"while True: pass, hang_after={hang_after:g}: dump on disk after "
                  f"{statistics.median(took):.2f} s (median of {args.rounds}; "
                  f"{statistics.median(took) / hang_after:.2f} x hang_after)")


if __name__ == "__main__":
    main()
