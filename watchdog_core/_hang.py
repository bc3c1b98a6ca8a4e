"""Is the host still responding? And if not, where is it stuck? (issue 4)

Two signs, both opt-in because busy or idle hosts are normal:

* ``hang_after``: the host's heartbeat thread has not written the ring for that long.
  The thread needs the GIL, so this catches an interpreter that cannot run Python
  at all: the GIL held inside a C call, a stopped process.
* ``idle_after``: no ``record()``/``mark()`` for that long: a deadlocked main thread
  whose other threads still run.

The stacks come from the host itself: it registered ``faulthandler`` for the stack
signal, whose C-level handler writes every thread's stack even while the GIL is
held. The watchdog sends the signal through the host's pidfd (no pid-reuse race).
"""

from __future__ import annotations

import os
import signal
import time

from . import _ring
from ._attribution import signal_caught
from ._diagnostics import Responsiveness
from ._store import DiagnosticsDir

STACKS_WAIT = 2.0  # seconds to wait for faulthandler's stacks to land in the file
STACKS_SETTLE = 0.05  # the file counts as complete once it stopped growing this long


class HangDetector:
    """Turns heartbeat and record times into unresponsive/recovered events."""

    def __init__(self, hang_after: float | None, idle_after: float | None) -> None:
        self.hang_after = hang_after
        self.idle_after = idle_after
        self.started = time.monotonic()
        self.unresponsive_since: float | None = None
        self.reason = "heartbeat"
        self.recovery: Responsiveness | None = None  # noted in the next dump, then cleared

    @property
    def enabled(self) -> bool:
        return bool(self.hang_after or self.idle_after)

    def check(self, heartbeat_ns: int, last_activity: float) -> Responsiveness | None:
        """Returns a Responsiveness when the host has just become unresponsive.

        ``heartbeat_ns`` is the host's last CLOCK_MONOTONIC heartbeat (0 before the
        first); ``last_activity`` the monotonic time the newest record appeared.
        """
        now = time.monotonic()
        beat = heartbeat_ns / 1e9 if heartbeat_ns else self.started
        heartbeat_age = max(0.0, now - beat)
        idle = max(0.0, now - max(last_activity, self.started))
        stale = bool(self.hang_after and heartbeat_age > self.hang_after)
        quiet = bool(self.idle_after and idle > self.idle_after)
        if stale or quiet:
            if self.unresponsive_since is not None:
                return None  # one dump per episode
            self.unresponsive_since = now
            self.reason = "heartbeat" if stale else "idle"
            return Responsiveness(state="unresponsive", reason=self.reason,
                                  heartbeat_age=round(heartbeat_age, 3),
                                  idle_seconds=round(idle, 3))
        if self.unresponsive_since is not None:
            self.recovery = Responsiveness(
                state="recovered", reason=self.reason,
                heartbeat_age=round(heartbeat_age, 3), idle_seconds=round(idle, 3),
                unresponsive_for=round(now - self.unresponsive_since, 3))
            self.unresponsive_since = None
        return None

    def take_recovery(self) -> Responsiveness | None:
        recovery, self.recovery = self.recovery, None
        return recovery


def stack_signal_refusal(flags: int, signum: int, host_pid: int, *,
                         holds_ring: bool) -> str | None:
    """Why the stack signal must not be sent now, or None when it may.

    Only while the handler is ours: the ring says the host registered it and has not
    replaced it since (its heartbeat checks), the host still holds its ring
    (``holds_ring``: an exec drops the lock) and the kernel says the signal is caught
    (``SigCgt``). Anything else could kill the host or reach a handler of its own (a
    gunicorn master's SIGUSR2). A host that installs its own handler less than a
    heartbeat before a hang is the window this cannot close (docs/design.md).
    """
    if flags & _ring.FLAG_STACK_SIGNAL_TAKEN:
        return "the host handles the stack signal itself"
    if flags & _ring.FLAG_STACK_SIGNAL_LOST:
        return "the host installed its own handler for the stack signal"
    if not (flags & _ring.FLAG_STACK_SIGNAL and signum):
        return "no stack signal registered (stack_signal=0 or no directory)"
    if flags & _ring.FLAG_STOPPED:
        return "the session was stopped"
    if not holds_ring:
        return "the host no longer holds its ring (it may have exec'd another program)"
    caught = signal_caught(host_pid, signum)
    if caught is None:
        return "the host's signal handlers cannot be read here"
    if not caught:
        return "the host no longer catches the stack signal"
    return None


def collect_stacks(store: DiagnosticsDir, file_name: str, host_pid: int, pidfd: int,
                   signum: int) -> str | None:
    """Ask the host for its threads' stacks and return what faulthandler wrote.

    The stacks file is opened before the signal goes out: a host that wakes up and
    calls stop() removes the file, and an open descriptor still reads it.
    """
    fd = store.open_private(file_name)
    if fd is None:
        return None
    try:
        before = os.fstat(fd).st_size
        try:
            if pidfd >= 0 and hasattr(signal, "pidfd_send_signal"):
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(host_pid, signum)
        except OSError:
            return None
        deadline = time.monotonic() + STACKS_WAIT
        size, stable_since = before, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.01)
            now_size = os.fstat(fd).st_size
            if now_size != size:
                size, stable_since = now_size, time.monotonic()
            elif size > before and time.monotonic() - stable_since >= STACKS_SETTLE:
                break
        if size <= before:
            return None
        raw = os.pread(fd, min(size - before, 1024 * 1024), before)
        return raw.decode("utf-8", "replace")
    finally:
        os.close(fd)
