"""How the host died: the evidence the watchdog can gather, and the verdict (SPEC 4, 6).

The watchdog is the host's child, so it cannot ``wait()`` for the host's status
and a pidfd gives none to a non-parent. What it has:

* the ring's flags: *stopped* (clean), *exiting* (atexit ran), an uncaught
  exception's type name;
* ``/proc/<pid>/stat`` field 52, the wait status, readable only while the host
  is a zombie (a race with the host's own parent, so read it first);
* OOM-kill counters that rose since the watchdog started: cgroup v2
  ``memory.events``, cgroup v1 ``memory.oom_control``, ``/proc/vmstat``.

It combines them and never guesses: without evidence the kind is ``unknown``
and ``evidence`` says what was checked.
"""

from __future__ import annotations

import os
import signal
import time

from . import _limits, _reader, _ring

CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
     signal.SIGTRAP, signal.SIGSYS}
)


def read_wait_status(pid: int, root: str = "/") -> int | None:
    """The zombie's wait status (``exit_code`` field of /proc/<pid>/stat), or None.

    None when the host was already reaped, or while it has not exited yet (the field
    is 0 for a live process, so only a zombie's value is trusted).
    """
    try:
        with open(os.path.join(root, f"proc/{pid}/stat"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        fields = raw[raw.rindex(b")") + 2 :].split()
    except ValueError:
        return None
    if not fields or fields[0] not in (b"Z", b"X"):
        return None
    # Field 52 overall; after "pid (comm)" the state is field 3, so index 52 - 3 = 49.
    if len(fields) < 50:
        return None
    try:
        return int(fields[49])
    except ValueError:
        return None


class OomWatch:
    """OOM-kill evidence about one host, prepared while it is alive.

    The counters' files are found while the host lives (a zombie's /proc/<pid>/cgroup
    is empty), re-resolved every few seconds in case it moves, and read again at its
    death. /dev/kmsg, where readable, is opened at the start and read from there on:
    the kernel's "Killed process <pid>" line names the victim exactly. Its pids are
    those of the initial namespace, so every NSpid of the host is compared.
    """

    def __init__(self, host_pid: int, root: str = "/") -> None:
        self.host_pid = host_pid
        self.root = root
        self.paths: dict[str, str] = {}
        self.before: dict[str, int] = {}
        self.nspids = _nspids(host_pid, root)
        self._resolved_at = -1e9
        self.refresh(force=True)
        self.kmsg_fd = _open_kmsg_at_end()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._resolved_at < 2.0:
            return
        self._resolved_at = now
        for source, path in self._counter_paths().items():
            if self.paths.get(source) != path:
                value = _counter(path, "oom_kill")
                if value is not None:
                    self.paths[source] = path
                    self.before[source] = value

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

    def risen(self) -> list[str]:
        """Evidence lines for every counter that rose since it was first read."""
        out = []
        for source, path in sorted(self.paths.items()):
            now = _counter(path, "oom_kill")
            if now is not None and now > self.before[source]:
                out.append(f"{source}: oom_kill {self.before[source]} -> {now}")
        return out

    def kernel_log(self) -> str | None:
        """The kernel's line about killing the host, if /dev/kmsg has one."""
        fd, self.kmsg_fd = self.kmsg_fd, -1
        if fd < 0:
            return None
        try:
            while True:
                try:
                    record = os.read(fd, 8192)
                except BlockingIOError:
                    return None
                except BrokenPipeError:  # EPIPE: we were overtaken; the next read goes on
                    continue
                if not record:
                    return None
                text = record.decode("utf-8", "replace").split(";", 1)[-1].strip()
                if "Killed process" in text and any(
                    f"Killed process {pid} " in text for pid in self.nspids
                ):
                    return "kernel: " + text.split(",", 1)[0]
        except OSError:
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.kmsg_fd >= 0:
            os.close(self.kmsg_fd)
            self.kmsg_fd = -1


def _nspids(pid: int, root: str) -> set[int]:
    out = {pid}
    try:
        with open(os.path.join(root, f"proc/{pid}/status")) as f:
            for line in f:
                if line.startswith("NSpid:"):
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


def _counter(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


class Verdict:
    """The attribution: clean or not, and ``host.exit`` for the dump."""

    __slots__ = ("clean", "kind", "signal", "exit_code", "exception", "evidence")

    def __init__(self) -> None:
        self.clean = False
        self.kind = "unknown"
        self.signal: str | None = None
        self.exit_code: int | None = None
        self.exception: str | None = None
        self.evidence: list[str] = []

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "signal": self.signal, "exitCode": self.exit_code,
                "exception": self.exception, "evidence": self.evidence}


_FAULT_NAMES = {
    "Segmentation fault": signal.SIGSEGV,
    "Aborted": signal.SIGABRT,
    "Bus error": signal.SIGBUS,
    "Floating point exception": signal.SIGFPE,
    "Illegal instruction": signal.SIGILL,
}


def crash_signal(crash_text: str | None) -> int | None:
    """The signal named by faulthandler's "Fatal Python error: <what>" line."""
    for line in (crash_text or "").splitlines():
        if line.startswith("Fatal Python error: "):
            return _FAULT_NAMES.get(line[len("Fatal Python error: ") :].strip())
    return None


def judge(*, image: _reader.RingImage, wait_status: int | None, crash_text: str | None,
          oom_counters: list[str], kernel_log: str | None,
          last_ratio: float | None) -> Verdict:
    """Combine the evidence into a verdict."""
    v = Verdict()
    ev = v.evidence
    flags = image.flags
    if image.stopped:
        ev.append("ring: stopped")
        v.clean, v.kind = True, "exited"
        return v
    exiting = image.exiting
    ev.append("ring: exiting (atexit ran)" if exiting else "ring: no exiting marker")
    if image.exception:
        v.exception = image.exception
        ev.append(f"ring: uncaught exception {image.exception}")
    if image.thread_exception:
        ev.append(f"ring: a thread died of {image.thread_exception}")
    if flags & _ring.FLAG_SIGTERM:
        ev.append("ring: SIGTERM received (catch_sigterm)")
    if flags & _ring.FLAG_FOREIGN_FAULTHANDLER:
        ev.append("faulthandler was enabled by the host itself: no crash file of ours")
    sig: int | None = None
    if wait_status is None:
        ev.append("/proc stat: exit status not readable (already reaped)")
    elif wait_status & 0x7F:
        sig = wait_status & 0x7F
        ev.append(f"/proc stat: killed by {_signal_name(sig)}"
                  + (" (core dumped)" if wait_status & 0x80 else ""))
    else:
        v.exit_code = (wait_status >> 8) & 0xFF
        ev.append(f"/proc stat: exit status {v.exit_code}")
    fault = crash_signal(crash_text)
    if fault is not None:
        ev.append(f"faulthandler: Fatal Python error ({_signal_name(fault)})")
        if sig is None and v.exit_code is None:
            sig = fault
    if sig is None and v.exit_code is None and flags & _ring.FLAG_SIGTERM:
        sig = signal.SIGTERM
    ev.extend(oom_counters)
    if kernel_log:
        ev.append(kernel_log)
    # The kernel naming the host settles it; a cgroup counter rising is strong evidence;
    # the machine-wide vmstat counter alone could be another process's kill.
    cgroup_oom = any(line.startswith("cgroup") for line in oom_counters)
    risen = bool(kernel_log) or cgroup_oom or (bool(oom_counters) and (last_ratio or 0) >= 0.9)
    if last_ratio is not None:
        ev.append(f"last ratio {last_ratio:.2f}")

    if sig is not None:
        v.signal = _signal_name(sig)
        if sig in CRASH_SIGNALS:
            v.kind = "crashed"
        elif sig == signal.SIGKILL and risen:
            v.kind = "oom-killed"
        else:
            v.kind = "killed"
        return v
    if wait_status is None and risen and not exiting:
        v.kind = "oom-killed"
        return v
    if image.exception:
        v.kind = "exited"
        return v
    if v.exit_code is not None:
        v.kind = "exited"
        v.clean = v.exit_code == 0
        return v
    if exiting:
        # atexit ran and no exception: status 0 is the only unseen exit that runs atexit
        # without an exception (SPEC 4: an unknown code counts as clean).
        v.kind = "exited"
        v.clean = True
        return v
    v.kind = "unknown"
    return v


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
