"""Readings of the host process, cheap enough for every sample (docs/design.md).

On Linux one read of /proc/<pid>/status gives RSS, anonymous RSS, VMS, data
size, swap and threads; that is far cheaper than one psutil call per figure
and keeps the watchdog under 1 % of a core. Elsewhere psutil supplies what it
can. USS (a walk of every mapping) stalls a large host's page faults, so it is
read only at dump time, in :func:`expensive_sample`.
"""

from __future__ import annotations

import os
import time

from . import _limits, _procfs
from ._attribution import read_proc_stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    import psutil

    from ._tree import Tree


class HostSample:
    """One sample of the host; bytes unless named otherwise."""

    __slots__ = ("t", "wall_ns", "rss", "rss_anon", "vms", "data", "swap", "threads",
                 "alive", "dying", "leader_gone", "children_rss")

    def __init__(self) -> None:
        self.t = time.monotonic()
        self.wall_ns = time.time_ns()
        self.rss = self.rss_anon = self.vms = self.data = self.swap = 0
        self.threads = 0
        self.children_rss = 0
        self.alive = True
        # The kernel is tearing the host down: its figures are no reading of the host
        # (a large address space takes a second to free, with VmRSS already gone).
        self.dying = False
        # The main thread exited (pthread_exit) while others run on: the process lives,
        # but the main thread's exit status in /proc is not the process's.
        self.leader_gone = False


class HostProbe:
    """Reads one host process; built once, called every interval."""

    def __init__(self, pid: int, *, exclude_pids: set[int] | None = None,
                 include_children: bool = False, root: str = "/",
                 tree: Tree | None = None) -> None:
        self.pid = pid
        self.root = root
        # ``watchdog-core run``'s tree: its descendants, and its cgroup when it has one.
        self.tree = tree
        self.include_children = include_children or tree is not None
        self.exclude_pids = exclude_pids or set()
        self._status_path = os.path.join(root, f"proc/{pid}/status")
        self._proc_status = os.path.exists(self._status_path)
        # psutil only where /proc cannot say (another OS; a tree's children): a watchdog
        # that never needs it never loads it (docs/performance.md).
        self._psutil: psutil.Process | None = None
        self._psutil_tried = False
        # /proc/<pid>/statm, kept open for ``resident``: one pread a glance, no open.
        self._statm_fd: int | None = None
        # The thread read instead of the main one once that ended alone (pthread_exit):
        # the zombie leader's own files say nothing of the process any more.
        self.live_tid = 0

    def sample(self) -> HostSample:
        s = HostSample()
        if self._proc_status:
            fields = _status_fields(self._status_path)
            if not fields:
                s.alive = False
                return s
            if "VmRSS" not in fields or fields.get("State", 0) in _ENDED_STATES:
                # The main thread is gone: the whole process is being torn down, unless
                # only that thread ended (pthread_exit) and others run on.
                other = self._live_thread_fields()
                if other is None:
                    s.dying = True  # its memory is detached, or it is a zombie already
                    return s
                (self.live_tid, fields), s.leader_gone = other, True
            s.rss = fields["VmRSS"]
            s.rss_anon = fields.get("RssAnon", s.rss)
            s.vms = fields.get("VmSize", 0)
            s.data = fields.get("VmData", 0)
            s.swap = fields.get("VmSwap", 0)
            s.threads = fields.get("Threads", 0)
        elif (process := self._process) is not None:
            import psutil

            try:
                with process.oneshot():
                    mem = process.memory_info()
                    s.rss = s.rss_anon = mem.rss
                    s.vms = mem.vms
                    s.threads = process.num_threads()
            except psutil.Error:
                s.alive = False
                return s
        if self.tree is not None:
            s.children_rss = self.tree.sample()
            usage = self.tree.usage()
            if usage is not None:  # the tree's own cgroup: shared pages counted once
                s.rss, s.rss_anon = usage
                return s
        elif self.include_children:
            s.children_rss = self._children_rss()
        s.rss += s.children_rss
        s.rss_anon += s.children_rss
        return s

    def resident(self) -> int | None:
        """The host's RSS alone, from one read of ``/proc/<pid>/statm``: the cheap glance
        between two samples. None where that cannot stand for ``sample().rss`` (a tree,
        children included, no /proc) or cannot be read."""
        fd = self._statm_fd
        if fd is None:
            fd = -1
            if self._proc_status and not self.include_children:
                try:
                    fd = os.open(os.path.join(self.root, f"proc/{self.pid}/statm"),
                                 os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    pass
            self._statm_fd = fd
        if fd < 0:
            return None
        try:
            fields = os.pread(fd, 128, 0).split()
            resident = int(fields[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):  # gone: the pidfd tells the death
            return None
        # A zombie main thread's statm is all zeros, though the process may live on
        # (pthread_exit): no figure then, rather than one that always looks like a move.
        return resident or None

    def close(self) -> None:
        if self._statm_fd is not None and self._statm_fd >= 0:
            os.close(self._statm_fd)
        self._statm_fd = None

    @property
    def measure(self) -> str:
        """What ``rss`` measures: ``process``, ``tree-rss`` or ``cgroup`` (``_tree``)."""
        if self.tree is not None:
            return self.tree.measure
        return "tree-rss" if self.include_children else "process"

    def _live_thread_fields(self) -> tuple[int, dict[str, int]] | None:
        """The status of another thread that still has the process's memory and is not
        exiting itself, or None. A process killed as a whole (SIGKILL, the OOM killer)
        often has its main thread a zombie while the others are still on their way out:
        that is a death, not a main thread that ended alone (pthread_exit), and taking it
        for one would distrust the zombie's exit status (seen with 256 hosts SIGKILLed at
        once: a fifth of their postmortems said "unknown")."""
        task_dir = os.path.join(self.root, f"proc/{self.pid}/task")
        try:
            tids = os.listdir(task_dir)
        except OSError:
            return None
        for tid in tids:
            if tid == str(self.pid):
                continue
            fields = _status_fields(os.path.join(task_dir, tid, "status"))
            if "VmRSS" not in fields or fields.get("State", 0) in _ENDED_STATES:
                continue
            if (fields.get("SigPnd", 0) | fields.get("ShdPnd", 0)) & _SIGKILL_BIT:
                continue  # killed with the rest, not yet on its way out
            stat = read_proc_stat(self.pid, self.root, tid=int(tid))
            if stat is not None and not stat.dying:
                return int(tid), fields
        return None

    @property
    def _process(self) -> psutil.Process | None:
        """The host through psutil, made the first time it is needed."""
        if not self._psutil_tried:
            self._psutil_tried = True
            import psutil

            try:
                self._psutil = psutil.Process(self.pid)
            except psutil.Error:
                self._psutil = None
        return self._psutil

    def _children_rss(self) -> int:
        process = self._process
        if process is None:
            return 0
        import psutil

        total = 0
        try:
            children = process.children(recursive=True)
        except psutil.Error:
            return 0
        for child in children:
            if child.pid in self.exclude_pids:
                continue
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total

    def expensive_sample(self) -> dict[str, int | float | None]:
        """USS, fds, CPU seconds: for dumps only (they cost the host)."""
        if self._proc_status:
            return _proc_expensive(self.root, self.pid)
        out: dict[str, int | float | None] = {"uss": None, "fds": None, "cpuSeconds": None}
        process = self._process
        if process is None:
            return out
        import psutil

        try:
            out["uss"] = process.memory_full_info().uss
        except (psutil.Error, AttributeError, OSError):
            pass
        try:
            out["fds"] = process.num_fds()
        except (psutil.Error, AttributeError, OSError):
            pass
        try:
            cpu = process.cpu_times()
            out["cpuSeconds"] = round(cpu.user + cpu.system, 3)
        except (psutil.Error, OSError):
            pass
        return out

    def cmdline(self) -> list[str]:
        if self._proc_status:
            try:
                with open(os.path.join(self.root, f"proc/{self.pid}/cmdline"), "rb") as f:
                    raw = f.read()
            except OSError:
                return []
            return split_cmdline(raw.decode("utf-8", "surrogateescape"))
        process = self._process
        if process is None:
            return []
        import psutil

        try:
            return list(process.cmdline())
        except (psutil.Error, OSError):
            return []


def split_cmdline(data: str) -> list[str]:
    """/proc/<pid>/cmdline as argv, the way psutil splits it: on NULs, or on spaces for
    a process that rewrote its own (setproctitle leaves "name: worker --token x" with
    no NUL between words; redaction needs the words apart)."""
    if not data:
        return []
    sep = "\0" if data.endswith("\0") else " "
    if data.endswith(sep):
        data = data[:-1]
    args = data.split(sep)
    if sep == "\0" and len(args) == 1 and " " in data:
        args = data.split(" ")
    return args


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_expensive(root: str, pid: int) -> dict[str, int | float | None]:
    """USS (the private pages of smaps_rollup, Linux 4.14+, else of smaps), open fds and
    CPU seconds from /proc: what psutil reads, without loading it."""
    proc = os.path.join(root, f"proc/{pid}")
    out: dict[str, int | float | None] = {"uss": None, "fds": None, "cpuSeconds": None}
    # smaps_rollup fails for some live processes (ESRCH, ENOENT): psutil falls back to
    # the full smaps then, and so do we.
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(os.path.join(proc, name), "rb") as f:
                out["uss"] = sum(int(line.split()[1]) * 1024 for line in f
                                 if line.startswith((b"Private_Clean:", b"Private_Dirty:",
                                                     b"Private_Hugetlb:")))
            break
        except (OSError, ValueError, IndexError):
            continue
    try:
        out["fds"] = len(os.listdir(os.path.join(proc, "fd")))
    except OSError:
        pass
    stat = read_proc_stat(pid, root)
    if stat is not None:
        out["cpuSeconds"] = round(stat.cpu_ticks / _CLOCK_TICKS, 3)
    return out


_STATUS_KEYS = frozenset({b"VmRSS", b"RssAnon", b"VmSize", b"VmData", b"VmSwap", b"Threads",
                          b"State", b"SigPnd", b"ShdPnd"})
_SIGNAL_MASKS = frozenset({b"SigPnd", b"ShdPnd"})  # pending signals, in hex
_SIGKILL_BIT = 1 << (9 - 1)  # SIGKILL is 9 on every Linux architecture
_ENDED_STATES = frozenset({ord("Z"), ord("X")})  # State: as the first letter's code


def _status_fields(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    text = _procfs.read(path)
    if text is None:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(b":")
        if key not in _STATUS_KEYS:
            continue
        if key == b"State":
            out["State"] = rest.lstrip()[0] if rest.strip() else 0  # the letter's code
            continue
        if key in _SIGNAL_MASKS:
            try:
                out[key.decode()] = int(rest.strip() or b"0", 16)
            except ValueError:
                pass
            continue
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        value = int(parts[0])
        if len(parts) > 1 and parts[1] == b"kB":
            value *= 1024
        out[key.decode()] = value
    return out


class SystemProbe:
    """Machine-wide figures: RAM, MemAvailable, PSI, the host's cgroup and rlimits."""

    def __init__(self, host_pid: int, root: str = "/") -> None:
        self.host_pid = host_pid
        # Whose /proc files say the host's cgroups and rlimits: the process's, or a live
        # thread's once the main thread ended alone (its cgroup then reads as "/").
        self._proc: int | str = host_pid
        self.root = root
        self._linux = os.path.exists(os.path.join(root, "proc/meminfo"))
        self._rlimits: dict[str, int] = {}
        self._rlimits_at = -1e9
        self._cgroup_limits: list[_limits.CgroupLimit] | None = None
        self._cgroup_psi: str | None = None
        self._cgroups_at = -1e9

    def meminfo(self) -> dict[str, int]:
        if self._linux:
            return _limits.meminfo(self.root)
        import psutil

        vm = psutil.virtual_memory()
        return {"MemTotal": vm.total, "MemAvailable": vm.available}

    def cgroups(self) -> list[_limits.LimitPair]:
        if not self._linux:
            return []
        # Which cgroup the host is in and what its limits are is re-read every 2 s (a
        # host can be moved, a limit changed); usage is read every sample, and only
        # for cgroups that have a limit.
        now = time.monotonic()
        if self._cgroup_limits is None or now - self._cgroups_at > 2.0:
            self._cgroups_at = now
            layout = (_limits.cgroup_membership(self.root, self._proc),
                      _limits.mounts(self.root, self._proc))
            self._cgroup_limits = _limits.cgroup_limits(self.root, self._proc, layout)
            self._cgroup_psi = _limits.cgroup_psi_path(self.root, layout)
        return _limits.cgroup_pairs(limits=self._cgroup_limits)

    def follow_thread(self, tid: int) -> None:
        """Read the host's cgroups and rlimits through its thread ``tid`` from now on: the
        main thread has ended and the process lives on in its other threads."""
        if tid and self._proc != f"{self.host_pid}/task/{tid}":
            self._proc = f"{self.host_pid}/task/{tid}"
            self._cgroups_at = self._rlimits_at = -1e9

    def expire(self) -> None:
        """Read the host's cgroups and their limits afresh at the next sample: its memory
        moved, and a limit lowered or a move in the last 2 s must not be graded by the
        figures from before."""
        self._cgroups_at = -1e9

    @property
    def cgroup_dirs(self) -> tuple[str, ...]:
        """The directories of the cgroups that limit the host, as last read: they change
        when the host is moved to another cgroup."""
        return tuple(limit.directory for limit in self._cgroup_limits or ())

    def rlimits(self) -> dict[str, int]:
        # rlimits rarely change; /proc/<pid>/limits is re-read every 5 s
        now = time.monotonic()
        if now - self._rlimits_at > 5.0:
            self._rlimits_at = now
            if self._linux:
                self._rlimits = _limits.rlimits(self.root, self._proc) or self._rlimits
            else:
                self._rlimits = _own_rlimits()
        return self._rlimits

    def psi(self) -> dict[str, float]:
        """Memory PSI avg10: the host's cgroup v2 ``memory.pressure`` where it has one
        (the stalls of its own cgroup), else the machine's /proc/pressure/memory."""
        if self._cgroup_psi:
            found = _limits.psi_memory(self._cgroup_psi)
            if found:
                return found
        return _limits.psi_memory(os.path.join(self.root, "proc/pressure/memory"))


def _own_rlimits() -> dict[str, int]:
    # The watchdog inherited the host's rlimits at spawn: the best figure without /proc.
    import resource

    out = {}
    for key, which in (("as", resource.RLIMIT_AS), ("data", resource.RLIMIT_DATA)):
        soft, _ = resource.getrlimit(which)
        if 0 < soft < _limits.UNLIMITED:
            out[key] = soft
    return out
