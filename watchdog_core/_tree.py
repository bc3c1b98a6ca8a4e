"""The process tree ``watchdog-core run`` watches: its child and all the child starts
(docs/run.md).

Two ways to measure the tree's memory, and a dump says which it used
(``memory.measure``):

* ``cgroup``: the tree in a memory cgroup of its own, which ``run`` creates where it
  may (root on cgroup v1; a delegated cgroup v2 subtree whose only process is ``run``,
  as under ``systemd-run --scope``). Its usage, less the inactive file cache, is the
  tree's memory, shared pages counted once, and its OOM counter counts the tree's
  kills and nobody else's.
* ``tree-rss``: the RSS of every process in the tree, summed. A preforked server's
  workers share their parent's pages copy-on-write, and each worker's RSS counts
  them again, so the sum overstates.

A process of the tree that the kernel kills or that crashes while the child lives is
a *descendant death*: each descendant seen at a sample gets a pidfd (up to
MAX_PIDFDS at once), which turns readable when it exits; its wait status comes from
the zombie's stat or the pidfd, or from ``run``'s own ``waitpid`` for the orphans it
adopted as subreaper.
"""

from __future__ import annotations

import os
import signal

from . import _attribution, _limits
from ._death import CRASH_SIGNALS, exit_status

MAX_PIDFDS = 256  # descendants watched for their death at once; beyond, only measured
TREE_CGROUP_PREFIX = "watchdog-core-run-"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class TreeCgroup:
    """A memory cgroup made for one ``run``'s tree, and removed after it."""

    __slots__ = ("version", "directory", "_made")

    def __init__(self, version: str, directory: str, made: list[str]) -> None:
        self.version = version  # "v1" or "v2"
        self.directory = directory
        self._made = made  # directories created, innermost last (removed in reverse)

    @classmethod
    def create(cls, name: str) -> tuple[TreeCgroup | None, str]:
        """A new cgroup beside ``run``'s own for the tree, or (None, why not)."""
        membership = _limits.cgroup_membership()
        all_mounts = _limits.mounts()
        if "v1" in membership:
            mount = next((m for m in all_mounts if m.fstype == "cgroup"
                          and "memory" in m.options), None)
            if mount is not None:
                return cls._create_v1(mount, membership["v1"], name)
        if "v2" in membership:
            mount = next((m for m in all_mounts if m.fstype == "cgroup2"), None)
            if mount is not None:
                return cls._create_v2(mount, membership["v2"], name)
        return None, "no memory cgroup hierarchy is mounted"

    @classmethod
    def _create_v1(cls, mount: _limits.Mount, path: str,
                   name: str) -> tuple[TreeCgroup | None, str]:
        own = _limits.cgroup_dir("/", mount, path)
        if own is None:
            return None, "run's own memory cgroup is not visible"
        sweep(own)
        directory = os.path.join(own, name)
        try:
            os.mkdir(directory, 0o755)
        except OSError as exc:
            return None, f"cannot create a memory cgroup in {own}: {exc.strerror}"
        return cls("v1", directory, [directory]), ""

    @classmethod
    def _create_v2(cls, mount: _limits.Mount, path: str,
                   name: str) -> tuple[TreeCgroup | None, str]:
        """cgroup v2 forbids processes in a cgroup whose children get controllers, so
        ``run`` first moves itself into a leaf of its own, then enables the memory
        controller for its cgroup's children. Only where ``run`` is alone in its cgroup
        (a delegated scope): it never moves processes it did not start."""
        own = _limits.cgroup_dir("/", mount, path)
        top = os.path.normpath(mount.point)
        if own is None or own == top:
            return None, "run is in the root cgroup, which it does not reorganise"
        controllers = (_read(os.path.join(own, "cgroup.controllers")) or "").split()
        if "memory" not in controllers:
            return None, f"the memory controller is not delegated to {own}"
        procs = _attribution.cgroup_pids(own)
        if procs is None or procs - {os.getpid()}:
            return None, f"other processes share run's cgroup {own}"
        sweep(own)
        made: list[str] = []
        try:
            runner = os.path.join(own, name + "-self")
            os.mkdir(runner, 0o755)
            made.append(runner)
            _write(os.path.join(runner, "cgroup.procs"), str(os.getpid()))
            subtree = _read(os.path.join(own, "cgroup.subtree_control")) or ""
            if "memory" not in subtree.split():
                _write(os.path.join(own, "cgroup.subtree_control"), "+memory")
            directory = os.path.join(own, name)
            os.mkdir(directory, 0o755)
            made.append(directory)
        except OSError as exc:
            cgroup = cls("v2", own, made)
            cgroup.remove()
            return None, f"cannot create a memory cgroup in {own}: {exc.strerror or exc}"
        return cls("v2", directory, made), ""

    def add(self, pid: int) -> None:
        _write(os.path.join(self.directory, "cgroup.procs"), str(pid))

    def pids(self) -> set[int] | None:
        return _attribution.cgroup_pids(self.directory)

    def usage(self) -> tuple[int, int] | None:
        """(working set, anonymous memory) of the tree now, bytes."""
        return _limits.cgroup_memory(self.directory, v2=self.version == "v2")

    def oom_kills(self) -> int:
        """The OOM kills the kernel counted in the tree's cgroup (it was made empty)."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        return _attribution.counter(os.path.join(self.directory, name), "oom_kill") or 0

    def remove(self) -> None:
        """Move whatever is left (daemons the tree started) to ``run``'s own cgroup,
        then remove what was made. A cgroup still busy stays; it costs nothing."""
        parent = os.path.dirname(self.directory)
        for pid in sorted(self.pids() or ()):
            try:
                _write(os.path.join(parent, "cgroup.procs"), str(pid))
            except OSError:
                pass
        for directory in reversed(self._made):
            if directory.endswith("-self"):  # run itself goes back where it was
                try:
                    _write(os.path.join(os.path.dirname(directory), "cgroup.procs"),
                           str(os.getpid()))
                except OSError:
                    pass
            try:
                os.rmdir(directory)
            except OSError:
                pass


def sweep(directory: str) -> None:
    """Remove the empty cgroups earlier runs left in ``directory``: a run that was
    SIGKILLed could not remove its own. Only those of a run no longer alive (the pid in
    the name), so a run between its mkdir and its child's move keeps its cgroup."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(TREE_CGROUP_PREFIX):
            continue
        pid = name[len(TREE_CGROUP_PREFIX) :].removesuffix("-self")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.rmdir(os.path.join(directory, name))  # EBUSY while processes remain
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def oom_group_warning() -> str | None:
    """One line when an OOM kill in ``run``'s cgroup would kill ``run`` with the tree:
    cgroup v2 ``memory.oom.group`` set on its cgroup or an ancestor (the kubelet sets it
    on every container since 1.28)."""
    membership = _limits.cgroup_membership()
    mount = next((m for m in _limits.mounts() if m.fstype == "cgroup2"), None)
    if "v2" not in membership or mount is None:
        return None
    directory = _limits.cgroup_dir("/", mount, membership["v2"])
    top = os.path.normpath(mount.point)
    while directory is not None and len(directory) >= len(top):
        if (_read(os.path.join(directory, "memory.oom.group")) or "").strip() == "1":
            return (f"memory.oom.group is 1 in {directory}: an OOM kill there kills every "
                    "process in it, watchdog-core run included, so no postmortem can be "
                    "written for it (docs/run.md)")
        if directory == top:
            break
        directory = os.path.dirname(directory)
    return None


class Descendant:
    """One process of the tree, as last seen at a sample."""

    __slots__ = ("pid", "name", "start_ticks", "pidfd", "rss")

    def __init__(self, pid: int, name: str, start_ticks: int, pidfd: int) -> None:
        self.pid, self.name, self.start_ticks, self.pidfd = pid, name, start_ticks, pidfd
        self.rss: int | None = None


class DescendantDeath:
    """How a descendant ended: ``status`` is its wait status when one could be read."""

    __slots__ = ("pid", "name", "rss", "status", "source")

    def __init__(self, pid: int, name: str, rss: int | None, status: int | None,
                 source: str) -> None:
        self.pid, self.name, self.rss = pid, name, rss
        self.status, self.source = status, source

    @property
    def signal(self) -> int:
        return self.status & 0x7F if self.status is not None else 0

    @property
    def worth_a_dump(self) -> bool:
        """Killed outright (SIGKILL: the OOM killer, a supervisor's timeout) or crashed.
        A SIGTERM or an exit code is a process ending as its parent asked."""
        sig = self.signal
        return sig == signal.SIGKILL or sig in CRASH_SIGNALS


class Tree:
    """The descendants of ``run`` (its child, the host, excluded) and their memory."""

    def __init__(self, runner_pid: int, host_pid: int, cgroup: TreeCgroup | None) -> None:
        self.runner_pid, self.host_pid, self.cgroup = runner_pid, host_pid, cgroup
        self.known: dict[int, Descendant] = {}
        self.by_fd: dict[int, Descendant] = {}
        self.new_fds: list[int] = []  # pidfds the loop has not registered yet
        self.reaped: dict[int, int] = {}  # pid -> wait status, of orphans run reaped

    @property
    def measure(self) -> str:
        return "cgroup" if self.cgroup is not None else "tree-rss"

    def usage(self) -> tuple[int, int] | None:
        return self.cgroup.usage() if self.cgroup is not None else None

    def sample(self) -> int:
        """Look at the tree now: new descendants get a pidfd; returns their summed RSS."""
        pids = self._pids()
        total = 0
        for pid in pids:
            if pid in (self.host_pid, self.runner_pid):
                continue
            d = self.known.get(pid)
            if d is None:
                d = self._meet(pid)
                if d is None:
                    continue
            seen = _name_and_rss(pid)
            if seen is not None:  # the name too: a shell's fork has exec'd since
                d.name, d.rss = seen
                total += seen[1]
        self._forget_vanished(pids)
        return total

    def _pids(self) -> set[int]:
        if self.cgroup is not None:
            found = self.cgroup.pids()
            if found is not None:
                return found
        import psutil

        try:
            return {p.pid for p in psutil.Process(self.runner_pid).children(recursive=True)}
        except psutil.Error:
            return set()

    def _meet(self, pid: int) -> Descendant | None:
        stat = _attribution.read_proc_stat(pid)
        if stat is None or stat.ended:
            return None
        pidfd = -1
        if len(self.by_fd) < MAX_PIDFDS and hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                return None  # gone already
        name = (_read(f"/proc/{pid}/comm") or "?").strip()
        d = Descendant(pid, name, stat.start_ticks, pidfd)
        self.known[pid] = d
        if pidfd >= 0:
            self.by_fd[pidfd] = d
            self.new_fds.append(pidfd)
        return d

    def take_new_fds(self) -> list[int]:
        fds, self.new_fds = self.new_fds, []
        return fds

    def ended(self, pidfd: int) -> DescendantDeath | None:
        """The descendant behind ``pidfd`` has exited: how. Its pidfd is closed."""
        d = self.by_fd.pop(pidfd, None)
        if d is None:
            return None
        self.known.pop(d.pid, None)
        status = self.reaped.pop(d.pid, None)
        source = "run"
        if status is None:
            found = exit_status(d.pid, pidfd, d.start_ticks)
            status, source = (found.status, found.source) if found else (None, "")
        os.close(pidfd)
        return DescendantDeath(d.pid, d.name, d.rss, status, source)

    def adopted_ended(self, pid: int, status: int) -> DescendantDeath | None:
        """An orphan ``run`` adopted (as subreaper or PID 1) was reaped by ``run``."""
        d = self.known.get(pid)
        if d is None:
            return None
        if d.pidfd >= 0:  # its pidfd turns readable too: let it carry the news
            self.reaped[pid] = status
            return None
        self.known.pop(pid, None)
        return DescendantDeath(pid, d.name, d.rss, status, "run")

    def _forget_vanished(self, alive: set[int]) -> None:
        """Drop descendants without a pidfd (beyond MAX_PIDFDS) no longer in the tree."""
        for pid in [p for p, d in self.known.items() if d.pidfd < 0 and p not in alive]:
            del self.known[pid]

    def close(self) -> None:
        for fd in self.by_fd:
            try:
                os.close(fd)
            except OSError:
                pass
        self.by_fd.clear()
        if self.cgroup is not None:
            self.cgroup.remove()


def _name_and_rss(pid: int) -> tuple[str, int] | None:
    """(command name, RSS bytes) from one read of /proc/<pid>/stat; None once it has
    ended."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        left, right = raw.index(b"("), raw.rindex(b")")
        fields = raw[right + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            return None  # ended: its memory is gone, the figure before its end stands
        # Field 24 overall, rss in pages, is index 21 after "pid (comm)".
        return raw[left + 1 : right].decode("utf-8", "replace"), int(fields[21]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
