"""Kernel wake-ups (watchdog_core._wakeups) against the real kernel: a real memory cgroup,
a real child that allocates in it on command, a real select.poll. No mocks."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from watchdog_core import _wakeups
from watchdog_core._wakeups import PSI, V1_THRESHOLDS, V2_EVENTS, Wakeups

MB = 1024 * 1024
LIMIT = 200 * MB  # the memory_cgroup fixture's
LONG = 10_000  # ms: a poll that returns before this was woken, not timed out
QUIET = 300  # ms: how long "nothing fires" is watched for

# The child: joins nothing itself (the shell moved it before exec), touches anonymous
# pages on command and answers one line per command.
#   cross T   touch 64 KiB at a time until the cgroup's usage is >= T bytes, then 2 MiB
#             more (the kernel compares usage with the thresholds only every 128 page
#             events per CPU); answer "crossed <monotonic seconds just after the chunk
#             that crossed> <usage then>"
#   free      unmap everything; answer "freed <usage>"
CHILD = r"""
import mmap, os, sys, time
usage_fd = os.open(sys.argv[1] + "/memory.usage_in_bytes", os.O_RDONLY)
def usage():
    return int(os.pread(usage_fd, 64, 0))
maps = []
MARGIN = 2 << 20
print("ready", flush=True)
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "cross":
        target = int(arg[0])
        m = mmap.mmap(-1, max(target - usage(), 0) + (64 << 20))
        maps.append(m)
        now, at, stop = usage(), None, len(m)
        for chunk in range(0, len(m), 1 << 16):
            if chunk >= stop:
                break
            for page in range(chunk, chunk + (1 << 16), 4096):
                m[page] = 1
            if at is None:
                now = usage()
                if now >= target:
                    at, stop = time.monotonic(), chunk + MARGIN
        print("crossed", at, now, flush=True)
    elif cmd == "free":
        for m in maps:
            m.close()
        maps.clear()
        print("freed", usage(), flush=True)
"""


class Child:
    """A process in ``cgroup`` that grows its memory when told to."""

    def __init__(self, cgroup: Path) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh",
             sys.executable, "-c", CHILD, str(cgroup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.ask(None) == ["ready"]

    def ask(self, command: str | None) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the child died"
        return line.split()

    def cross(self, target: int) -> tuple[float, int]:
        """(monotonic seconds just after the crossing, usage then)."""
        word, at, usage = self.ask(f"cross {target}")
        assert word == "crossed"
        return float(at), int(usage)

    def free(self) -> None:
        assert self.ask("free")[0] == "freed"

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def v1_cgroup(memory_cgroup: Path) -> Path:
    if not (memory_cgroup / "memory.usage_in_bytes").exists():
        pytest.skip("the writable memory controller here is cgroup v2; usage thresholds "
                    "are a cgroup v1 feature")
    return memory_cgroup


@pytest.fixture
def child(v1_cgroup: Path) -> Iterator[Child]:
    started = Child(v1_cgroup)
    yield started
    started.end()  # before the cgroup fixture removes the cgroup


@pytest.fixture
def poller() -> select.poll:
    return select.poll()


@pytest.fixture
def wakeups() -> Iterator[list[Wakeups]]:
    made: list[Wakeups] = []
    yield made
    for each in made:
        each.close()


def usage_of(cgroup: Path) -> int:
    return int((cgroup / "memory.usage_in_bytes").read_text())


def wait_for_ours(poller: select.poll, w: Wakeups, timeout_ms: int) -> list[tuple[int, int]]:
    """The events of ``w`` the poller reports within ``timeout_ms``, each drained."""
    events = poller.poll(timeout_ms)
    return [(fd, ev) for fd, ev in events if w.drain(fd, ev)]


def drain_all(poller: select.poll, w: Wakeups) -> None:
    while wait_for_ours(poller, w, 0):
        pass


# -- cgroup v1 usage thresholds ---------------------------------------------------------

@pytest.mark.cgroup
def test_threshold_wakes_a_long_poll_on_crossing_and_not_below(
        v1_cgroup: Path, child: Child, poller: select.poll, wakeups: list[Wakeups]) -> None:
    threshold = 100 * MB
    w = Wakeups(v1_dir=str(v1_cgroup), limit=LIMIT, ratios=(0.5,))
    wakeups.append(w)
    assert w.armed == (V1_THRESHOLDS,), w.describe()
    assert str(threshold) in w.describe()[V1_THRESHOLDS]
    w.register(poller)
    (fd, mask), = w.events.items()
    assert mask == select.POLLIN

    child.cross(60 * MB)  # well below: no crossing, no wake-up
    assert usage_of(v1_cgroup) < threshold
    assert wait_for_ours(poller, w, QUIET) == []

    child.cross(threshold)
    began = time.monotonic()
    woke = wait_for_ours(poller, w, LONG)
    assert woke == [(fd, select.POLLIN)]
    assert time.monotonic() - began < LONG / 1000  # woken, not timed out
    assert usage_of(v1_cgroup) >= threshold
    assert wait_for_ours(poller, w, 0) == []  # drained: the counter was reset

    child.free()  # crossing back down wakes too
    assert wait_for_ours(poller, w, LONG) == [(fd, select.POLLIN)]


@pytest.mark.cgroup
def test_rearm_moves_the_threshold(v1_cgroup: Path, child: Child, poller: select.poll,
                                   wakeups: list[Wakeups]) -> None:
    w = Wakeups(v1_dir=str(v1_cgroup), limit=LIMIT, ratios=(0.5,))  # 100 MB
    wakeups.append(w)
    w.register(poller)
    first = next(iter(w.events))
    w.rearm(LIMIT)  # the same limit: nothing changes
    assert list(w.events) == [first]

    w.rearm(120 * MB)  # now 60 MB
    assert w.armed == (V1_THRESHOLDS,)
    assert str(60 * MB) in w.describe()[V1_THRESHOLDS]
    child.cross(60 * MB)
    assert wait_for_ours(poller, w, LONG), "the new threshold did not fire"
    assert usage_of(v1_cgroup) >= 60 * MB

    w.rearm(300 * MB)  # now 150 MB: crossing the first 100 MB must stay quiet
    drain_all(poller, w)
    child.cross(110 * MB)
    assert usage_of(v1_cgroup) >= 100 * MB
    assert wait_for_ours(poller, w, QUIET) == []

    w.rearm(LIMIT, ratios=(0.6,))  # new ratios: 120 MB
    child.cross(125 * MB)
    assert wait_for_ours(poller, w, LONG)

    w.rearm(None)  # no limit: no thresholds
    assert not w.armed and w.events == {}
    assert w.describe()[V1_THRESHOLDS].startswith("off:")


@pytest.mark.cgroup
def test_close_unregisters_and_closes(v1_cgroup: Path, child: Child,
                                      poller: select.poll) -> None:
    w = Wakeups(v1_dir=str(v1_cgroup), limit=LIMIT, ratios=(0.5, 0.65, 0.8))
    w.register(poller)
    fds = list(w.events)
    assert len(fds) == 1  # one eventfd carries all three thresholds
    w.close()
    assert not w.armed and w.events == {}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    child.cross(110 * MB)
    assert poller.poll(QUIET) == []  # nothing of ours left in the poller
    w.close()  # twice is fine


@pytest.mark.cgroup
def test_for_host_finds_the_hosts_cgroup(v1_cgroup: Path, child: Child, poller: select.poll,
                                         wakeups: list[Wakeups]) -> None:
    w = Wakeups.for_host(child.proc.pid, limit=LIMIT, ratios=(0.5, 0.65, 0.8))
    wakeups.append(w)
    assert V1_THRESHOLDS in w.armed, w.describe()
    state = w.describe()[V1_THRESHOLDS]
    assert f"{v1_cgroup}/memory.usage_in_bytes" in state
    assert all(str(int(LIMIT * r)) in state for r in (0.5, 0.65, 0.8))
    w.register(poller)
    child.cross(100 * MB)
    assert wait_for_ours(poller, w, LONG)


def test_no_cgroup_no_thresholds(tmp_path: Path) -> None:
    w = Wakeups(v1_dir=str(tmp_path), limit=LIMIT, ratios=(0.5,))
    assert not w.armed and w.events == {}
    assert w.describe()[V1_THRESHOLDS].startswith("off: No such file")
    w.rearm(2 * LIMIT)  # a permanent refusal is not tried again
    assert w.describe()[V1_THRESHOLDS].startswith("off: No such file")
    w.close()


def test_foreign_descriptors_are_not_ours() -> None:
    w = Wakeups()
    read, write = os.pipe()
    try:
        assert not w.drain(read, select.POLLIN)
        assert not w.armed and w.describe() == {}
    finally:
        os.close(read)
        os.close(write)
        w.close()


def _run_as_nobody(code: str, *args: str) -> dict[str, object]:
    """Run ``code`` as user nobody after importing what it needs (the interpreter's own
    library may be unreadable to nobody); it prints one JSON line."""
    prelude = ("import json, os, select, sys\nfrom watchdog_core import _wakeups\n"
               "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n")
    done = subprocess.run([sys.executable, "-c", prelude + code, *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.cgroup
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become user nobody")
def test_no_permission_means_no_thresholds_without_raising(v1_cgroup: Path) -> None:
    found = _run_as_nobody(
        "w = _wakeups.Wakeups(v1_dir=sys.argv[1], limit=200 << 20, ratios=(0.5,))\n"
        "w.rearm(300 << 20)\n"
        "print(json.dumps({'armed': w.armed, 'state': w.describe()}))\n"
        "w.close()\n", str(v1_cgroup))
    assert found["armed"] == []
    assert "Permission denied" in found["state"][V1_THRESHOLDS]  # type: ignore[index]


@pytest.mark.cgroup
def test_out_of_descriptors_degrades_then_rearm_retries(v1_cgroup: Path) -> None:
    code = (
        "import resource, json, os, sys\nfrom watchdog_core import _wakeups\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "top = max(int(n) for n in os.listdir('/proc/self/fd'))\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))\n"
        "w = _wakeups.Wakeups(v1_dir=sys.argv[1], limit=200 << 20, ratios=(0.5,))\n"
        "before = [w.armed, w.describe()]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))\n"
        "w.rearm(200 << 20)\n"
        "print(json.dumps([before, [w.armed, w.describe()]]))\n"
        "w.close()\n")
    done = subprocess.run([sys.executable, "-c", code, str(v1_cgroup)], capture_output=True,
                          text=True, timeout=30, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    (armed, state), (armed_after, _) = json.loads(done.stdout)
    assert armed == []
    assert "Too many open files" in state[V1_THRESHOLDS]
    assert armed_after == [V1_THRESHOLDS]  # EMFILE is worth another try


# -- PSI triggers ---------------------------------------------------------------------

PROC_PSI = "/proc/pressure/memory"


def test_psi_trigger_arms_on_the_machine(poller: select.poll,
                                         wakeups: list[Wakeups]) -> None:
    w = Wakeups(psi_path=PROC_PSI)
    wakeups.append(w)
    if PSI not in w.armed:
        pytest.skip(f"no PSI trigger on this machine: {w.describe()[PSI]}")
    assert list(w.events.values()) == [select.POLLPRI]
    w.register(poller)
    # An idle machine stalls for less than 150 ms in 2 s: a POLLERR here would mean the
    # trigger is gone, which must never be the case for the machine's file.
    assert all(not ev & select.POLLERR for _, ev in poller.poll(0))
    assert PSI in w.armed


@pytest.mark.parametrize("trigger", [b"some 150000 1", b"nonsense", b"some 0 2000000"])
def test_psi_trigger_refused_is_no_trigger(trigger: bytes) -> None:
    w = Wakeups(psi_path=PROC_PSI, psi_trigger=trigger)
    assert not w.armed and w.events == {}
    assert w.describe()[PSI].startswith("off: ")
    w.close()


def test_no_psi_file_is_no_trigger(tmp_path: Path) -> None:
    w = Wakeups(psi_path=str(tmp_path / "memory.pressure"))
    assert not w.armed
    assert w.describe()[PSI].startswith("off: No such file")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become user nobody")
def test_psi_as_an_unprivileged_user() -> None:
    """The default trigger's 2 s window is one an unprivileged user may ask for (kernels
    6.5+); an older kernel refuses it, and that is no trigger, not an error."""
    found = _run_as_nobody(
        "w = _wakeups.Wakeups(psi_path='/proc/pressure/memory')\n"
        "print(json.dumps({'armed': w.armed, 'state': w.describe()}))\n")
    if not os.path.exists(PROC_PSI):
        assert found["armed"] == []
    else:
        assert found["armed"] == [PSI] or found["state"][PSI].startswith("off: ")  # type: ignore[index]


# -- cgroup v2: memory.events, and kernfs notifications in general -----------------------

V2_ROOT = Path("/sys/fs/cgroup/unified")


def _v2_mount() -> Path | None:
    """A writable cgroup v2 mount (unified on a hybrid machine)."""
    for candidate in (Path("/sys/fs/cgroup"), V2_ROOT):
        if (candidate / "cgroup.subtree_control").exists() and os.access(candidate, os.W_OK):
            return candidate
    return None


@pytest.fixture
def v2_cgroup() -> Iterator[Path]:
    mount = _v2_mount()
    if mount is None:
        pytest.skip("no writable cgroup v2 hierarchy on this machine")
    path = mount / f"watchdog-core-wakeups-{os.getpid()}-{os.urandom(3).hex()}"
    path.mkdir()
    yield path
    if path.exists():
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)


@pytest.mark.cgroup
def test_memory_events_wake_on_change(v2_cgroup: Path) -> None:
    if not (v2_cgroup / "memory.events").exists():
        pytest.skip("no cgroup v2 memory controller on this machine (its cgroup.controllers "
                    f"says {(v2_cgroup.parent / 'cgroup.controllers').read_text().strip()!r})")
    (v2_cgroup / "memory.max").write_text(str(64 * MB))
    (v2_cgroup / "memory.high").write_text(str(16 * MB))
    w = Wakeups(v2_dirs=[str(v2_cgroup)])
    poller = select.poll()
    try:
        assert w.armed == (V2_EVENTS,), w.describe()
        w.register(poller)
        assert wait_for_ours(poller, w, 0) == []  # read once at open: no stale change
        grow = subprocess.run(
            ["sh", "-c", f'echo $$ > "{v2_cgroup}/cgroup.procs" && exec "$@"', "sh",
             sys.executable, "-c", "b = bytearray(32 << 20); b[::4096] = b'1' * (8 << 10)"],
            timeout=30, check=False)
        assert grow.returncode == 0
        assert wait_for_ours(poller, w, LONG), "going over memory.high changed no event"
    finally:
        w.close()


@pytest.mark.cgroup
def test_kernfs_change_wakes_and_a_removed_cgroup_is_dropped(v2_cgroup: Path) -> None:
    """memory.events' plumbing on a file every v2 cgroup has: cgroup.events turns
    "populated 1" when a process joins; the drain re-reads so the next poll is quiet;
    once the cgroup is removed the descriptor is closed and left out."""
    w = Wakeups()
    poller = select.poll()
    w.register(poller)
    w._add(_wakeups._events_fd(str(v2_cgroup / "cgroup.events")), V2_EVENTS,
           select.POLLPRI)
    fd = next(iter(w.events))
    joined = subprocess.Popen(
        ["sh", "-c", f'echo $$ > "{v2_cgroup}/cgroup.procs" && exec cat'],
        stdin=subprocess.PIPE)
    try:
        assert wait_for_ours(poller, w, LONG) == [(fd, select.POLLPRI | select.POLLERR)]
        assert wait_for_ours(poller, w, 0) == []  # the re-read cleared it
    finally:
        joined.communicate(timeout=30)  # EOF on stdin: cat ends, the cgroup empties
    assert wait_for_ours(poller, w, LONG), "populated 0 woke nothing"
    drain_all(poller, w)
    v2_cgroup.rmdir()
    assert wait_for_ours(poller, w, LONG)
    assert not w.armed and w.events == {}
    assert w.describe()[V2_EVENTS] == "off: its file went away"
    assert poller.poll(0) == []
    w.close()


@pytest.mark.cgroup
def test_psi_trigger_of_a_removed_cgroup_is_dropped(v2_cgroup: Path) -> None:
    pressure = v2_cgroup / "memory.pressure"
    if not pressure.exists():
        pytest.skip("this cgroup v2 hierarchy has no memory.pressure (PSI off)")
    w = Wakeups(psi_path=str(pressure))
    poller = select.poll()
    try:
        if PSI not in w.armed:
            pytest.skip(f"no PSI trigger on a cgroup here: {w.describe()[PSI]}")
        w.register(poller)
        assert wait_for_ours(poller, w, 0) == []
        v2_cgroup.rmdir()
        # POLLERR from now on at every poll: drained once, the trigger is dropped.
        assert wait_for_ours(poller, w, LONG)
        assert not w.armed and poller.poll(0) == []
    finally:
        w.close()
