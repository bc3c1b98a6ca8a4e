"""watchdog-core side by side with what users would pick instead, on an agent's workload.

    python benchmarks/side_by_side.py [--turns 60000] [--reps 3] [--tools memray fil ...]
                                      [--venv ~/.cache/watchdog-core-bench/venv]

The workload is a chat agent's loop: every turn appends a message (a dict of role and
content strings) to a history that only grows, round-trips the recent history through
JSON (``json.dumps`` of the last 20 messages, then ``json.loads``) and computes 8 numeric
stats. Under the ``library`` tool it records them (``rec = wd.recorder(8 names)`` after
``start_watchdog()``, ``rec(...)`` every turn, ``wd.stop()`` at the end); every other tool
runs the very same script unchanged:

    none          python workload.py
    library       python workload.py, calling start_watchdog() itself
    run           watchdog-core run -- python workload.py
    faulthandler  python -X faulthandler workload.py
    tracemalloc   python -X tracemalloc workload.py          (1 frame, the default)
    memray        memray run -o capture.bin workload.py      (in-process, default options)
    fil           fil-profile -o DIR --no-browser run workload.py

The tools run from the benchmark's own environment, ``--venv`` (made on first use with
this interpreter: the repo installed editable, so the working tree is what is measured,
and memray and filprofiler at pinned versions; the project's own environment is left
alone). A tool that cannot be installed or does not run is skipped with a one-line reason.
Byte-code is cached under the venv's folder (PYTHONPYCACHEPREFIX), as a user's would be,
and one untimed warm-up round goes first.

**Cost.** ``--reps`` rounds, round-robin over the tools (the order rotates each round),
so every tool sees the same machine. For each run:

- wall time: from launching the command to reaping it (startup and the tool's own
  reporting at exit included, as a user waits for them);
- peak RSS: ``ru_maxrss`` of ``os.wait4`` on the launched command, which is the peak of
  the largest single process of its tree. Here that is the workload's Python process for
  every tool: memray runs the script in the process it starts, fil ``execve()``s into it,
  ``run``'s child is the workload (``run`` itself is smaller), and the library's watchdog
  is a second, smaller process. What the helpers add is printed beside it: the peak of the
  whole tree's summed RSS, polled from /proc every 0.1 s.

The table gives each tool's median over the rounds of (tool / no tool in the same round),
with the wall ratio's range over the rounds, and the absolute medians; the spread of the
no-tool runs is printed as the noise. A second table gives the CPU seconds (user + sys,
which a busy neighbour disturbs less than wall time) of the whole command and of the
workload process alone, and the RSS figures side by side.

**After a SIGKILL.** One more run per tool stops at turn ``turns // 2`` (30,000 by
default): the workload writes its pid into a FIFO and sleeps, and this script SIGKILLs that
pid, as the OOM killer would (for ``run``, the child program, not ``run``). Then it looks at
what was left: files in the run's folder, whether they can be read (``watchdog-core show``
for a postmortem; ``memray stats`` and ``memray summary`` on the capture; fil's output
folder), and whether anything says why the process died. Everything lives in one temporary
folder, removed at the end, and no process or ``/dev/shm/watchdog_core-sbs-*`` segment of
this benchmark is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
PINS = {"memray": "1.20.0", "filprofiler": "2024.11.2"}
TOOLS = ("none", "library", "run", "faulthandler", "tracemalloc", "memray", "fil")
LABELS = {
    "none": "no tool",
    "library": "watchdog-core, `start_watchdog()` in the script",
    "run": "`watchdog-core run -- python workload.py`",
    "faulthandler": "`python -X faulthandler`",
    "tracemalloc": "`python -X tracemalloc`",
    "memray": "`memray run`",
    "fil": "`fil-profile run`",
}
NEEDS = {"library": "watchdog-core", "run": "watchdog-core", "memray": "memray",
         "fil": "filprofiler"}
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20

WORKLOAD = '''"""A chat agent's loop: a growing history, a JSON round trip and 8 stats per turn.

    python workload.py TURNS MODE DIAGNOSTICS_DIR READY_AT FIFO

MODE "library" records the stats with watchdog-core; at turn READY_AT (when FIFO is not
"-") the pid goes into FIFO and the process sleeps until it is killed. Its last line:
entries, characters, its own CPU seconds and its own ru_maxrss in KiB.
"""
import json
import os
import resource
import sys
import time

turns, mode, diagnostics, ready_at, fifo = (
    int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
rec = None
if mode == "library":
    import watchdog_core

    wd = watchdog_core.start_watchdog(diagnostics_dir=diagnostics, session_id="sbs-library")
    rec = wd.recorder("historyEntries", "historyChars", "turn", "payloadBytes",
                      "recentMessages", "estimatedTokens", "messageChars", "toolCalls")

TEXT = "".join(chr(97 + (i * 7) % 26) + (" " if i % 6 == 5 else "") for i in range(4096))
ROLES = ("user", "assistant", "tool")
history = []
chars = tool_calls = 0
for turn in range(turns):
    if turn == ready_at and fifo != "-":
        with open(fifo, "w") as ready:
            ready.write(f"{os.getpid()}\\n")
        while True:
            time.sleep(60)  # killed here, with the history of READY_AT turns
    role = ROLES[turn % 3]
    start = (turn * 131) % 2048
    content = f"turn {turn}: " + TEXT[start : start + 200 + (turn * 7919) % 1200]
    history.append({"role": role, "content": content})
    chars += len(content)
    tool_calls += role == "tool"
    payload = json.dumps(history[-20:])
    recent = json.loads(payload)
    if rec is not None:
        rec(len(history), chars, turn, len(payload), len(recent), chars // 4, len(content),
            tool_calls)
if mode == "library":
    wd.stop()
own = resource.getrusage(resource.RUSAGE_SELF)
print(len(history), chars, own.ru_utime + own.ru_stime, own.ru_maxrss)
'''


# ---------------------------------------------------------------------------- environment

def prepare_venv(venv: Path) -> tuple[Path, dict[str, str]]:
    """The benchmark's own environment, made or completed: its python, and why each
    package that could not be installed is missing (by distribution name)."""
    python = venv / "bin" / "python"
    marker = venv / "side_by_side.json"
    wanted = {"watchdog-core": ["-e", str(ROOT)],
              **{name: [f"{name}=={version}"] for name, version in PINS.items()}}
    missing: dict[str, str] = {}
    if not python.exists():
        print(f"making the benchmark's venv: {venv}", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)],
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            reason = f"python -m venv failed: {last_line(made.stderr)}"
            return python, dict.fromkeys(wanted, reason)
    try:
        installed = json.loads(marker.read_text())
    except (OSError, ValueError):
        installed = {}
    for name, spec in wanted.items():
        if installed.get(name) == spec:
            continue
        print(f"installing into the benchmark's venv: {' '.join(spec)}", flush=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *spec],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            installed[name] = spec
        else:
            missing[name] = f"pip install {' '.join(spec)} failed: {last_line(done.stderr)}"
    marker.write_text(json.dumps(installed, indent=1))
    return python, missing


def last_line(text: str) -> str:
    """The last line that says something (pip's warnings about local indexes skipped)."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("WARNING: Location")]
    return lines[-1] if lines else "(nothing on stderr)"


def versions(python: Path) -> str:
    probe = ("import importlib.metadata as m, json, platform\n"
             "v = {'python': platform.python_version()}\n"
             "for d in ('watchdog-core', 'memray', 'filprofiler', 'psutil', 'pydantic'):\n"
             "    try:\n        v[d] = m.version(d)\n"
             "    except m.PackageNotFoundError:\n        v[d] = None\n"
             "print(json.dumps(v))\n")
    found = json.loads(subprocess.run([str(python), "-c", probe], capture_output=True,
                                      text=True, check=True).stdout)
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False, env=env).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--"],
                           capture_output=True, check=False, env=env).returncode != 0
    tree = f"{head or 'unknown commit'}{' + uncommitted edits' if dirty else ''}"
    parts = [f"Python {found.pop('python')}"]
    parts += [f"{name} {version}" for name, version in found.items() if version]
    return (f"{', '.join(parts)} (watchdog-core: working tree at {tree}); "
            f"Linux {platform.release()}, {os.cpu_count()} cores")


# ------------------------------------------------------------------------------- processes

def proc_stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, start time in ticks, state, RSS bytes) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    state = fields[0].decode()
    if state in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19]), state, int(fields[21]) * PAGE


class TreeSampler(threading.Thread):
    """Every 0.1 s: the launched process's tree (descendants by ppid, and any seen before
    that still live, such as a watchdog its host no longer parents) and its summed RSS."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[int, int] = {}  # pid -> start time, to never mistake a reused pid
        self.peak_sum = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            self.sample()

    def sample(self) -> None:
        table = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (stat := proc_stat(int(name))) is not None:
                table[int(name)] = stat
        tree = {pid for pid, (_, start, _, _) in table.items()
                if self.seen.get(pid) == start}
        if self.root in table:
            tree.add(self.root)
        grew = True
        while grew:  # descendants, whatever the order /proc lists them in
            grew = False
            for pid, (ppid, _, _, _) in table.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree:
            self.seen.setdefault(pid, table[pid][1])
        self.peak_sum = max(self.peak_sum, sum(table[pid][3] for pid in tree))

    def stop(self) -> None:
        self._done.set()
        self.join()

    def alive(self) -> list[int]:
        return [pid for pid, start in self.seen.items()
                if (stat := proc_stat(pid)) is not None and stat[1] == start]

    def end_all(self, grace: float = 10.0) -> list[int]:
        """Waits up to ``grace`` s for every process seen to end, then SIGKILLs the rest
        (by pid, checked against its start time); returns those that had to be killed."""
        deadline = time.monotonic() + grace
        while (left := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


class Launch:
    """One command in its own folder and session, its tree sampled, stdout and stderr
    to files there."""

    def __init__(self, argv: list[str], folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.started = time.perf_counter()
        with (folder / "stdout.txt").open("wb") as out, (folder / "stderr.txt").open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=folder, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=env,
                                         start_new_session=True)
        self.sampler = TreeSampler(self.proc.pid)
        self.sampler.start()

    def reap(self, timeout: float | None = None) -> tuple[float, int, float] | None:
        """Waits for the command: (wall s, ru_maxrss bytes, CPU s of it and its reaped
        children), or None if it is still running after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        wall = time.perf_counter() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.sampler.stop()
        return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime

    def finish(self) -> list[int]:
        """Makes sure nothing of this launch is left running; the pids that had to be
        killed."""
        if self.proc.returncode is None and self.reap(timeout=0) is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.reap()
        return self.sampler.end_all()

    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text(errors="replace")


# ------------------------------------------------------------------------------ the tools

class Run(NamedTuple):
    """One timed run of a tool."""

    wall: float  # s, from launch to reaping
    peak_rss: int  # bytes, ru_maxrss of os.wait4: the largest process of the tree
    cpu: float  # s, user + sys of the command and the children it reaped
    tree_peak: int  # bytes, the most the whole tree held at once (summed, polled)
    own_peak: int  # bytes, the workload's own ru_maxrss at its last line
    own_cpu: float  # s, the workload's own user + sys at its last line (no children)


class Bench:
    """Commands for each tool, run in fresh folders under one temporary directory."""

    def __init__(self, python: Path, turns: int, workdir: Path) -> None:
        self.python, self.turns, self.workdir = python, turns, workdir
        self.bin = python.parent
        self.script = workdir / "workload.py"
        self.script.write_text(WORKLOAD)
        self.env = dict(os.environ, PYTHONPYCACHEPREFIX=str(python.parent.parent.parent
                                                            / "pycache"),
                        NO_COLOR="1", TERM="dumb", COLUMNS="100")
        for name in ("WATCHDOG_CORE_DISABLE", "WATCHDOG_CORE_DIR", "PYTHONDONTWRITEBYTECODE",
                     "PYTHONPATH", "PYTHONTRACEMALLOC", "PYTHONFAULTHANDLER",
                     "PYTHONMALLOC"):
            self.env.pop(name, None)
        self.count = 0
        self.killed_strays: list[int] = []

    def folder(self, tool: str, label: str) -> Path:
        self.count += 1
        path = self.workdir / f"{self.count:03d}-{tool}-{label}"
        path.mkdir(mode=0o700)
        (path / "diagnostics").mkdir(mode=0o700)
        return path

    def argv(self, tool: str, folder: Path, ready_at: int, fifo: str) -> list[str]:
        diagnostics = str(folder / "diagnostics")
        workload = [str(self.script), str(self.turns),
                    "library" if tool == "library" else "plain", diagnostics,
                    str(ready_at), fifo]
        python = str(self.python)
        return {
            "none": [python, *workload],
            "library": [python, *workload],
            "run": [str(self.bin / "watchdog-core"), "run", "--dir", diagnostics,
                    "--session-id", "sbs-run", "--", python, *workload],
            "faulthandler": [python, "-X", "faulthandler", *workload],
            "tracemalloc": [python, "-X", "tracemalloc", *workload],
            "memray": [str(self.bin / "memray"), "run", "-q", "-f", "-o",
                       str(folder / "capture.bin"), *workload],
            "fil": [str(self.bin / "fil-profile"), "-o", str(folder / "fil-result"),
                    "--no-browser", "run", *workload],
        }[tool]

    def timed(self, tool: str, label: str) -> Run | str:
        """One whole run of the workload under ``tool``, or why it failed."""
        folder = self.folder(tool, label)
        launch = Launch(self.argv(tool, folder, -1, "-"), folder, self.env)
        try:
            reaped = launch.reap()
        finally:
            self.killed_strays += launch.finish()
        assert reaped is not None
        if launch.proc.returncode != 0:
            return f"exit status {launch.proc.returncode}: {last_line(launch.stderr())}"
        try:  # the workload's last line: entries, characters, its own CPU s and KiB
            *_, own_cpu, own_kib = (folder / "stdout.txt").read_text().split()
            own_peak, own_seconds = int(own_kib) * 1024, float(own_cpu)
        except ValueError:
            return f"no last line from the workload: {last_line(launch.stderr())}"
        shutil.rmtree(folder)  # captures and reports: hundreds of MB over the rounds
        wall, peak_rss, cpu = reaped
        return Run(wall, peak_rss, cpu, launch.sampler.peak_sum, own_peak, own_seconds)

    def killed(self, tool: str) -> str:
        """Runs to turn turns // 2, SIGKILLs the workload there; what it left, read."""
        folder = self.folder(tool, "sigkill")
        fifo = folder / "ready.fifo"
        os.mkfifo(fifo, 0o600)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # before the writer, so it
        try:                                                  # never blocks opening
            launch = Launch(self.argv(tool, folder, self.turns // 2, str(fifo)), folder,
                            self.env)
            try:
                pid = await_ready(reader, launch.proc.pid, timeout=900)
                if pid is None:
                    return f"did not reach turn {self.turns // 2}: {last_line(launch.stderr())}"
                os.kill(pid, signal.SIGKILL)
                if launch.reap(timeout=120) is None:
                    return "still running 120 s after the workload was killed"
                if tool in ("library", "run"):
                    postmortem(folder / "diagnostics", timeout=60)
            finally:
                self.killed_strays += launch.finish()
        finally:
            os.close(reader)
        target = "the child of `run`" if pid != launch.proc.pid else "the launched process"
        print(f"  {tool}: SIGKILLed pid {pid} ({target}); `{tool}` exit status "
              f"{launch.proc.returncode}", flush=True)
        return self.leftovers(tool, folder)

    def leftovers(self, tool: str, folder: Path) -> str:
        """What a killed run left, whether it reads, and whether it says why it died."""
        stderr = (folder / "stderr.txt").read_text(errors="replace").strip()
        ours = {"stdout.txt", "stderr.txt", "ready.fifo", "diagnostics"}
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and p.relative_to(folder).parts[0] not in ours)
        files += sorted(f"diagnostics/{p.name}" for p in (folder / "diagnostics").iterdir())
        if not stderr:
            err = "stderr empty"
        elif all(line.startswith("=fil-profile=") for line in stderr.splitlines()):
            err = "stderr: fil's start-up lines only"
        else:
            err = f"stderr: \"{last_line(stderr)}\""
        if tool in ("library", "run"):
            return self.read_postmortem(folder / "diagnostics", err)
        if tool == "memray":
            return self.read_memray(folder / "capture.bin", err)
        if tool == "fil":
            result = folder / "fil-result"
            inside = sorted(p.name for p in result.rglob("*")) if result.exists() else []
            left = (f"`fil-result/` with {', '.join(inside)}" if inside else
                    "an empty `fil-result/` folder" if result.exists() else "no folder")
            return f"{left}; nothing to read; says why: no ({err})"
        what = "no file" if not files else "files: " + ", ".join(files)
        return f"nothing: {what}, {err}; says why: no"

    def read_postmortem(self, diagnostics: Path, err: str) -> str:
        found = postmortem(diagnostics, timeout=0)
        names = sorted(p.name for p in diagnostics.iterdir())
        if found is None:
            return f"no postmortem ({', '.join(names) or 'empty folder'}; {err})"
        path, doc = found
        kept = " + ".join(f"`{name[len(path.stem):]}`" for name in names
                          if name.startswith(path.stem))
        shown = subprocess.run([str(self.bin / "watchdog-core"), "show", str(path)],
                               capture_output=True, text=True, check=False, env=self.env)
        # show exits 1 for a dump of a dead host; an unreadable file is 2, said on stderr
        verdict = next((line.split(None, 1)[1] for line in shown.stdout.splitlines()
                        if line.strip().startswith("verdict")), None)
        readable = ("`watchdog-core show` reads it" if shown.returncode in (0, 1) and verdict
                    else f"`watchdog-core show` fails: {last_line(shown.stderr)}")
        e = doc["host"]["exit"]
        stats = doc.get("session") or {}
        last = (f"last stats turn={stats['turn']}, historyEntries={stats['historyEntries']}"
                if "turn" in stats else "no stats (the child records none)")
        rss, timeline = doc.get("memory", {}).get("rss"), doc.get("timeline") or [{}]
        sampled = (f", last sampled RSS {rss / MIB:.0f} MiB, {-timeline[-1]['t']:.1f} s before "
                   "the dump" if isinstance(rss, int) and "t" in timeline[-1] else "")
        return (f"postmortem `memory-sbs-{doc['sessionId'].split('-')[1]}-*` {kept}; "
                f"{readable}; says why: yes, \"{verdict}\" (host.exit: `{e['kind']}`, "
                f"`{e['signal']}`, `{e.get('confidence')}`); {last}{sampled}")

    def read_memray(self, capture: Path, err: str) -> str:
        if not capture.exists():
            return f"no capture file; says why: no ({err})"
        said = []
        for command in ("stats", "summary"):
            out = subprocess.run([str(self.bin / "memray"), command, str(capture)],
                                 capture_output=True, text=True, check=False, env=self.env)
            text = out.stdout + out.stderr
            if out.returncode != 0:
                said.append(f"`memray {command}` fails ({last_line(out.stderr)})")
                continue
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            peak = next((lines[i + 1] for i, line in enumerate(lines)
                         if "Peak memory usage" in line and i + 1 < len(lines)), None)
            said.append(f"`memray {command}` reads it"
                        + (f" (peak {peak} of what reached the file)" if peak else ""))
            if any(word in text for word in ("SIGKILL", "killed", "signal 9")):
                said.append(f"`memray {command}` mentions the kill")
        why = "yes" if any("mentions" in s for s in said) else "no"
        return (f"`capture.bin` ({capture.stat().st_size / MIB:.1f} MiB); "
                f"{'; '.join(said)}; says why: {why} ({err})")


def await_ready(reader: int, pid: int, timeout: float) -> int | None:
    """The pid the workload writes into the FIFO at its turn, or None if it ended first."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([reader], [], [], 0.5)
        if readable:
            chunk = os.read(reader, 64)
            data += chunk
            if data.endswith(b"\n"):
                return int(data)
            if not chunk:
                return None
        elif os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return None
    return None


def postmortem(diagnostics: Path, timeout: float) -> tuple[Path, dict] | None:
    """The complete host-died dump in ``diagnostics``, waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        for path in sorted(diagnostics.glob("memory-*.json")):
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # being replaced at this instant
            if doc.get("trigger") == "host-died" and doc.get("collectionComplete"):
                return path, doc
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


# ----------------------------------------------------------------------------------- main

def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=positive, default=60_000,
                        help="turns of the agent's loop per run (default 60000); the SIGKILL "
                             "comes at turns // 2")
    parser.add_argument("--reps", type=positive, default=3,
                        help="timed rounds over all the tools (default 3)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS),
                        help="the tools to compare (default: all); 'none', the baseline, is "
                             "always run")
    parser.add_argument("--venv", type=Path, default=cache / "watchdog-core-bench" / "venv",
                        help="the benchmark's own environment, made if missing "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.turns < 2:
        parser.error("--turns must be at least 2 (the SIGKILL comes at turns // 2)")
    args.tools = ["none", *(t for t in TOOLS if t in args.tools and t != "none")]
    return args


def ratio_median(values: list[float], baseline: list[float]) -> float:
    return statistics.median(v / b for v, b in zip(values, baseline, strict=True))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    python, missing = prepare_venv(args.venv.expanduser().absolute())
    if not python.exists():
        print(f"no benchmark venv: {next(iter(missing.values()))}")
        return 1
    skipped = {tool: missing[NEEDS[tool]] for tool in args.tools if NEEDS.get(tool) in missing}
    segments_before = set(Path("/dev/shm").glob("watchdog_core-sbs-*"))
    with tempfile.TemporaryDirectory(prefix="wdc-side-by-side-") as tmp:
        bench = Bench(python, args.turns, Path(tmp))
        tools = [t for t in args.tools if t not in skipped]
        print(f"warm-up round (byte-code, page cache; each tool checked to run): "
              f"{', '.join(tools)}", flush=True)
        for tool in list(tools):
            outcome = bench.timed(tool, "warmup")
            if isinstance(outcome, str):
                skipped[tool] = f"does not run: {outcome}"
                tools.remove(tool)
        if "none" not in tools:
            print(f"the workload itself does not run: {skipped['none']}")
            return 1
        runs: dict[str, list[Run]] = {t: [] for t in tools}
        for rep in range(args.reps):
            for tool in tools[rep % len(tools) :] + tools[: rep % len(tools)]:
                if tool not in runs:
                    continue
                outcome = bench.timed(tool, f"rep{rep}")
                if isinstance(outcome, str):
                    skipped[tool] = f"failed in round {rep + 1}: {outcome}"
                    del runs[tool]
                    continue
                runs[tool].append(outcome)
                print(f"  round {rep + 1}/{args.reps} {tool:<12} {outcome.wall:6.2f} s "
                      f"{outcome.peak_rss / MIB:7.1f} MiB", flush=True)
        if "none" not in runs:
            print(f"no baseline: {skipped['none']}")
            return 1
        print(f"SIGKILL at turn {args.turns // 2:,}, one run per tool:", flush=True)
        after = {tool: bench.killed(tool) for tool in runs}
        segments = set(Path("/dev/shm").glob("watchdog_core-sbs-*")) - segments_before
        if segments:  # a ring whose host and watchdog both died: gc recovers, removes it
            subprocess.run([str(python.parent / "watchdog-core"), "gc", "--dir", tmp],
                           capture_output=True, check=False, env=bench.env)
        left = sorted(s.name for s in segments if s.exists())
    report(args, runs, after, skipped, versions(python), bench.killed_strays, left)
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[Run]], after: dict[str, str],
           skipped: dict[str, str], used: str, strays: list[int], segments: list[str]) -> None:
    base_wall = [r.wall for r in runs["none"]]
    base_rss = [float(r.peak_rss) for r in runs["none"]]
    base_cpu = [r.cpu for r in runs["none"]]
    print()
    print(f"Versions: {used}")
    for tool, reason in skipped.items():
        print(f"Skipped {LABELS[tool]}: {reason}")
    print()
    print(f"| tool | wall ratio | peak RSS ratio | median wall s | median peak RSS MiB | "
          f"after SIGKILL at turn {args.turns // 2:,} |")
    print("|---|---:|---:|---:|---:|---|")
    for tool, rows in runs.items():
        walls, rss = [r.wall for r in rows], [float(r.peak_rss) for r in rows]
        ratios = [w / b for w, b in zip(walls, base_wall, strict=True)]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if tool != "none" else ""
        print(f"| {LABELS[tool]} | {statistics.median(ratios):.2f}x{spread} | "
              f"{ratio_median(rss, base_rss):.2f}x | {statistics.median(walls):.2f} | "
              f"{statistics.median(rss) / MIB:.1f} | {after[tool]} |")
    print()
    print(f"{args.turns:,} turns, {args.reps} interleaved rounds; ratios are medians of "
          "(tool / no tool) within a round, the wall ratio's range over the rounds in "
          "brackets. Noise: the no-tool runs took "
          f"{min(base_wall):.2f}-{max(base_wall):.2f} s "
          f"({(max(base_wall) / min(base_wall) - 1) * 100:.1f} % apart).")
    print("Peak RSS is ru_maxrss from os.wait4 on the launched command: the peak of the "
          "largest single process of its tree, the workload's Python process (for `run`, "
          "its child). Beside it, the workload's own ru_maxrss at its last line (before "
          "interpreter exit and the tool's reports), the peak of the whole tree's summed RSS "
          "(polled every 0.1 s: adds `run` itself and the library's watchdog process), "
          "CPU (user + sys of the command and the children it reaped: `run` and its child, "
          "the library's host and the watchdog it reaps), its ratio as above, and the "
          "workload process's own CPU at its last line; medians:")
    print()
    print("| tool | peak RSS, largest process MiB | workload at its last line MiB | "
          "whole tree summed MiB | CPU s | CPU ratio | workload's own CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tool, rows in runs.items():
        print(f"| {LABELS[tool]} | {statistics.median(r.peak_rss for r in rows) / MIB:.1f} | "
              f"{statistics.median(r.own_peak for r in rows) / MIB:.1f} | "
              f"{statistics.median(r.tree_peak for r in rows) / MIB:.1f} | "
              f"{statistics.median(r.cpu for r in rows):.2f} | "
              f"{ratio_median([r.cpu for r in rows], base_cpu):.3f}x | "
              f"{statistics.median(r.own_cpu for r in rows):.2f} |")
    print()
    print(f"Left behind: processes still running 10 s after their run ended (killed): "
          f"{', '.join(map(str, strays)) or 'none'}; segments /dev/shm/watchdog_core-sbs-*: "
          f"{', '.join(segments) or 'none'}.")


if __name__ == "__main__":
    sys.exit(main())
