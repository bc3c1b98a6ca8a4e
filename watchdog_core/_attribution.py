"""Evidence about how the host died: readers only (docs/fault-matrix.md).

The ladder that orders this evidence, the verdict and the steps after a death
are in ``_death``. What can be read, and when:

* ``/proc/<pid>/stat``: the state, the flags, the start time and field 52, the
  exit status. The status is there while the host is a zombie, and already while
  the kernel tears down a host whose memory is detached (``do_exit`` sets it
  before ``exit_mm``; ``vsize`` 0 with ``PF_EXITING`` says the memory is gone).
  A parent that reaps at once (a shell, ``Popen.wait()``) leaves a window of
  microseconds for a small host.
* the pidfd the watchdog holds: ``ioctl(PIDFD_GET_INFO)`` with ``PIDFD_INFO_EXIT``
  returns the wait status once the host has been reaped, whoever reaped it
  (Linux 6.15+; while the host is a zombie the exit bit is not set yet).
* OOM-kill counters that rose since the watchdog started (cgroup v2
  ``memory.events``, cgroup v1 ``memory.oom_control``, ``/proc/vmstat``), whether
  the host had its cgroup to itself, and ``/dev/kmsg``'s "Killed process <pid>"
  lines, which name the victim exactly.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time

from . import _limits, _procfs

PF_EXITING = 0x4  # include/linux/sched.h: the task is in do_exit()

# include/uapi/linux/pidfd.h: _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info), whose
# first published size (PIDFD_INFO_SIZE_VER0) is 64 bytes; exit_code is the s32 at 60.
PIDFD_GET_INFO = (3 << 30) | (64 << 16) | (0xFF << 8) | 11
PIDFD_INFO_EXIT = 1 << 3
_PIDFD_INFO = struct.Struct("<QQ11Ii")


class ProcStat:
    """The fields of /proc/<pid>/stat that say whether and how a process ends."""

    __slots__ = ("state", "flags", "start_ticks", "vsize", "exit_code", "cpu_ticks")

    def __init__(self, state: str, flags: int, start_ticks: int, vsize: int,
                 exit_code: int, cpu_ticks: int) -> None:
        self.state, self.flags, self.start_ticks = state, flags, start_ticks
        self.vsize, self.exit_code = vsize, exit_code
        self.cpu_ticks = cpu_ticks  # utime + stime: of the thread, for a task's stat

    @property
    def ended(self) -> bool:
        """A zombie, or dead: the exit status is in field 52."""
        return self.state in ("Z", "X")

    @property
    def dying(self) -> bool:
        """In do_exit() or a zombie: the host is ending, whatever its figures say."""
        return self.ended or bool(self.flags & PF_EXITING)


def read_proc_stat(pid: int, root: str = "/", *, tid: int = 0) -> ProcStat | None:
    """None when the process (or its thread ``tid``) is gone, or /proc is not there."""
    task = f"proc/{pid}/task/{tid}/stat" if tid else f"proc/{pid}/stat"
    raw = _procfs.read(os.path.join(root, task))
    if raw is None:
        return None
    try:
        fields = raw[raw.rindex(b")") + 2 :].split()
        # Field n overall is index n - 3 after "pid (comm)": state 3, flags 9,
        # utime 14, stime 15, starttime 22, vsize 23, exit_code 52.
        return ProcStat(fields[0].decode("ascii", "replace"), int(fields[6]), int(fields[19]),
                        int(fields[20]), int(fields[49]) if len(fields) > 49 else 0,
                        int(fields[11]) + int(fields[12]))
    except (ValueError, IndexError):
        return None


def stat_exit_status(stat: ProcStat | None, start_ticks: int = 0) -> tuple[int, str] | None:
    """(wait status, "zombie" or "exiting") when the stat holds the exit status.

    ``start_ticks`` (the host's, from the ring) guards against a new process that
    got the pid after the host was reaped.
    """
    if stat is None or (start_ticks and stat.start_ticks != start_ticks):
        return None
    if stat.ended:
        return stat.exit_code, "zombie"
    if stat.flags & PF_EXITING and stat.vsize == 0:
        return stat.exit_code, "exiting"  # set before the memory went: final
    return None


_pidfd_info: bool | None = None  # does this kernel answer PIDFD_GET_INFO? (probed once)


def pidfd_exit_status(pidfd: int) -> int | None:
    """The wait status of a reaped host through its pidfd, or None (not reaped yet,
    or a kernel before 6.15)."""
    global _pidfd_info
    if pidfd < 0 or _pidfd_info is False:
        return None
    if os.environ.get("WATCHDOG_CORE_NO_PIDFD_INFO") == "1":  # test the path of old kernels
        _pidfd_info = False
        return None
    buf = bytearray(_PIDFD_INFO.size)
    _PIDFD_INFO.pack_into(buf, 0, PIDFD_INFO_EXIT, 0, *([0] * 11), 0)
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            _pidfd_info = False
        return None
    _pidfd_info = True
    fields = _PIDFD_INFO.unpack(buf)
    return fields[-1] if fields[0] & PIDFD_INFO_EXIT else None


def pidfd_info_supported() -> bool | None:
    """True or False once a pidfd has been asked; None before."""
    return _pidfd_info


def signal_caught(pid: int, signum: int, root: str = "/") -> bool | None:
    """Whether the process has a handler for ``signum`` (``SigCgt``); None when it
    cannot be told (no /proc: then no signal may be sent)."""
    status = _procfs.read(os.path.join(root, f"proc/{pid}/status"))
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith(b"SigCgt:"):
            try:
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
            except (ValueError, IndexError):
                return None
    return None


def maps_segment(pid: int, shm_name: str, root: str = "/") -> bool | None:
    """Whether the process still maps our segment (it does not after an exec);
    None when its maps cannot be read."""
    needle = f"/dev/shm/{shm_name}".encode()
    try:
        with open(os.path.join(root, f"proc/{pid}/maps"), "rb") as f:
            return any(line.rstrip().endswith(needle) for line in f)
    except OSError:
        return None


KEPT_LINES = 64
KMSG_SETTLE = 0.05  # the OOM killer sends SIGKILL first and prints its line just after


class KernelLog:
    """What /dev/kmsg said about OOM kills since the session began."""

    __slots__ = ("readable", "ours", "others", "lines", "memcgs", "overrun")

    def __init__(self) -> None:
        self.readable = False
        self.ours: str | None = None  # the kernel's line naming the host
        self.others: list[int] = []  # pids the OOM killer chose instead
        # pid -> the kernel's "Killed process ..." line, of the newest KEPT_LINES others:
        # `run` names a descendant killed before any sample saw it from them.
        self.lines: dict[int, str] = {}
        self.memcgs: dict[int, str] = {}  # pid -> the memory cgroup it was killed in
        self.overrun = False  # records were lost before we read them


class OomEvidence:
    """The OOM evidence at the moment of death."""

    __slots__ = ("counters", "alone", "kernel", "watched", "earlier")

    def __init__(self, counters: dict[str, str] | None = None, alone: set[str] | None = None,
                 kernel: KernelLog | None = None, watched: set[str] | None = None,
                 earlier: list[str] | None = None) -> None:
        self.counters = counters or {}  # source -> evidence line, for counters that rose
        self.alone = alone or set()  # sources whose cgroup held the host alone
        self.kernel = kernel or KernelLog()
        self.watched = watched or set()  # sources whose counter could be read
        self.earlier = earlier or []  # kills counted while the host lived, as evidence

    @property
    def cgroup_rose(self) -> set[str]:
        return {s for s in self.counters if s.startswith("cgroup")}

    def vmstat_counts(self) -> bool:
        """The machine-wide counter rose, and nothing better can say whose kill it was:
        the kernel counts every OOM kill in the victim's memory cgroup too, so where
        the host's cgroup counter was readable and stayed, the kill was another's."""
        return "vmstat" in self.counters and not any(s.startswith("cgroup")
                                                     for s in self.watched)


class OomWatch:
    """OOM-kill evidence about one host, prepared while it is alive.

    The counters' files are found while the host lives (a zombie's /proc/<pid>/cgroup
    is empty), re-resolved every few seconds in case it moves, and read again at its
    death. /dev/kmsg, where readable (root or CAP_SYSLOG), is opened at the start and
    read from there on. Its pids are those of the initial namespace, so every NSpid
    of the host is compared.
    """

    def __init__(self, host_pid: int, root: str = "/", tree_dir: str | None = None,
                 kmsg_fd: int | None = None) -> None:
        """``tree_dir``: ``watchdog-core run``'s cgroup for the tree, made empty, so its
        counter counts from 0; ``kmsg_fd``: /dev/kmsg opened (at its end) before the
        host started, or -1 when it could not be."""
        self.host_pid = host_pid
        self.root = root
        self.paths: dict[str, str] = {}
        self.before: dict[str, int] = {}
        # Per cgroup source: True while every look found the host (and us) alone in it.
        # Sticky once False: a worker that was there may be the one the OOM killer took.
        self.alone: dict[str, bool] = {}
        self.earlier: dict[str, int] = {}  # kills counted while the host lived: others'
        # ``watchdog-core run``'s cgroup for the tree: it holds the host's tree and nothing
        # else, which is what "alone" asks (docs/run.md); its kills while the host lived
        # were descendants', each with a dump of its own.
        self.tree_dir = tree_dir
        self._vmstat_at = -1e9
        self.nspids = _nspids(host_pid, root)
        self._resolved_at = -1e9
        self.refresh(force=True)
        # WATCHDOG_CORE_NO_KMSG=1 takes the path of a watchdog without root (tests).
        if os.environ.get("WATCHDOG_CORE_NO_KMSG") == "1":
            if kmsg_fd is not None and kmsg_fd >= 0:
                os.close(kmsg_fd)
            kmsg_fd = -1
        self.kmsg_fd = _open_kmsg_at_end() if kmsg_fd is None else kmsg_fd
        # The pid of the kernel's last "oom-kill:" line: "Killed process" may name another
        # thread of that process (the one still holding its memory, when the main
        # thread had ended alone).
        self.oom_line_pid = 0
        self.kernel = KernelLog()
        self.kernel.readable = self.kmsg_fd >= 0

    def refresh(self, force: bool = False) -> None:
        """Called after every good sample, the host alive: who is in its cgroups, and
        whether a counter rose meanwhile (another process's kill: the baseline moves,
        so only kills after the last sample can be the host's). Every 2 s: which
        cgroups, and the machine-wide counter."""
        now = time.monotonic()
        if force or now - self._resolved_at >= 2.0:
            self._resolved_at = now
            for source, path in self._counter_paths().items():
                if self.paths.get(source) != path:
                    value = counter(path, "oom_kill")
                    if value is not None:
                        self.paths[source] = path
                        # The tree's cgroup was made empty for it: every kill counts.
                        self.before[source] = 0 if self._is_tree(path) else value
                        if source != "vmstat":
                            self.alone.setdefault(source, True)
        # Every 2 s: the machine-wide counter (a large file) and who is in the cgroups
        # (a fresh open each time, see cgroup_pids). A worker that came and went in
        # between and was OOM-killed is still caught: its kill moved the counter while
        # the host lived.
        slow_due = now - self._vmstat_at >= 2.0
        if slow_due:
            self._vmstat_at = now
        for source, path in self.paths.items():
            if source == "vmstat" and not slow_due:
                continue
            value = counter(path, "oom_kill")
            if value is not None and value > self.before[source] and not self._being_killed():
                self.earlier[source] = self.earlier.get(source, 0) + value - self.before[source]
                self.before[source] = value
                if source != "vmstat" and not self._is_tree(path):
                    self.alone[source] = False  # someone else was there to be killed
            if slow_due and self.alone.get(source) and not self._is_tree(path):
                self.alone[source] = self._holds_host_alone(os.path.dirname(path))

    def _being_killed(self) -> bool:
        """A SIGKILL is pending for the host, or it is already in do_exit(): a counter
        that rose now may be its own kill (the kernel counts before it kills)."""
        status = _procfs.read(os.path.join(self.root, f"proc/{self.host_pid}/status"))
        if status is None:
            return True
        if b"VmRSS" not in status:
            return True
        for line in status.splitlines():
            if line.startswith((b"SigPnd:", b"ShdPnd:")):
                try:
                    if int(line.split()[1], 16) >> 8 & 1:  # bit of SIGKILL (9)
                        return True
                except (IndexError, ValueError):
                    return True
        stat = read_proc_stat(self.host_pid, self.root)
        return stat is None or stat.dying

    def _holds_host_alone(self, cgroup_dir: str) -> bool:
        """True when the cgroup's processes are the host and this watchdog only: then
        an OOM kill counted there can only have been the host's."""
        pids = cgroup_pids(cgroup_dir)
        return pids is not None and self.host_pid in pids and pids <= {self.host_pid,
                                                                       os.getpid()}

    def _is_tree(self, path: str) -> bool:
        return self.tree_dir is not None and os.path.dirname(path) == self.tree_dir

    def _holds_nobody_else(self, cgroup_dir: str) -> bool:
        """After the death: nothing but this watchdog is left (or the host's zombie)."""
        if cgroup_dir == self.tree_dir:
            return True
        pids = cgroup_pids(cgroup_dir)
        return pids is not None and pids <= {self.host_pid, os.getpid()}

    def _counter_paths(self) -> dict[str, str]:
        root, pid = self.root, self.host_pid
        out = {}
        v1 = _limits.cgroup_v1_memory_dir(root, pid)
        if v1 is not None:
            out["cgroup-v1"] = os.path.join(v1, "memory.oom_control")
        membership = _limits.cgroup_membership(root, pid)
        if "v2" in membership:
            mount = next((m for m in _limits.mounts(root, pid) if m.fstype == "cgroup2"), None)
            if mount is not None:
                leaf = _limits.cgroup_dir(root, mount, membership["v2"])
                if leaf is not None and os.path.exists(os.path.join(leaf, "memory.events")):
                    out["cgroup-v2"] = os.path.join(leaf, "memory.events")
        out["vmstat"] = os.path.join(root, "proc/vmstat")
        return out

    def risen(self) -> dict[str, str]:
        """Source -> evidence line, for every counter that rose since the last sample."""
        out = {}
        for source, path in sorted(self.paths.items()):
            now = counter(path, "oom_kill")
            if now is not None and now > self.before[source]:
                out[source] = f"{source}: oom_kill {self.before[source]} -> {now}"
        return out

    def evidence(self) -> OomEvidence:
        """The OOM evidence now, at the host's death."""
        counters = self.risen()
        self.read_kernel_log()
        if counters and self.kernel.readable and not self.kernel.ours:
            time.sleep(KMSG_SETTLE)
            self.read_kernel_log()
        alone = {source for source, yes in self.alone.items()
                 if yes and self._holds_nobody_else(os.path.dirname(self.paths[source]))}
        earlier = [f"{source}: {n} OOM kill(s) while the host lived, so not its own"
                   for source, n in sorted(self.earlier.items())]
        return OomEvidence(counters, alone, self.kernel, set(self.paths), earlier)

    def read_kernel_log(self) -> None:
        """Read what /dev/kmsg has added since the last read into ``self.kernel``."""
        log, fd = self.kernel, self.kmsg_fd
        if fd < 0:
            return
        try:
            while True:
                try:
                    record = os.read(fd, 8192)
                except BlockingIOError:
                    return
                except BrokenPipeError:  # EPIPE: records were overwritten before we read
                    log.overrun = True
                    continue
                if not record:
                    return
                text = record.decode("utf-8", "replace").split(";", 1)[-1].strip()
                if text.startswith("oom-kill:"):
                    # "oom-kill:constraint=...,task_memcg=/a/b,task=tail,pid=456,uid=0":
                    # the victim's cgroup, which "Killed process" does not say.
                    fields = dict(part.partition("=")[::2] for part in text[9:].split(","))
                    pid = fields.get("pid", "")
                    self.oom_line_pid = int(pid) if pid.isdigit() else 0
                    if pid.isdigit():
                        log.memcgs[int(pid)] = fields.get("task_memcg", "")
                        if len(log.memcgs) > KEPT_LINES:
                            del log.memcgs[next(iter(log.memcgs))]
                    continue
                victim = _killed_pid(text)
                if victim is None:
                    continue
                if victim in self.nspids or self.oom_line_pid in self.nspids:
                    log.ours = "kernel: " + text.split(",", 1)[0]
                else:
                    log.others.append(victim)
                    log.lines[victim] = text
                    if len(log.lines) > KEPT_LINES:
                        del log.lines[next(iter(log.lines))]
        except OSError:
            log.overrun = True

    def close(self) -> None:
        if self.kmsg_fd >= 0:
            os.close(self.kmsg_fd)
            self.kmsg_fd = -1


def cgroup_pids(cgroup_dir: str) -> set[int] | None:
    # Opened afresh every time: cgroup v1 keeps the pid list of an open cgroup.procs
    # and reuses it while it is read again within a second, so a kept descriptor would
    # never see a newcomer.
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "rb") as f:
            return {int(p) for p in f.read().split()}
    except (OSError, ValueError):
        return None


def killed_process(text: str) -> tuple[str, int | None]:
    """(command name, anonymous RSS bytes) of a "Killed process <pid> (comm)
    total-vm:...kB, anon-rss:...kB, ..." line."""
    _, _, rest = text.partition("(")
    name, _, figures = rest.rpartition(")")
    anon = None
    for part in figures.split(","):
        key, _, value = part.strip().partition(":")
        if key == "anon-rss" and value.endswith("kB") and value[:-2].isdigit():
            anon = int(value[:-2]) * 1024
    return name or "?", anon


def _killed_pid(text: str) -> int | None:
    """The pid of the kernel's "Killed process <pid> (comm) ..." line, or None."""
    _, found, rest = text.partition("Killed process ")
    if not found:
        return None
    head = rest.split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _nspids(pid: int, root: str) -> set[int]:
    out = {pid}
    try:  # bytes: the Name: line is the process's comm, which need not be UTF-8
        with open(os.path.join(root, f"proc/{pid}/status"), "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    out.update(int(p) for p in line.split()[1:] if p.isdigit())
    except OSError:
        pass
    return out


def _open_kmsg_at_end() -> int:
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        os.close(fd)
        return -1
    return fd


def counter(path: str, key: str) -> int | None:
    """The number on the ``key`` line of a cgroup's or /proc's ``key value`` file."""
    text = _procfs.read_text(path)
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None
