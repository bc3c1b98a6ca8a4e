"""Kernel notifications that wake the watchdog between two samples.

The watchdog sleeps up to 2 s while its host is far from its limit and flat; these
descriptors make it sample sooner when the kernel sees memory move. They are extra
wake-ups on top of the timer, never the only path: each mechanism can be missing
(no cgroup, a read-only cgroupfs, no PSI, no permission, no descriptor left), and
then there is simply no early wake-up. Nothing here raises.

- cgroup v1: usage thresholds. One eventfd, registered once per threshold through
  ``cgroup.event_control`` against ``memory.usage_in_bytes``; the kernel signals it
  when usage crosses a threshold in either direction (checked every 128 page events
  per CPU). Usage includes page cache, so a wake-up is a reason to sample, never a
  grade. Closing the eventfd unregisters every threshold.
- cgroup v2: ``memory.events`` of each cgroup whose ``memory.max`` limits the host.
  kernfs reports a change (high, max, oom, oom_kill) as POLLPRI|POLLERR until the
  file is read again.
- PSI: a trigger on the host's cgroup ``memory.pressure`` or ``/proc/pressure/memory``
  (Documentation/accounting/psi.rst). Without CAP_SYS_RESOURCE the window must be a
  multiple of 2 s, and the kernel checks it only every 2 s.
"""

from __future__ import annotations

import errno
import os
import select

from . import _limits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# 150 ms of stall within 2 s. A 2 s window is the shortest one any user may ask for
# (unprivileged windows are multiples of 2 s); the kernel also wants the terminating
# NUL: it overwrites the last byte written with one.
PSI_TRIGGER = b"some 150000 2000000"

V1_THRESHOLDS, V2_EVENTS, PSI = "cgroup-v1-thresholds", "cgroup-v2-events", "psi"

_EVENTFD_MASK = select.POLLIN
_KERNFS_MASK = select.POLLPRI  # POLLERR comes with it on kernfs, asked for or not
_DEAD = select.POLLNVAL | select.POLLHUP


class Wakeups:
    """The kernel's memory notifications for one host, as descriptors for ``select.poll``.

    Build it with :meth:`for_host`, hand the poller to :meth:`register`, call
    :meth:`drain` for every event the poller returns (True: one of ours fired,
    sample now), :meth:`rearm` when the effective limit changes, and :meth:`close`
    at the end. A mechanism that cannot be armed is left out; :meth:`describe`
    says why.
    """

    __slots__ = ("events", "state", "_kinds", "_poller", "_v1_dir", "_thresholds",
                 "_ratios", "_paused")

    def __init__(self, *, v1_dir: str | None = None, v2_dirs: Sequence[str] = (),
                 psi_path: str | None = None, limit: int | None = None,
                 ratios: Sequence[float] = (), psi_trigger: bytes = PSI_TRIGGER) -> None:
        """``v1_dir``: a cgroup v1 memory directory to set usage thresholds on, at
        ``limit`` (bytes) times each of ``ratios``; ``v2_dirs``: cgroup v2 directories
        whose ``memory.events`` to watch; ``psi_path``: a PSI file to set
        ``psi_trigger`` on. Every argument may be left out."""
        self.events: dict[int, int] = {}  # descriptor -> poll mask, all armed now
        self.state: dict[str, str] = {}  # mechanism -> "armed: ..." or "off: ..."
        self._kinds: dict[int, str] = {}
        self._poller: select.poll | None = None
        self._paused = False
        self._v1_dir = v1_dir
        self._thresholds: tuple[int, ...] = ()
        self._ratios = tuple(ratios)
        if v1_dir is not None:
            self.state[V1_THRESHOLDS] = "off: no limit to set thresholds against"
            self.rearm(limit)
        watched = []
        for directory in v2_dirs:
            path = os.path.join(directory, "memory.events")
            try:
                self._add(_events_fd(path), V2_EVENTS, _KERNFS_MASK)
                watched.append(path)
            except OSError as exc:
                self.state[V2_EVENTS] = _off(exc, path)
        if watched:
            self.state[V2_EVENTS] = "armed: " + ", ".join(watched)
        if psi_path is not None:
            try:
                self._add(_psi_fd(psi_path, psi_trigger), PSI, _KERNFS_MASK)
                self.state[PSI] = f"armed: {psi_trigger.decode('ascii', 'replace')} on {psi_path}"
            except OSError as exc:
                self.state[PSI] = _off(exc, psi_path)

    @classmethod
    def for_host(cls, pid: int | str, *, limit: int | None, ratios: Sequence[float],
                 root: str = "/", psi_trigger: bytes = PSI_TRIGGER) -> Wakeups:
        """The notifications for the host ``pid``, found the way ``_limits`` finds its
        limits: thresholds at ``limit`` (bytes) times each ratio on its cgroup v1
        memory cgroup, ``memory.events`` of each v2 cgroup whose ``memory.max`` limits
        it, and a PSI trigger on its v2 cgroup's ``memory.pressure`` or else on the
        machine's. A host moved to another cgroup needs a new one."""
        try:
            layout = (_limits.cgroup_membership(root, pid), _limits.mounts(root, pid))
            v1_dir = _limits.cgroup_v1_memory_dir(root, pid)
            v2_dirs = list(dict.fromkeys(
                found.directory for found in _limits.cgroup_limits(root, pid, layout)
                if found.source == "cgroup-v2"))
            psi_path = _limits.cgroup_psi_path(root, layout)
        except (OSError, ValueError):  # a strange /proc: no cgroup to watch
            v1_dir, v2_dirs, psi_path = None, [], None
        if psi_path is None:
            machine = os.path.join(root, "proc/pressure/memory")
            psi_path = machine if os.path.exists(machine) else None
        return cls(v1_dir=v1_dir, v2_dirs=v2_dirs, psi_path=psi_path, limit=limit,
                   ratios=ratios, psi_trigger=psi_trigger)

    @property
    def armed(self) -> tuple[str, ...]:
        """The mechanisms armed now, in a fixed order."""
        kinds = set(self._kinds.values())
        return tuple(kind for kind in (V1_THRESHOLDS, V2_EVENTS, PSI) if kind in kinds)

    def describe(self) -> dict[str, str]:
        """Each mechanism tried, and what came of it: ``"armed: ..."`` or ``"off: why"``."""
        return dict(self.state)

    def register(self, poller: select.poll) -> None:
        """Put every descriptor in ``poller``; what :meth:`rearm`, :meth:`drain` and
        :meth:`close` change later is applied to it too."""
        self._poller = poller
        for fd, mask in self.events.items():
            poller.register(fd, mask)

    def drain(self, fd: int, revents: int = 0) -> bool:
        """Consume what woke the poller on ``fd``; True when ``fd`` is one of ours (a
        reason to sample now), False for anybody else's descriptor. A mechanism whose
        source went away (its cgroup removed) is closed here and left out from now on."""
        kind = self._kinds.get(fd)
        if kind is None:
            return False
        alive = not revents & _DEAD
        if alive and kind == V1_THRESHOLDS:
            try:
                os.eventfd_read(fd)  # resets the counter: the eventfd is not a semaphore
            except BlockingIOError:
                pass
            except OSError:
                alive = False
        elif alive and kind == V2_EVENTS:
            try:
                os.pread(fd, 4096, 0)  # re-reading is what clears kernfs' change mark
            except OSError:  # ENODEV: the cgroup is gone
                alive = False
        elif alive and kind == PSI:
            # Polling cleared the trigger's event; POLLERR means the trigger is gone
            # (the cgroup removed), and would be reported at every poll from now on.
            alive = not revents & select.POLLERR
        if not alive:
            self._remove(fd)
            self.state[kind] = "off: its file went away"
        return True

    def rearm(self, limit: int | None, ratios: Sequence[float] | None = None) -> None:
        """Move the cgroup v1 thresholds to ``limit`` (bytes) times each ratio (the
        ratios given before, unless new ones are); None takes them away. Cheap when
        nothing changed: call it with every new effective limit."""
        if ratios is not None:
            self._ratios = tuple(ratios)
        if self._v1_dir is None:
            return
        wanted = (int(limit * ratio) for ratio in self._ratios) if limit else ()
        thresholds = tuple(sorted({value for value in wanted if value > 0}))
        if thresholds == self._thresholds and (
                not thresholds or V1_THRESHOLDS in self._kinds.values()):
            return
        for fd in [fd for fd, kind in self._kinds.items() if kind == V1_THRESHOLDS]:
            self._remove(fd)  # closing the eventfd unregisters all of its thresholds
        self._thresholds = thresholds
        if not thresholds:
            self.state[V1_THRESHOLDS] = "off: no limit to set thresholds against"
            return
        if not hasattr(os, "eventfd"):  # not Linux, or a libc without it
            self.state[V1_THRESHOLDS] = "off: no eventfd on this platform"
            self._v1_dir = None
            return
        try:
            fd = _thresholds_fd(self._v1_dir, thresholds)
        except OSError as exc:
            self.state[V1_THRESHOLDS] = _off(exc, self._v1_dir)
            if not _transient(exc):
                self._v1_dir = None  # never again: no permission, no such file
            return
        self._add(fd, V1_THRESHOLDS, _EVENTFD_MASK)
        self.state[V1_THRESHOLDS] = (
            f"armed: {', '.join(map(str, thresholds))} bytes on "
            f"{os.path.join(self._v1_dir, 'memory.usage_in_bytes')}")

    def pause(self) -> None:
        """Wake the poller no more until :meth:`resume`: after one wake-up the watcher
        samples, and a usage hovering at a threshold (each crossing either way fires)
        must not wake it hundreds of times a second meanwhile."""
        if self._poller is not None and not self._paused:
            for fd in self.events:
                self._poller.unregister(fd)
            self._paused = True

    def resume(self) -> None:
        """Wake the poller again; a notification that came while paused wakes it now."""
        if self._poller is not None and self._paused:
            for fd, mask in self.events.items():
                self._poller.register(fd, mask)
            self._paused = False

    def close(self) -> None:
        """Close every descriptor (unregistering them from the poller first)."""
        for fd in list(self._kinds):
            self._remove(fd)
        self._poller = None

    def _add(self, fd: int, kind: str, mask: int) -> None:
        self._kinds[fd] = kind
        self.events[fd] = mask
        if self._poller is not None and not self._paused:
            self._poller.register(fd, mask)

    def _remove(self, fd: int) -> None:
        self._kinds.pop(fd, None)
        self.events.pop(fd, None)
        if self._poller is not None and not self._paused:
            try:
                self._poller.unregister(fd)  # before the close: the number may be reused
            except KeyError:
                pass
        try:
            os.close(fd)
        except OSError:
            pass


def _thresholds_fd(directory: str, thresholds: Sequence[int]) -> int:
    """One eventfd signalled when usage crosses any of ``thresholds`` (bytes)."""
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    usage = control = -1
    try:
        usage = os.open(os.path.join(directory, "memory.usage_in_bytes"),
                        os.O_RDONLY | os.O_CLOEXEC)
        control = os.open(os.path.join(directory, "cgroup.event_control"),
                          os.O_WRONLY | os.O_CLOEXEC)
        # The kernel keeps a reference to the eventfd, not to these two files.
        for threshold in thresholds:
            os.write(control, f"{efd} {usage} {threshold}".encode())
    except OSError:
        os.close(efd)
        raise
    finally:
        for fd in (usage, control):
            if fd >= 0:
                os.close(fd)
    return efd


def _events_fd(path: str) -> int:
    """``path`` (a kernfs file such as ``memory.events``) open and read once: kernfs
    reports a change only against what this descriptor read last."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.pread(fd, 4096, 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def _psi_fd(path: str, trigger: bytes) -> int:
    """A PSI trigger on ``path``: POLLPRI when the stall of ``trigger`` is seen."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, trigger + b"\0")
    except OSError:
        os.close(fd)
        raise
    return fd


def _transient(exc: OSError) -> bool:
    """Out of descriptors or memory: worth trying again at the next rearm."""
    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM)


def _off(exc: OSError, path: str) -> str:
    return f"off: {exc.strerror or exc} ({path})"
