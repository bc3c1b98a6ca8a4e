"""Many sessions on one machine: what all their watchdogs cost together, and what
happens when every host dies at once.

    .venv/bin/python benchmarks/scale.py --sessions 16 64 256

For each count N: N small hosts (a Python process each, recording 8 stats every
10 ms, far from any limit) start a session each into one directory. After they
settle, over ``--seconds`` of watching:

- the CPU all watchdogs used together, and per watchdog, as a share of one core
  (from /proc/<pid>/stat, utime + stime);
- each watchdog's USS and PSS (/proc/<pid>/smaps_rollup), and their sum;
- then every session asks for a dump at once (the worst moment: a machine running
  short has every watchdog writing): the same figures after it, with the largest USS;
- then every host is SIGKILLed at once: the time until the last postmortem is on
  disk (complete: ``collectionComplete`` true), that there are N distinct ones, how
  many say exactly how their host died (SIGKILL, certain), and that no ``.tmp`` is
  left. Retention is raised to hold them all: with the defaults
  (100 dump sets, 256 MiB) a folder keeps only the newest 100 of 256 postmortems.

With ``--prometheus`` every count runs twice, side by side: without and then with each
watchdog keeping its metrics file in a textfile folder (docs/fleet.md), and the table
says how many exit files say SIGKILL, certain, and how many live files are left.

Budgets (docs/performance.md): an idle watchdog <= 10 MiB USS and <= 0.1 % of a
core; 256 sessions together <= 25 % of a core and <= 2 GiB PSS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
HOST = """
import os, sys, time
import watchdog_core
wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], session_id=sys.argv[2])
rec = wd.recorder("a", "b", "c", "d", "e", "f", "g", "h")
print(wd.shm_name, flush=True)
i, dumped = 0, False
while True:
    i += 1
    rec(i, i, i, i, i, i, i, i)
    if not dumped and i % 50 == 0 and os.path.exists(sys.argv[3]):
        dumped = wd.dump() is not None  # every session at once: the worst moment
    time.sleep(0.01)
"""


def cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def uss_pss(pid: int) -> tuple[int, int]:
    """(USS, PSS) bytes from smaps_rollup: private pages, and the proportional share."""
    uss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Private_Clean", "Private_Dirty"):
            uss += int(rest.split()[0]) * 1024
        elif key == "Pss":
            pss = int(rest.split()[0]) * 1024
    return uss, pss


def watchdog_of(shm_name: str) -> int:
    """The watchdog's pid, from its session's ring header (word 35)."""
    from watchdog_core import _reader, _shm

    mapping = _shm.open_segment(shm_name)
    try:
        with _reader.RingImage(memoryview(mapping)) as image:
            return image.watchdog_pid
    finally:
        mapping.close()


def measure(n: int, seconds: float, textfile: bool = False) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WATCHDOG_CORE_DISABLE", None)
    env.pop("WATCHDOG_CORE_PROMETHEUS_DIR", None)
    # Retention sized for N sessions dying at once (a .ring is 2.1 MiB): with the default
    # (100 sets, 256 MiB) the folder keeps only the newest, which is itself a finding.
    env["WATCHDOG_CORE_MAX_FILES"] = str(max(100, 2 * n))
    env["WATCHDOG_CORE_MAX_BYTES"] = str(max(256 << 20, 4 * n << 20))
    with tempfile.TemporaryDirectory(prefix="wdc-scale-") as folder:
        flag = os.path.join(folder, ".dump-now")  # hidden: retention never counts it
        metrics = Path(folder, "textfile")
        if textfile:
            metrics.mkdir(mode=0o755)
            env["WATCHDOG_CORE_PROMETHEUS_DIR"] = str(metrics)
        hosts = [subprocess.Popen([sys.executable, "-c", HOST, folder, f"scale{n}-{i}", flag],
                                  stdout=subprocess.PIPE, text=True, env=env)
                 for i in range(n)]
        try:
            names = [h.stdout.readline().strip() for h in hosts]  # type: ignore[union-attr]
            watchdogs = []
            deadline = time.monotonic() + 120
            for name in names:
                while not (pid := watchdog_of(name)):
                    assert time.monotonic() < deadline, f"no watchdog for {name}"
                    time.sleep(0.05)
                watchdogs.append(pid)
            time.sleep(3.0)  # starting up is not watching
            before = [cpu_seconds(p) for p in watchdogs]
            start = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - start
            cpu = sum(cpu_seconds(p) - b
                      for p, b in zip(watchdogs, before, strict=True)) / elapsed
            memory = [uss_pss(p) for p in watchdogs]
            # Every session dumps at once, as when a machine runs short: what the
            # watchdogs hold after writing, with nothing new loaded for it.
            Path(flag).touch()
            _all_dumps(Path(folder), n, "manual", time.monotonic())
            dumped = [uss_pss(p) for p in watchdogs]
            killed_at = time.monotonic()
            for h in hosts:
                os.kill(h.pid, signal.SIGKILL)
            last = _all_dumps(Path(folder), n, "host-died", killed_at)
            exact = _exact_kills(Path(folder))
            leftovers = [p.name for p in Path(folder).iterdir() if ".tmp" in p.name]
            exit_files, live_files = _textfiles(metrics, n) if textfile else (0, 0)
        finally:
            for h in hosts:
                if h.poll() is None:
                    h.kill()
                h.wait()
                if h.stdout is not None:
                    h.stdout.close()
    mib = 1 << 20
    return {
        "sessions": n, "cpu_all": cpu * 100, "cpu_each": cpu * 100 / n,
        "uss_each": sum(u for u, _ in memory) / n / mib,
        "pss_each": sum(p for _, p in memory) / n / mib,
        "pss_all": sum(p for _, p in memory) / mib,
        "uss_dumped": sum(u for u, _ in dumped) / n / mib,
        "uss_dumped_max": max(u for u, _ in dumped) / mib,
        "pss_dumped_all": sum(p for _, p in dumped) / mib,
        "last_postmortem": last, "tmp_left": len(leftovers), "exact": exact,
        "exit_files": exit_files, "live_files": live_files,
    }


def _textfiles(folder: Path, n: int, timeout: float = 60) -> tuple[int, int]:
    """Exit files saying SIGKILL, certain, and live files left, once the N exit files
    are there (each is written just after its postmortem)."""
    deadline = time.monotonic() + timeout
    while (len(list(folder.glob("*+exit.prom"))) < n and time.monotonic() < deadline):
        time.sleep(0.05)
    exact = sum('kind="killed",signal="SIGKILL",confidence="certain"} 1' in p.read_text()
                for p in folder.glob("*+exit.prom"))
    live = [p for p in folder.glob("*.prom") if not p.name.endswith("+exit.prom")]
    return exact, len(live)


def _all_dumps(folder: Path, n: int, trigger: str, since: float,
               timeout: float = 300) -> float:
    """Seconds from ``since`` until N complete dumps with ``trigger`` are on disk, each of
    another session."""
    while True:
        complete = set()
        for path in folder.glob("memory-*.json"):
            try:
                dump = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced at this instant
            if dump.get("trigger") == trigger and dump.get("collectionComplete"):
                complete.add(dump["sessionId"])
        if len(complete) >= n:
            return time.monotonic() - since
        if time.monotonic() - since > timeout:
            raise AssertionError(f"{len(complete)} of {n} {trigger} dumps after {timeout} s")
        time.sleep(0.02)


def _exact_kills(folder: Path) -> int:
    """Postmortems that say exactly how their host died: SIGKILL, certain."""
    exact = 0
    for path in folder.glob("memory-*.json"):
        dump = json.loads(path.read_text())
        end = (dump.get("host") or {}).get("exit") or {}
        if dump.get("trigger") == "host-died" and (end.get("kind"), end.get("signal"), end.get(
                "confidence")) == ("killed", "SIGKILL", "certain"):
            exact += 1
    return exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--prometheus", action="store_true",
                        help="each count without and with per-session metrics files")
    args = parser.parse_args()
    print("| sessions | CPU, all watchdogs | per watchdog | USS / PSS each | PSS, all | "
          "after a dump each: USS (max) / PSS, all | all killed: last postmortem | "
          "killed by SIGKILL, certain | .tmp left |"
          + (" metrics files | exit files SIGKILL, certain | live files left |"
             if args.prometheus else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
          + ("---|---:|---:|" if args.prometheus else ""))
    for n, textfile in [(n, t) for n in args.sessions
                        for t in ((False, True) if args.prometheus else (False,))]:
        r = measure(n, args.seconds, textfile)
        files = ""
        if args.prometheus:
            files = (f" {'yes' if textfile else 'no'} | "
                     + (f"{r['exit_files']} of {n} | {r['live_files']} |" if textfile
                        else "- | - |"))
        print(f"| {n} | {r['cpu_all']:.1f} % | {r['cpu_each']:.3f} % | "
              f"{r['uss_each']:.1f} / {r['pss_each']:.1f} MiB | {r['pss_all']:.0f} MiB | "
              f"{r['uss_dumped']:.1f} ({r['uss_dumped_max']:.1f}) / "
              f"{r['pss_dumped_all']:.0f} MiB | "
              f"{r['last_postmortem']:.2f} s | {r['exact']} of {n} | {r['tmp_left']} |"
              + files, flush=True)


if __name__ == "__main__":
    main()
