"""What `pytest --watchdog` costs a test run, measured side by side (docs/pytest.md).

    .venv/bin/python benchmarks/pytest_overhead.py [--tests 500 5000] [--rounds 10]

For each count N, a project of N trivial parametrized tests is run with and without
``--watchdog``, alternating which goes first in each round; the medians and their
ratio are printed. The plugin's cost is a fixed start and stop per process (the
watchdog, the ring) plus a mark and two records per test, so the ratio shrinks as the
tests do more work; trivial tests show it at its largest.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
"""


def run(project: Path, watched: bool, diagnostics: Path) -> float:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
            "--rootdir", str(project), str(project)]
    if watched:
        argv += ["--watchdog", "--watchdog-dir", str(diagnostics)]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}): {done.stdout[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print("| tests | without | with --watchdog | ratio | added |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="wdc-pytest-bench-") as tmp:
        for n in args.tests:
            project = Path(tmp) / f"p{n}"
            project.mkdir()
            (project / "test_many.py").write_text(PROJECT.format(n=n))
            (project / "pytest.ini").write_text("[pytest]\n")
            times: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.rounds):
                for watched in ((False, True) if r % 2 else (True, False)):
                    times[watched].append(run(project, watched, Path(tmp) / "diag"))
            off, on = statistics.median(times[False]), statistics.median(times[True])
            print(f"| {n} | {off:.3f} s | {on:.3f} s | {on / off:.2f}x | "
                  f"{(on - off) * 1e3:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
