"""Is the host still responding? And if not, where is it stuck? (docs/hangs.md)

Three signs, all opt-in because busy or idle hosts are normal:

* ``gil-held`` (``hang_after``): the host's heartbeat thread has not written the ring
  for that long. The thread needs the GIL, so this catches an interpreter that cannot
  run Python at all: the GIL held inside a C call, a stopped process.
* ``main-thread-stuck`` (``hang_after``): a busy loop in pure Python lets the heartbeat
  run, so it is caught another way: the main thread has not left its innermost frame
  for that long (the host's heartbeat notes when that frame changed) while it kept at
  least half a CPU busy (its own utime+stime, read here). A main thread that waits
  (for a model's reply, on ``input()``, in an idle kernel) burns no CPU and is not hung.
* ``idle`` (``idle_after``): no ``record()``/``mark()`` for that long: a deadlocked main
  thread whose other threads still run.

The stacks come from the host itself: it registered ``faulthandler`` for the stack
signal, whose C-level handler writes every thread's stack even while the GIL is
held. The watchdog sends the signal through the host's pidfd (no pid-reuse race).
"""

from __future__ import annotations

import collections
import os
import signal
import time

from . import _ring
from ._attribution import read_proc_stat, signal_caught
from ._document import responsiveness
from ._store import DiagnosticsDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._document import ResponsivenessDoc

STACKS_WAIT = 2.0  # seconds to wait for faulthandler's stacks to land in the file
STACKS_SETTLE = 0.05  # the file counts as complete once it stopped growing this long
BUSY_SHARE = 0.5  # of one CPU: below it the main thread is waiting, not stuck
# Once stuck, it stays stuck until it leaves its frame or drops below half of that:
# a host sharing a core hovers around BUSY_SHARE, and each dip would start a new episode.
STILL_BUSY_SHARE = BUSY_SHARE / 2
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class MainThread:
    """The host's main thread as the watchdog sees it: how long it has been in its
    innermost frame (a word the host's heartbeat writes) and how busy it was then."""

    def __init__(self, host_pid: int, tid: int, ident: int, hang_after: float) -> None:
        self.host_pid, self.tid = host_pid, tid
        self.ident = ident
        self.hang_after = hang_after
        self.since_ns = 0
        # (monotonic time, CPU seconds) since the frame appeared, the oldest dropped
        # once a newer one still covers hang_after: the share is over the last stretch.
        self.cpu: collections.deque[tuple[float, float]] = collections.deque()

    @property
    def thread_id(self) -> str:
        """The id faulthandler prints for this thread ("Thread 0x00007f...")."""
        return f"0x{self.ident:016x}"

    def stuck(self, since_ns: int, now: float, *, already: bool = False) -> float | None:
        """The main thread's CPU share while it has been in one frame longer than
        hang_after, if it was busy (>= BUSY_SHARE, or STILL_BUSY_SHARE when ``already``
        stuck); None when it is not stuck."""
        cpu = self._cpu_seconds()
        if cpu is None or not since_ns:
            self.cpu.clear()
            return None
        if since_ns != self.since_ns:  # it left its frame: start over
            self.since_ns = since_ns
            self.cpu.clear()
        self.cpu.append((now, cpu))
        while len(self.cpu) > 2 and now - self.cpu[1][0] >= self.hang_after:
            self.cpu.popleft()
        first_t, first_cpu = self.cpu[0]
        if now - since_ns / 1e9 <= self.hang_after or now - first_t < self.hang_after / 2:
            return None
        share = (cpu - first_cpu) / (now - first_t)
        return round(share, 2) if share >= (STILL_BUSY_SHARE if already else BUSY_SHARE) else None

    def _cpu_seconds(self) -> float | None:
        stat = read_proc_stat(self.host_pid, tid=self.tid)
        return None if stat is None else stat.cpu_ticks / _TICKS


class HangDetector:
    """Turns heartbeat, frame and record times into unresponsive/recovered events."""

    def __init__(self, hang_after: float | None, idle_after: float | None) -> None:
        self.hang_after = hang_after
        self.idle_after = idle_after
        self.started = time.monotonic()
        self.unresponsive_since: float | None = None
        self.reason = "gil-held"
        self.recovery: ResponsivenessDoc | None = None  # noted in the next dump, then cleared
        self.main: MainThread | None = None  # hang_after, once the host published it

    @property
    def enabled(self) -> bool:
        return bool(self.hang_after or self.idle_after)

    def watch_main_thread(self, host_pid: int, tid: int, ident: int) -> None:
        if self.hang_after and tid and self.main is None:
            self.main = MainThread(host_pid, tid, ident, self.hang_after)

    def check(self, heartbeat_ns: int, last_activity: float,
              main_since_ns: int = 0) -> ResponsivenessDoc | None:
        """Returns a ``responsiveness`` when the host has just become unresponsive.

        ``heartbeat_ns`` is the host's last CLOCK_MONOTONIC heartbeat (0 before the
        first); ``last_activity`` the monotonic time the newest record appeared;
        ``main_since_ns`` when the main thread's innermost frame appeared (0: unknown).
        """
        now = time.monotonic()
        beat = heartbeat_ns / 1e9 if heartbeat_ns else self.started
        heartbeat_age = max(0.0, now - beat)
        idle = max(0.0, now - max(last_activity, self.started))
        # A record written since means Python runs: the heartbeat was starved, not
        # blocked (CPython's GIL is not fair to a thread that sleeps, docs/hangs.md).
        stale = bool(self.hang_after and heartbeat_age > self.hang_after
                     and idle > self.hang_after)
        busy = None if stale or self.main is None else self.main.stuck(
            main_since_ns, now, already=self.reason == "main-thread-stuck"
            and self.unresponsive_since is not None)
        quiet = bool(self.idle_after and idle > self.idle_after)
        if stale or busy is not None or quiet:
            if self.unresponsive_since is not None:
                return None  # one dump per episode
            self.unresponsive_since = now
            self.reason = ("gil-held" if stale else "main-thread-stuck" if busy is not None
                           else "idle")
            return responsiveness("unresponsive", self.reason,
                                  main_thread=self.main.thread_id if self.main else None,
                                  main_thread_cpu=busy, heartbeat_age=round(heartbeat_age, 3),
                                  idle_seconds=round(idle, 3))
        if self.unresponsive_since is not None:
            self.recovery = responsiveness(
                "recovered", self.reason,
                heartbeat_age=round(heartbeat_age, 3), idle_seconds=round(idle, 3),
                unresponsive_for=round(now - self.unresponsive_since, 3))
            self.unresponsive_since = None
        return None

    def take_recovery(self) -> ResponsivenessDoc | None:
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
