"""The fault matrix of docs/fault-matrix.md, measured under the parents hosts really have.

    python benchmarks/fault_matrix.py [--trials 20] [--old-kernel] [--only SUBSTRING]

Each row is a real host (tests/integration/host_program.py) dying that way, ``--trials``
times under each parent that reaps at once: ``Popen.wait()`` (tests/integration/
reaper.py) and a shell (``bash -c '"$@"; exit $?'``). The watchdog therefore loses the
race for the zombie, as it does under systemd or a container runtime.

For every trial the verdict (kind, signal, exit code, confidence) is compared with the
truth, and two latencies are taken with a fine clock, never from file mtimes (they are
a few ms stale): the death is the moment a pidfd of the host opened by this process
turns readable; the first phase is the moment a ``memory-*.json`` appears in the
directory; the complete one the moment it says ``collectionComplete: true``. This
process polls every 0.5 ms.

``--old-kernel`` sets WATCHDOG_CORE_NO_PIDFD_INFO=1 in the hosts: their watchdogs then
behave as on a kernel before 6.15 (no exit status through the pidfd), which shows what
changes there.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "tests" / "integration" / "host_program.py"
REAPER = ROOT / "tests" / "integration" / "reaper.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV.pop("WATCHDOG_CORE_DISABLE", None)
POLL = 0.0005


class Row:
    """One way to die: how to cause it and what the postmortem must say."""

    def __init__(self, label: str, *, command: str | None = None, sig: int | None = None,
                 args: tuple[str, ...] = (), expected: tuple[str, str | None, int | None] | None,
                 cgroup: bool = False, env: dict[str, str] | None = None,
                 prepare: str | None = None, prepared: str | None = None) -> None:
        self.label, self.command, self.sig, self.args = label, command, sig, args
        self.expected, self.cgroup, self.env = expected, cgroup, env or {}
        self.prepare, self.prepared = prepare, prepared  # a command first, and its answer


ROWS = [
    Row("OOM-killed in a 200 MB cgroup (v1), kmsg readable", command="balloon",
        args=("--interval", "0.05"), expected=("oom-killed", "SIGKILL", None), cgroup=True),
    Row("OOM-killed in a 200 MB cgroup, no kmsg (non-root)", command="balloon",
        args=("--interval", "0.05"), expected=("oom-killed", "SIGKILL", None), cgroup=True,
        env={"WATCHDOG_CORE_NO_KMSG": "1"}),
    Row("its worker OOM-killed, then SIGTERM from a supervisor", sig=signal.SIGTERM,
        args=("--interval", "0.05"), expected=("killed", "SIGTERM", None), cgroup=True,
        prepare="worker-oom", prepared="worker -9"),
    Row("SIGSEGV (ctypes.string_at(0))", command="segv",
        expected=("crashed", "SIGSEGV", None)),
    Row("abort (os.abort())", command="abort", expected=("crashed", "SIGABRT", None)),
    Row("unhandled exception", command="raise", expected=("exited", None, 1)),
    Row("sys.exit(3)", command="exit 3", expected=("exited", None, 3)),
    Row("SIGKILL", sig=signal.SIGKILL, expected=("killed", "SIGKILL", None)),
    Row("SIGKILL of a 1.5 GiB host", sig=signal.SIGKILL, expected=("killed", "SIGKILL", None),
        prepare="grow 1536", prepared="grown"),
    Row("SIGTERM, no handler", sig=signal.SIGTERM, expected=("killed", "SIGTERM", None)),
    Row("SIGTERM, catch_sigterm=True", sig=signal.SIGTERM, args=("--catch-sigterm",),
        expected=("killed", "SIGTERM", None)),
    Row("returns normally (exit 0)", command="exit0", expected=None),
]
PARENTS = {
    "Popen.wait()": lambda argv: [sys.executable, str(REAPER), *argv],
    "bash -c": lambda argv: ["bash", "-c", '"$@"; exit $?', "bash", *argv],
}


class Trial:
    __slots__ = ("verdict", "confidence", "first_ms", "complete_ms", "exact")

    def __init__(self) -> None:
        self.verdict: tuple[str, str | None, int | None] | None = None
        self.confidence = "-"
        self.first_ms: float | None = None
        self.complete_ms: float | None = None
        self.exact = False


def run_trial(row: Row, parent: str, directory: Path, extra_env: dict[str, str]) -> Trial:
    cgroup = make_cgroup() if row.cgroup else None
    try:
        argv = [sys.executable, str(HOST), str(directory), *row.args]
        if cgroup is not None:
            argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]
        proc = subprocess.Popen(PARENTS[parent](argv), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**ENV, **row.env, **extra_env})
        assert proc.stdout is not None
        assert proc.stdin is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), (line, proc.stderr.read() if proc.stderr else "")
        info = json.loads(line[6:])
        pid = info["pid"]
        pidfd = os.pidfd_open(pid)
        try:
            if row.prepare:
                assert ask(proc, row.prepare) == row.prepared
            before = set(directory.glob("memory-*.json")) if directory.exists() else set()
            if row.command:
                send(proc, row.command)
            if row.sig is not None:
                os.kill(pid, row.sig)
            trial = watch(directory, pidfd, before)
        finally:
            os.close(pidfd)
        proc.communicate(timeout=120)  # the watchdog holds stderr: its exit ends this
    finally:
        if cgroup is not None:
            remove_cgroup(cgroup)
    doc = postmortem(directory)
    if doc is None:
        trial.exact = row.expected is None
        if not trial.exact and oom_killed(info["watchdog_pid"]):
            trial.confidence = "the kernel took the watchdog too"
        return trial
    e = doc["host"]["exit"]
    trial.verdict = (e["kind"], e["signal"], e["exitCode"])
    trial.confidence = e.get("confidence", "-")
    trial.exact = trial.verdict == row.expected and trial.confidence == "certain"
    return trial


def watch(directory: Path, pidfd: int, before: set[Path] | None = None) -> Trial:
    """The two latencies from the death: a thread blocks on the host's pidfd and notes
    the moment it turns readable; this one polls the directory meanwhile. ``before``:
    the dumps there before the death, listed by the caller before it caused it (the
    postmortem may be on disk before this is called)."""
    trial = Trial()
    died: list[int] = []
    waiter = threading.Thread(target=lambda: (select.select([pidfd], [], []),
                                              died.append(time.monotonic_ns())))
    waiter.start()
    first = complete = None
    if before is None:
        before = set(directory.glob("memory-*.json")) if directory.exists() else set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and complete is None:
        # Pressure dumps written before the death are not the postmortem.
        doc_path = next((p for p in directory.glob("memory-*.json") if p not in before
                         and _trigger(p) == "host-died"), None)
        if doc_path is not None:
            now = time.monotonic_ns()
            first = first or now
            try:
                if json.loads(doc_path.read_bytes())["collectionComplete"]:
                    complete = now
            except (OSError, ValueError):
                pass
        elif died and (time.monotonic_ns() - died[0]) / 1e9 > 3:
            break  # no postmortem: a clean end
        time.sleep(POLL)
    waiter.join(timeout=120)
    if died and first is not None:
        trial.first_ms = max(0.0, (first - died[0]) / 1e6)
    if died and complete is not None:
        trial.complete_ms = max(0.0, (complete - died[0]) / 1e6)
    return trial


_TRIGGERS: dict[Path, str] = {}


def _trigger(path: Path) -> str | None:
    """A dump's trigger, read once per file (it never changes)."""
    if path not in _TRIGGERS:
        try:
            _TRIGGERS[path] = json.loads(path.read_bytes())["trigger"]
        except (OSError, ValueError, KeyError):
            return None
    return _TRIGGERS[path]


def postmortem(directory: Path) -> dict | None:
    for path in sorted(directory.glob("memory-*.json")):
        doc = json.loads(path.read_text())
        if doc["trigger"] == "host-died":
            return doc  # type: ignore[no-any-return]
    return None


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


def oom_killed(pid: int) -> bool:
    """The kernel's log names ``pid`` as an OOM victim (root only; the log may have
    rotated on a busy machine)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False
            except BrokenPipeError:
                continue
            if f"Killed process {pid} ".encode() in record:
                return True
    finally:
        os.close(fd)


def describe(verdict: tuple[str, str | None, int | None] | None) -> str:
    if verdict is None:
        return "no postmortem"
    kind, sig, code = verdict
    return " ".join(x for x in (kind, sig, None if code is None else f"exitCode {code}") if x)


def median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.1f}" if known else "-"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--old-kernel", action="store_true",
                        help="watchdogs without pidfd exit info, as before Linux 6.15")
    parser.add_argument("--only", default="", help="rows whose label contains this")
    args = parser.parse_args()
    extra_env = {"WATCHDOG_CORE_NO_PIDFD_INFO": "1"} if args.old_kernel else {}
    lines = ["| the host... | parent | verdict (count of trials) | exact | first phase ms "
             "(median) | complete ms (median) |", "|---|---|---|---|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for r, row in enumerate(ROWS):
            if args.only not in row.label:
                continue
            if row.cgroup and make_cgroup_check() is None:
                lines.append(f"| {row.label} | - | skipped: no writable memory cgroup | | | |")
                continue
            for parent in PARENTS:
                trials = [run_trial(row, parent, Path(tmp) / f"r{r}-{parent[:4]}-{t}",
                                    extra_env) for t in range(args.trials)]
                seen: dict[str, int] = {}
                for t in trials:
                    key = f"{describe(t.verdict)} ({t.confidence})" if t.verdict else \
                        "no postmortem" + (f" ({t.confidence})" if t.confidence != "-" else "")
                    seen[key] = seen.get(key, 0) + 1
                verdicts = "; ".join(f"{k}: {n}" for k, n in sorted(seen.items(),
                                                                    key=lambda kv: -kv[1]))
                exact = sum(t.exact for t in trials)
                line = (f"| {row.label} | {parent} | {verdicts} | {exact}/{len(trials)} | "
                        f"{median([t.first_ms for t in trials])} | "
                        f"{median([t.complete_ms for t in trials])} |")
                lines.append(line)
                print(line, flush=True)
    if not args.only:
        with tempfile.TemporaryDirectory() as tmp:
            lines += ["", "| fault | what happens | measured |", "|---|---|---|",
                      hang_row(Path(tmp)), restart_row(Path(tmp)), orphan_row(Path(tmp)),
                      exec_row(Path(tmp))]
    print("\n" + "\n".join(lines))
    return 0


def start(directory: Path, *args: str) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(PARENTS["Popen.wait()"]([sys.executable, str(HOST),
                                                      str(directory), *args]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready "), line
    return proc, json.loads(line[6:])


def send(proc: subprocess.Popen[str], command: str) -> None:
    """One command line to a host_program.py host."""
    assert proc.stdin is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()


def ask(proc: subprocess.Popen[str], command: str) -> str:
    """A command, and the line the host answers with."""
    assert proc.stdout is not None
    send(proc, command)
    return proc.stdout.readline().strip()


def wait_for(directory: Path, trigger: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in directory.glob("memory-*.json"):
            try:
                doc = json.loads(path.read_bytes())
            except ValueError:
                continue
            if doc["trigger"] == trigger and doc["collectionComplete"]:
                return doc  # type: ignore[no-any-return]
        time.sleep(POLL)
    raise AssertionError(f"no {trigger} dump in {directory}")


def hang_row(base: Path) -> str:
    directory = base / "hang"
    proc, _ = start(directory, "--hang-after", "1.0")
    send(proc, "hang 4")
    t0 = time.monotonic()
    doc = wait_for(directory, "unresponsive")
    took = (time.monotonic() - t0) * 1000
    proc.stdout.readline()  # type: ignore[union-attr]
    ask(proc, "stop")
    proc.communicate(timeout=60)
    stacks = "with stacks" if doc["extras"].get("stacks") else "NO stacks"
    return (f"| the GIL held in C (hang_after=1) | one unresponsive dump, {stacks} | "
            f"complete {took:.0f} ms after the hang began (the heartbeat beats every "
            "hang_after/3, so staleness counts from up to 0.33 s before) |")


def restart_row(base: Path) -> str:
    proc, _ = start(base / "restart")
    t0 = time.monotonic()
    line = ask(proc, "killwd")
    took = (time.monotonic() - t0) * 1000
    ask(proc, "stop")
    proc.communicate(timeout=60)
    return (f"| its watchdog SIGKILLed | host unaffected, watchdog restarted "
            f"({line.split('alive=')[-1]}) | new watchdog {took:.0f} ms later |")


def orphan_row(base: Path) -> str:
    first_dir = base / "orphan"
    first, info = start(first_dir, "--no-restart", "--stats", json.dumps({"turns": 1}))
    os.kill(info["watchdog_pid"], signal.SIGKILL)
    time.sleep(0.2)  # reaped by the host's heartbeat
    os.kill(info["pid"], signal.SIGKILL)
    first.communicate(timeout=60)
    t0 = time.monotonic()
    second, _ = start(base / "orphan2")
    doc = wait_for(first_dir, "recovered")
    took = (time.monotonic() - t0) * 1000
    ask(second, "stop")
    second.communicate(timeout=60)
    e = doc["host"]["exit"]
    return (f"| dies together with its watchdog | recovered by the next session: "
            f"{e['kind']} ({e['confidence']}) | {took:.0f} ms after the next start |")


def exec_row(base: Path) -> str:
    directory = base / "exec"
    proc, _info = start(directory, "--hang-after", "1.0")
    send(proc, "exec 3")
    out, _ = proc.communicate(timeout=60)
    ok = "the new program survived" in out and proc.returncode == 0
    files = [p.name for p in directory.iterdir()] if directory.exists() else []
    return (f"| execs another program (hang_after=1) | "
            f"{'new program never signalled, session ended' if ok else 'FAILED'} | "
            f"files left: {len([f for f in files if f.startswith('memory-')])} |")


def make_cgroup_check() -> Path | None:
    path = make_cgroup()
    if path is not None:
        remove_cgroup(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
