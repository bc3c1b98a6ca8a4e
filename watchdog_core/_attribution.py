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

from . import _limits

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


def oom_kill_counters(host_pid: int, root: str = "/") -> dict[str, int]:
    """Current OOM-kill counters that apply to the host, by source."""
    out: dict[str, int] = {}
    membership = _limits.cgroup_membership(root, host_pid)
    mounts = _limits.mounts(root, host_pid)
    v1 = _limits.cgroup_v1_memory_dir(root, host_pid)
    if v1 is not None:
        value = _counter(os.path.join(v1, "memory.oom_control"), "oom_kill")
        if value is not None:
            out["cgroup-v1"] = value
    if "v2" in membership:
        mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
        if mount is not None:
            leaf = _limits._cgroup_dir(root, mount, membership["v2"])
            if leaf is not None:
                value = _counter(os.path.join(leaf, "memory.events"), "oom_kill")
                if value is not None:
                    out["cgroup-v2"] = value
    value = _counter(os.path.join(root, "proc/vmstat"), "oom_kill")
    if value is not None:
        out["vmstat"] = value
    return out


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


def judge(*, stopped: bool, exiting: bool, exception: str | None, wait_status: int | None,
          oom_before: dict[str, int], oom_after: dict[str, int],
          last_ratio: float | None) -> Verdict:
    """Combine the evidence into a verdict."""
    v = Verdict()
    ev = v.evidence
    if stopped:
        ev.append("ring: stopped")
        v.clean, v.kind = True, "exited"
        return v
    ev.append("ring: exiting (atexit ran)" if exiting else "ring: no exiting marker")
    if exception:
        v.exception = exception
        ev.append(f"ring: uncaught exception {exception}")
    sig: int | None = None
    if wait_status is None:
        ev.append("/proc stat: exit status not readable (already reaped)")
    elif wait_status & 0x7F:
        sig = wait_status & 0x7F
        v.signal = _signal_name(sig)
        ev.append(f"/proc stat: killed by {v.signal}"
                  + (" (core dumped)" if wait_status & 0x80 else ""))
    else:
        v.exit_code = (wait_status >> 8) & 0xFF
        ev.append(f"/proc stat: exit status {v.exit_code}")
    risen = sorted(src for src, n in oom_after.items() if n > oom_before.get(src, n))
    for src in risen:
        ev.append(f"{src}: oom_kill {oom_before[src]} -> {oom_after[src]}")
    if last_ratio is not None:
        ev.append(f"last ratio {last_ratio:.2f}")

    if sig is not None:
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
    if exception:
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
