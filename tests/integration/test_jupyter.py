"""The IPython extension in real Jupyter kernels (docs/jupyter.md).

Kernels are started through jupyter_client's KernelManager, as Jupyter starts them, and
driven through a BlockingKernelClient; the OOM kills are a real memory cgroup's. Every
kernel, its watchdog, its segment and its cgroup are gone at the end of each test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT
from watchdog_core.jupyter import death_line, pressure_line, session_id_for

try:
    import ipykernel  # noqa: F401
    import jupyter_client  # noqa: F401
except ImportError:
    HAVE_JUPYTER = False
else:
    HAVE_JUPYTER = True

needs_kernel = pytest.mark.skipif(
    not HAVE_JUPYTER, reason="ipykernel and jupyter_client are not installed (the test "
    "extra pins them): a real kernel is needed")

# A text that only the cells' source holds: no file written may contain it.
SOURCE_SECRET = "s3cret-cell-source-7f1c"
BALLOON = f"""
# {SOURCE_SECRET}
import time
chunks = []
while True:
    chunks.append(bytearray(b"\\x01") * (4 << 20))  # every page touched
    time.sleep(0.02)
"""


class Cell:
    """One execution: its request's id, its number, and what IOPub said for it."""

    def __init__(self, msg_id: str) -> None:
        self.msg_id = msg_id
        self.execution_count: int | None = None
        self.streams: dict[str, str] = {"stdout": "", "stderr": ""}
        self.status = ""
        self.error: dict[str, object] | None = None

    @property
    def output(self) -> str:
        return self.streams["stdout"] + self.streams["stderr"]


class Kernel:
    """A real ipykernel started by jupyter_client, as Jupyter starts one: its own
    connection file ``kernel-{id}.json``, reused by a restart; optionally inside a
    memory cgroup, joined by the kernel process before Python starts (its watchdog,
    a child, is in it too, as in a container)."""

    def __init__(self, tmp_path: Path, diag: Path, *, cgroup: Path | None = None,
                 env: dict[str, str] | None = None, options: tuple[str, ...] = ()) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                *options]
        if cgroup is not None:
            argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh",
                    *argv]
        specs = tmp_path / "kernels"
        (specs / "wd-test").mkdir(parents=True, exist_ok=True)
        (specs / "wd-test" / "kernel.json").write_text(json.dumps(
            {"argv": argv, "display_name": "watchdog-core test", "language": "python"}))
        runtime = tmp_path / "runtime"
        runtime.mkdir(exist_ok=True)
        self.kernel_id = str(uuid.uuid4())
        self.connection_file = runtime / f"kernel-{self.kernel_id}.json"
        self.session_id = f"kernel-{self.kernel_id}"
        self.diag = diag
        self.cgroup = cgroup
        self.km = KernelManager(kernel_name="wd-test",
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]),
                                connection_file=str(self.connection_file))
        self.env = dict(os.environ, WATCHDOG_CORE_DIR=str(diag),
                        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        JUPYTER_PLATFORM_DIRS="1", JUPYTER_RUNTIME_DIR=str(runtime))
        self.env.pop("WATCHDOG_CORE_DISABLE", None)
        self.env.update(env or {})
        self.log = (tmp_path / "kernel.log").open("ab")
        self.kc: object = None

    # -- life ----------------------------------------------------------------------------

    def start(self) -> Kernel:
        self.km.start_kernel(env=self.env, stdout=self.log, stderr=self.log)
        self._connect()
        return self

    def restart(self) -> None:
        """A new kernel process with the same id and connection file, as Jupyter's
        automatic restart after a death."""
        self._disconnect()
        self.km.restart_kernel(now=True)
        self._connect()

    def _connect(self) -> None:
        kc = self.km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=30)
        self.kc = kc

    def _disconnect(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()  # type: ignore[attr-defined]
            self.kc = None

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.pid)  # type: ignore[union-attr]

    def close(self) -> None:
        """Shut the kernel down (killed, if it lingers)."""
        self._disconnect()
        with contextlib.suppress(Exception):
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=not self.km.is_alive())
        with contextlib.suppress(Exception):
            self.km.cleanup_resources()
        self.log.close()

    # -- cells ---------------------------------------------------------------------------

    def execute(self, code: str, timeout: float = 25.0) -> Cell:
        """Run ``code`` and collect what IOPub says for it until the kernel is idle."""
        kc = self.kc
        cell = Cell(kc.execute(code))  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while cell.status != "idle":
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no end of {code!r} within {timeout} s: {cell.output!r}"
            self._take(kc.get_iopub_msg(timeout=remaining), cell)  # type: ignore[attr-defined]
        return cell

    def execute_until_death(self, code: str, timeout: float = 25.0) -> Cell:
        """Run ``code``, which must kill the kernel; returns once the process is gone."""
        import queue

        kc = self.kc
        cell = Cell(kc.execute(code))  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while self.km.is_alive():
            assert time.monotonic() < deadline, f"the kernel outlived {code!r}"
            with contextlib.suppress(queue.Empty):
                self._take(kc.get_iopub_msg(timeout=0.1), cell)  # type: ignore[attr-defined]
        return cell

    @staticmethod
    def _take(msg: dict[str, object], cell: Cell) -> None:
        parent = msg["parent_header"]
        content = msg["content"]
        assert isinstance(parent, dict) and isinstance(content, dict)
        if parent.get("msg_id") != cell.msg_id:
            # Output of another request: a warning published to the wrong cell lands here.
            text = content.get("text", "") if msg["msg_type"] == "stream" else ""
            assert "watchdog-core" not in str(text), f"output of another cell: {msg}"
            return
        kind = msg["msg_type"]
        if kind == "stream":
            cell.streams[str(content["name"])] += str(content["text"])
        elif kind == "execute_input":
            cell.execution_count = int(content["execution_count"])  # type: ignore[call-overload]
        elif kind == "error":
            cell.error = content
        elif kind == "status":
            cell.status = str(content["execution_state"])

    # -- what the session left -------------------------------------------------------------

    def dumps(self) -> list[tuple[Path, dict[str, object]]]:
        if not self.diag.exists():
            return []
        return [(p, json.loads(p.read_text()))
                for p in sorted(self.diag.glob(f"memory-{self.session_id}-*.json"))]

    def postmortem(self, timeout: float = 15.0) -> tuple[Path, dict[str, object]]:
        """The session's complete postmortem, once the watchdog has written it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(p, d) for p, d in self.dumps()
                     if d["trigger"] == "host-died" and d["collectionComplete"]]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no postmortem in {self.diag}"
            time.sleep(0.05)

    def segments(self) -> list[str]:
        return sorted(p.name for p in Path("/dev/shm").glob(f"watchdog_core-{self.session_id}-*"))


@pytest.fixture
def kernels(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start kernels; at the end every kernel and watchdog is gone, every segment too.
    Asked for after ``memory_cgroup``, so it ends first and the cgroup is empty then."""
    started: list[Kernel] = []

    def start(**kwargs: object) -> Kernel:
        kernel = Kernel(tmp_path, tmp_path / "diag", **kwargs)  # type: ignore[arg-type]
        started.append(kernel)
        return kernel.start()

    yield start
    for kernel in started:
        kernel.close()
        _wait_for_watchdogs(kernel)
        for name in kernel.segments():  # a failed test's leftovers only
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")


def _wait_for_watchdogs(kernel: Kernel) -> None:
    """Until the kernel's watchdogs have ended (after their postmortem, if any) and its
    cgroup, if it has one, is empty; what lingers past 10 s is killed."""
    deadline = time.monotonic() + 10
    while pids := _watchdog_pids(kernel.session_id) + _cgroup_pids(kernel.cgroup):
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.05)


def _watchdog_pids(session_id: str) -> list[int]:
    """The watchdog processes of this session (the kernel's id is unique to the test)."""
    wanted = f"watchdog_core-{session_id}-".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if b"watchdog_core._watchdog" in argv and any(
                        arg.startswith(wanted) for arg in argv):
                    pids.append(int(proc.name))
    return pids


def _cgroup_pids(cgroup: Path | None) -> list[int]:
    if cgroup is None:
        return []
    return [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]


def assert_no_source_in_files(directory: Path, *extra: Path) -> None:
    for path in [*directory.rglob("*"), *extra]:
        if path.is_file():
            assert SOURCE_SECRET.encode() not in path.read_bytes(), path


# -- real kernels --------------------------------------------------------------------------


@needs_kernel
@pytest.mark.cgroup
def test_an_oom_killed_kernel_is_reported_once_by_its_restart(memory_cgroup, kernels) -> None:
    kernel = kernels(cgroup=memory_cgroup)
    load = kernel.execute("%load_ext watchdog_core")
    assert load.status == "idle" and load.error is None
    assert "watchdog-core" not in load.output  # a new kernel id: nothing to report
    kernel.execute("x = 1")
    kernel.execute("y = [x] * 1000")
    balloon = kernel.execute_until_death(BALLOON)
    assert balloon.execution_count == 4
    path, dump = kernel.postmortem()
    exit_ = dump["host"]["exit"]  # type: ignore[index]
    assert exit_["kind"] == "oom-killed", exit_  # type: ignore[index]
    assert dump["lastActivity"] == "cell:In[4]"
    assert dump["session"]["cellsRun"] == 3  # type: ignore[index]
    assert dump["session"]["executionCount"] == 4  # type: ignore[index]
    assert_no_source_in_files(kernel.diag)

    kernel.restart()  # the same kernel id, the same connection file
    load = kernel.execute("%load_ext watchdog_core")
    lines = [line for line in load.output.splitlines() if line.startswith("watchdog-core:")]
    assert len(lines) == 1, load.output
    assert "OOM-killed (SIGKILL" in lines[0]
    assert "while running In[4]" in lines[0]
    assert str(path) in lines[0]
    assert " of 200 MiB (cgroup-v1)" in lines[0] or " of 200 MiB (cgroup-v2)" in lines[0]

    # Loaded again, reloaded: no second report, and the session goes on.
    again = kernel.execute("%load_ext watchdog_core\n"
                           "import watchdog_core\n"
                           "watchdog_core.load_ipython_extension(get_ipython())")
    assert "watchdog-core:" not in again.output and again.error is None
    reloaded = kernel.execute("%reload_ext watchdog_core")
    assert "watchdog-core:" not in reloaded.output and reloaded.error is None
    assert len(kernel.segments()) == 1

    # A clean shutdown of the restarted kernel leaves no postmortem: still one, reported.
    kernel.km.shutdown_kernel(now=False)
    assert not kernel.km.is_alive()
    _wait_for_watchdogs(kernel)
    assert [d["trigger"] for _, d in kernel.dumps()].count("host-died") == 1
    assert kernel.segments() == []
    assert_no_source_in_files(kernel.diag)


@needs_kernel
@pytest.mark.cgroup
def test_a_rise_to_hard_is_one_line_in_the_running_cell(memory_cgroup, kernels) -> None:
    # hard at 50% of the cgroup's 200 MiB, critical far above where the cells stop.
    kernel = kernels(cgroup=memory_cgroup, env={
        "WATCHDOG_CORE_SOFT": "0.45", "WATCHDOG_CORE_HARD": "0.5",
        "WATCHDOG_CORE_CRITICAL": "0.95"})
    kernel.execute("%load_ext watchdog_core")
    setup = kernel.execute(
        "import time, watchdog_core, watchdog_core.jupyter as ext\n"
        "from watchdog_core import PressureLevel\n"
        "wd = watchdog_core.start_watchdog()\n"  # the extension's handle, returned quietly
        "def grow(chunks):\n"
        "    while wd.level < PressureLevel.HARD:\n"
        "        chunks.append(bytearray(b'\\x01') * (4 << 20))\n"
        "        time.sleep(0.05)\n"
        "def wait_for(condition, seconds=10):\n"
        "    deadline = time.monotonic() + seconds\n"
        "    while not condition() and time.monotonic() < deadline:\n"
        "        time.sleep(0.02)\n"
        "    return condition()\n"
        "print(wd.session_id)")
    assert setup.error is None and setup.output.strip() == kernel.session_id

    # Grow to hard and hold there a while after the warning: one line, in this cell.
    first = kernel.execute(
        f"# {SOURCE_SECRET}\n"
        "held = []\n"
        "grow(held)\n"
        "assert wait_for(lambda: ext._watch.warnings == 1)\n"
        "time.sleep(1.5)  # still hard: no second line\n"
        "print(wd.level.name, ext._watch.warnings)")
    assert first.error is None, first.error
    assert first.streams["stdout"].split() == ["HARD", "1"]
    warned = [line for line in first.streams["stderr"].splitlines()
              if line.startswith("watchdog-core: memory pressure")]
    assert len(warned) == 1, first.output
    assert warned[0].startswith("watchdog-core: memory pressure hard during In[")
    assert " of 200 MiB (" in warned[0]
    assert "; dump " + str(kernel.diag) in warned[0]  # the hard dump, named

    # The fall is silent; the next rise is told again, in the cell running then.
    fall = kernel.execute("held.clear()\n"
                          "assert wait_for(lambda: wd.level == PressureLevel.NORMAL)")
    assert fall.error is None, fall.error
    assert "watchdog-core" not in fall.output
    second = kernel.execute("again = []\n"
                            "grow(again)\n"
                            "assert wait_for(lambda: ext._watch.warnings == 2)\n"
                            "time.sleep(0.5)")
    assert second.error is None, second.error
    warned = [line for line in second.streams["stderr"].splitlines()
              if line.startswith("watchdog-core: memory pressure")]
    assert len(warned) == 1, second.output
    assert f"during In[{second.execution_count}]" in warned[0]

    segment = Path("/dev/shm", kernel.segments()[0])
    assert_no_source_in_files(kernel.diag, segment)
    kernel.execute("again.clear(); del held, again")


@needs_kernel
def test_loading_twice_is_harmless_and_unload_ends_the_session_cleanly(kernels) -> None:
    import psutil

    kernel = kernels()
    kernel.execute("%load_ext watchdog_core")
    twice = kernel.execute("%load_ext watchdog_core\n"
                           "import watchdog_core\n"
                           "watchdog_core.load_ipython_extension(get_ipython())")
    assert twice.error is None and "watchdog-core" not in twice.output
    (watchdog,) = psutil.Process(kernel.pid).children()  # one session, one watchdog
    assert len(kernel.segments()) == 1
    marked = kernel.execute("wd = watchdog_core.start_watchdog()\n"
                            "print(wd.session_id, wd.enabled)")
    assert marked.streams["stdout"].split() == [kernel.session_id, "True"]

    unload = kernel.execute("%unload_ext watchdog_core\nprint(wd.enabled)")
    assert unload.error is None and unload.streams["stdout"].split() == ["False"]
    # stop() has ended the watchdog and removed the segment: nobody is left to write a
    # postmortem, and nothing is left to recover.
    assert not watchdog.is_running()
    assert kernel.segments() == []
    assert psutil.Process(kernel.pid).children() == []
    kernel.execute("y = 2")
    kernel.execute_until_death("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert kernel.dumps() == []
    assert not [p for p in kernel.diag.iterdir() if p.name.startswith(".crash-")]


@needs_kernel
@pytest.mark.parametrize("loaded", ["%load_ext", "at startup"])
def test_a_killed_kernel_is_reported_by_its_restart(kernels, loaded: str) -> None:
    """No cgroup, no limit: a kernel SIGKILLed in a cell. Loaded at startup (a profile's
    extensions, here `--ext`), the report waits for the first cell run."""
    at_startup = loaded == "at startup"
    kernel = kernels(options=("--ext=watchdog_core",) if at_startup else ())
    first = kernel.execute("x = 1" if at_startup else "%load_ext watchdog_core")
    assert first.error is None and "watchdog-core" not in first.output
    kernel.execute("y = 2")
    assert len(kernel.segments()) == 1
    kernel.execute_until_death("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    path, dump = kernel.postmortem()
    assert dump["lastActivity"] == "cell:In[3]"
    assert dump["host"]["exit"]["kind"] == "killed"  # type: ignore[index]
    assert dump["session"]["cellsRun"] == (3 if at_startup else 2)  # type: ignore[index]

    kernel.restart()
    report = kernel.execute("z = 3" if at_startup else "%load_ext watchdog_core")
    assert report.streams["stdout"].startswith(
        "watchdog-core: the previous kernel was killed (SIGKILL")
    assert "while running In[3]" in report.output and str(path) in report.output
    assert report.output.count("\n") == 1
    assert "watchdog-core" not in kernel.execute("z = 4").output


# -- the lines, from dumps as docs/diagnostics.md describes them ----------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("kernel-3f2b1c1e-9d2a-4c55-8e0e-1d2f3a4b5c6d.json",
     "kernel-3f2b1c1e-9d2a-4c55-8e0e-1d2f3a4b5c6d"),
    ("/run/user/0/jupyter/kernel-abc.json", "kernel-abc"),
    ("my notebook (1).json", "kernel-my-notebook-1"),
    ("kernel-v2-1234é.json", "kernel-v2-1234"),
    ("..json", None),
    ("", None),
    ("kernel-" + "x" * 80 + ".json", "kernel-" + "x" * 57),
])
def test_session_id_from_the_connection_file(name: str, expected: str | None) -> None:
    from watchdog_core._config import validate_session_id

    got = session_id_for(name)
    assert got == expected
    if got is not None:
        assert validate_session_id(got) == got


def test_the_death_line_says_how_where_how_much_and_which_file() -> None:
    doc = {"trigger": "host-died", "lastActivity": "cell:In[12]",
           "memory": {"rss": 190 << 20, "heapLimit": 200 << 20, "limitSource": "cgroup-v2"},
           "host": {"exit": {"kind": "oom-killed", "signal": "SIGKILL",
                             "confidence": "certain"}}}
    assert death_line(doc, "/d/memory-k-1.json") == (
        "watchdog-core: the previous kernel was OOM-killed (SIGKILL, certain) while running "
        "In[12], at 190 MiB of 200 MiB (cgroup-v2); postmortem /d/memory-k-1.json")
    idle = {"lastActivity": "idle:after-In[3]", "memory": {"rss": None},
            "host": {"exit": {"kind": "exited", "exception": "MemoryError",
                              "confidence": "likely"}}}
    assert death_line(idle, "/p") == (
        "watchdog-core: the previous kernel exited (uncaught MemoryError, likely) while "
        "idle after In[3], before its memory was first sampled; postmortem /p")
    assert death_line({}, "/p") == "watchdog-core: the previous kernel died, before its " \
        "memory was first sampled; postmortem /p"


def test_the_pressure_line() -> None:
    info = {"level": "critical", "previous": "hard", "ratio": 0.85, "rss": 170 << 20,
            "limit": 200 << 20, "limitSource": "cgroup-v1", "secondsToLimit": 3.2,
            "dump": "/d/memory-k-2.json"}
    assert pressure_line(info, "In[7]") == (
        "watchdog-core: memory pressure critical during In[7]: 170 MiB of 200 MiB (85%, "
        "cgroup-v1), ~3 s to the limit; dump /d/memory-k-2.json")
    assert pressure_line({"level": "hard", "secondsToLimit": float("nan")}, "") == (
        "watchdog-core: memory pressure hard")
