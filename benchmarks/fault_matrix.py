"""The fault matrix of docs/fault-matrix.md, measured: each death, real, timed.

    python benchmarks/fault_matrix.py [--rounds N]

For each way a host dies, a real host (tests/integration/host_program.py) dies that
way and the time from its death to the complete postmortem on disk is measured.
The death time is taken by this process, the host's parent, with
``waitid(WEXITED | WNOWAIT)``: it returns the moment the host becomes a zombie and
leaves it unreaped, so the watchdog can still read its exit status. The
postmortem time is the final file's mtime (after the fsync of phase two).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "tests" / "integration" / "host_program.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV.pop("WATCHDOG_CORE_DISABLE", None)


def start(directory: Path, *args: str, cgroup: Path | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, str(HOST), str(directory), *args]
    if cgroup is not None:
        argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready "), line
    proc.info = json.loads(line[6:])  # type: ignore[attr-defined]
    return proc


def send(proc: subprocess.Popen[str], command: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()


def wait_for_death(proc: subprocess.Popen[str]) -> int:
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    return time.time_ns()


def postmortem(directory: Path, trigger: str = "host-died") -> tuple[dict, int]:
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        if doc["trigger"] == trigger:
            return doc, path.stat().st_mtime_ns
    raise AssertionError(f"no {trigger} dump in {directory}")


def death_row(base: Path, name: str, command: str | None, sig: int | None = None,
              args: tuple[str, ...] = (), cgroup: Path | None = None) -> tuple[dict, float]:
    directory = base / name
    proc = start(directory, *args, cgroup=cgroup)
    if command:
        send(proc, command)
    if sig is not None:
        os.kill(proc.pid, sig)
    died = wait_for_death(proc)
    proc.communicate(timeout=60)  # reaps; returns when the watchdog has exited too
    doc, written = postmortem(directory)
    return doc, (written - died) / 1e6


def make_cgroup() -> Path | None:
    parent = Path("/sys/fs/cgroup/memory")
    if not (parent / "memory.limit_in_bytes").exists() or not os.access(parent, os.W_OK):
        return None
    path = parent / f"watchdog-core-bench-{os.getpid()}-{os.urandom(2).hex()}"
    path.mkdir()
    (path / "memory.limit_in_bytes").write_text(str(200 << 20))
    return path


def remove_cgroup(path: Path) -> None:
    for _ in range(100):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cases: list[tuple[str, str | None, int | None, tuple[str, ...], bool]] = [
            ("cgroup OOM kill (200 MB, v1)", "balloon", None, ("--interval", "0.05"), True),
            ("SIGSEGV (ctypes.string_at(0))", "segv", None, (), False),
            ("abort (os.abort())", "abort", None, (), False),
            ("unhandled exception", "raise", None, (), False),
            ("sys.exit(3)", "exit 3", None, (), False),
            ("SIGKILL", None, signal.SIGKILL, (), False),
            ("SIGTERM, no handler", None, signal.SIGTERM, (), False),
            ("SIGTERM, catch_sigterm=True", None, signal.SIGTERM, ("--catch-sigterm",), False),
        ]
        for i, (label, command, sig, extra, needs_cgroup) in enumerate(cases):
            times, doc = [], None
            for r in range(args.rounds):
                cgroup = make_cgroup() if needs_cgroup else None
                if needs_cgroup and cgroup is None:
                    break
                try:
                    doc, ms = death_row(base, f"c{i}r{r}", command, sig, extra, cgroup)
                finally:
                    if cgroup is not None:
                        remove_cgroup(cgroup)
                times.append(ms)
            if doc is None:
                rows.append((label, "skipped: no writable memory cgroup", "", ""))
                continue
            e = doc["host"]["exit"]
            what = e["signal"] or (f"exitCode {e['exitCode']}" if e["exitCode"] is not None
                                   else "") + (f" {e['exception']}" if e["exception"] else "")
            rows.append((label, e["kind"], what.strip(), f"{statistics.median(times):.0f} ms"))
            print(f"{label}: {e['kind']} {what.strip()} {statistics.median(times):.0f} ms",
                  flush=True)
        rows.append(hang_row(base))
        print(rows[-1], flush=True)
        rows.append(restart_row(base))
        print(rows[-1], flush=True)
        rows.append(orphan_row(base))
        print(rows[-1], flush=True)
    print("\n| death | kind | signal / code | death -> postmortem (median) |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def hang_row(base: Path) -> tuple[str, str, str, str]:
    directory = base / "hang"
    proc = start(directory, "--hang-after", "1.0")
    sent = time.time_ns()
    send(proc, "hang 4")
    assert proc.stdout is not None
    proc.stdout.readline()
    send(proc, "stop")
    proc.communicate(timeout=60)
    doc, written = postmortem(directory, "unresponsive")
    late = (written - sent) / 1e6 - 1000  # after the heartbeat went stale (hang_after 1 s)
    return ("GIL held in C (hang_after=1.0)", "unresponsive dump with stacks",
            f"stacks: {'yes' if doc['extras'].get('stacks') else 'no'}",
            f"{late:.0f} ms after hang_after")


def restart_row(base: Path) -> tuple[str, str, str, str]:
    proc = start(base / "restart")
    t0 = time.time_ns()
    send(proc, "killwd")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = (time.time_ns() - t0) / 1e6
    send(proc, "stop")
    proc.communicate(timeout=60)
    alive = line.split("alive=")[-1].strip()
    return ("watchdog killed", "host unaffected, watchdog restarted", f"alive={alive}",
            f"{took:.0f} ms to a new watchdog")


def orphan_row(base: Path) -> tuple[str, str, str, str]:
    first_dir = base / "orphan"
    first = start(first_dir, "--no-restart", "--stats", json.dumps({"turns": 1}))
    wd_pid = first.info["watchdog_pid"]  # type: ignore[attr-defined]
    os.kill(wd_pid, signal.SIGKILL)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    t0 = time.time_ns()
    second = start(base / "orphan2")
    deadline = time.monotonic() + 30
    while not list(first_dir.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    doc, written = postmortem(first_dir, "recovered")
    send(second, "stop")
    second.communicate(timeout=60)
    kind = doc["host"]["exit"]["kind"]
    return ("host and watchdog both killed", "recovered by the next session", f"kind {kind}",
            f"{(written - t0) / 1e6:.0f} ms after the next start_watchdog()")


if __name__ == "__main__":
    sys.exit(main())
