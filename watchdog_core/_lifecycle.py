"""What the host installs into its own process for one session (SPEC 4, issue 4).

* atexit marks the ring *exiting*; ``sys.excepthook`` and ``threading.excepthook``
  write an uncaught exception's type name (never its message) and chain on;
* ``faulthandler`` writes every thread's traceback to a per-session crash file
  when the host segfaults or aborts (unless the host enabled faulthandler
  itself: then it is left alone and the ring says so);
* ``faulthandler.register`` dumps every thread's stack to a stacks file on the
  stack signal (SIGUSR2 by default), which the watchdog sends when the host
  stops responding; faulthandler's C handler works even while the GIL is held;
* a heartbeat thread writes ``CLOCK_MONOTONIC`` into the ring every second and
  restarts a watchdog that died (a few times at most);
* with ``catch_sigterm=True``, SIGTERM is noted in the ring, then re-raised.

Stdlib only: ``_signal`` and ``_thread`` rather than ``signal`` and ``threading``
where the public module would import ``enum`` (8 ms) into the host (SPEC 9).
"""

from __future__ import annotations

import _signal
import _thread
import faulthandler
import os
import sys
import time
import warnings

from . import _ring
from ._safedir import StoreError, create_private_file, open_dir, private_file_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType, TracebackType
    from typing import Any

    from ._host import Watchdog

MAX_RESTARTS = 3
RESTART_SPACING = 2.0  # seconds between two restarts of a dying watchdog


class HostHooks:
    """The session's hooks in this process; ``uninstall`` undoes what can be undone."""

    def __init__(self, handle: Watchdog) -> None:
        self.handle = handle
        self.config = handle._config
        self.w = handle._w
        self.pid = os.getpid()
        self.crash_fd = -1
        self.stacks_fd = -1
        self.dir_fd = -1
        self.stack_signal = self.config.stack_signal
        self.sigterm_handler: object = None  # ours, while installed
        self.restarts = 0
        self.last_restart = 0.0
        self.running = True

    # -- install -----------------------------------------------------------------------

    def install(self) -> None:
        import atexit

        atexit.register(self.at_exit)
        self._chain_excepthooks()
        self._install_fault_files()
        if self.config.catch_sigterm:
            self._install_sigterm()
        _thread.start_new_thread(self._heartbeat, ())

    def _chain_excepthooks(self) -> None:
        previous = sys.excepthook

        def excepthook(exc_type: type[BaseException], exc: BaseException,
                       tb: TracebackType | None) -> None:
            # The type's name only, never the message: messages can hold secrets.
            if self.active():
                self.w.set_exception(exc_type.__qualname__)
            previous(exc_type, exc, tb)

        sys.excepthook = excepthook
        threading: Any = sys.modules.get("threading")  # not imported for this: it costs
        if threading is not None:
            previous_thread_hook = threading.excepthook

            def thread_excepthook(args: Any) -> None:
                if self.active():
                    self.w.set_thread_exception(args.exc_type.__qualname__)
                previous_thread_hook(args)

            threading.excepthook = thread_excepthook

    def _install_fault_files(self) -> None:
        config, w = self.config, self.w
        try:
            self.dir_fd = open_dir(config.diagnostics_dir)
        except StoreError as exc:
            # The session goes on (the ring, levels, read-ring) but nothing is written there.
            warnings.warn(f"watchdog-core: no dumps will be written: {exc}", RuntimeWarning,
                          stacklevel=4)
            return
        if faulthandler.is_enabled():
            w.set_flag(_ring.FLAG_FOREIGN_FAULTHANDLER)
        else:
            try:
                self.crash_fd = create_private_file(
                    self.dir_fd, private_file_name("crash", config.session_id, self.pid))
                faulthandler.enable(file=self.crash_fd, all_threads=True)
                w.set_flag(_ring.FLAG_CRASH_FILE)
            except (OSError, RuntimeError):
                self._close_fd("crash_fd")
        signum = self.stack_signal
        if not signum:
            return
        if _signal.getsignal(signum) not in (_signal.SIG_DFL, None):
            w.set_flag(_ring.FLAG_STACK_SIGNAL_TAKEN)  # the host's own handler: leave it
            return
        try:
            self.stacks_fd = create_private_file(
                self.dir_fd, private_file_name("stacks", config.session_id, self.pid))
            faulthandler.register(signum, file=self.stacks_fd, all_threads=True, chain=False)
            w.set_flag(_ring.FLAG_STACK_SIGNAL)
        except (OSError, RuntimeError, ValueError):
            self._close_fd("stacks_fd")

    def _install_sigterm(self) -> None:
        current = _signal.getsignal(_signal.SIGTERM)
        if current not in (_signal.SIG_DFL, None):
            return  # the host handles SIGTERM itself; its handler decides how it ends
        w = self.w

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.active():
                w.set_flag(_ring.FLAG_SIGTERM)
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
            os.kill(os.getpid(), _signal.SIGTERM)  # die of it, as without the handler

        _signal.signal(_signal.SIGTERM, on_sigterm)
        self.sigterm_handler = on_sigterm

    # -- running -----------------------------------------------------------------------

    def active(self) -> bool:
        return (self.running and os.getpid() == self.pid and not self.handle._stopped
                and self.w.attached)

    def _heartbeat(self) -> None:
        """Write the heartbeat; restart a watchdog that died. Runs until the session ends."""
        hang_after = self.config.hang_after
        period = min(1.0, hang_after / 3) if hang_after else 1.0
        while self.active():
            try:
                self.w.words[_ring.W_HEARTBEAT] = time.monotonic_ns()
                self._reap_or_restart()
            except (ValueError, OSError):  # detached between the check and the write
                return
            time.sleep(period)

    def _reap_or_restart(self) -> None:
        """A dead watchdog is reaped at once (no zombie), and restarted if allowed."""
        handle = self.handle
        process = handle._process
        if process is None or process.alive() or not self.active() or not self.config.restart:
            return
        now = time.monotonic()
        if self.restarts >= MAX_RESTARTS or now - self.last_restart < RESTART_SPACING:
            return
        from ._spawn import spawn_watchdog

        self.restarts += 1
        self.last_restart = now
        process.close_channel()
        try:
            handle._process = spawn_watchdog(str(handle.shm_name), self.config.suggestion)
        except OSError:
            return
        self.w.words[_ring.W_RESTARTS] = self.restarts

    # -- ending ------------------------------------------------------------------------

    def at_exit(self) -> None:
        """atexit: mark the ring *exiting* (not stopped) and let the watchdog judge."""
        if not self.active():
            return
        self.w.set_flag(_ring.FLAG_EXITING)
        process = self.handle._process
        if process is not None:
            if not process.alive() and self.handle.shm_name is not None:
                from ._shm import unlink_segment  # nobody left to clean up after us

                unlink_segment(self.handle.shm_name)
            process.close_channel()

    def uninstall(self) -> None:
        """stop(): take back faulthandler and the signal handlers, remove our files."""
        self.running = False
        self._release_faulthandler()
        if self.sigterm_handler is not None and (
            _signal.getsignal(_signal.SIGTERM) is self.sigterm_handler
        ):  # only our own: a handler the host set since then stays
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        for attr, kind in (("crash_fd", "crash"), ("stacks_fd", "stacks")):
            if getattr(self, attr) >= 0:
                self._close_fd(attr)
                try:
                    os.unlink(private_file_name(kind, self.config.session_id, self.pid),
                              dir_fd=self.dir_fd)
                except OSError:
                    pass
        self._close_fd("dir_fd")

    def after_fork_in_child(self) -> None:
        """A forked child must not write its crashes into the parent's files."""
        self.running = False
        self._release_faulthandler()
        for attr in ("crash_fd", "stacks_fd", "dir_fd"):
            self._close_fd(attr)

    def _release_faulthandler(self) -> None:
        """Undo what we enabled (never what the host enabled itself)."""
        if self.crash_fd >= 0:
            faulthandler.disable()
        if self.stacks_fd >= 0:
            faulthandler.unregister(self.stack_signal)

    def _close_fd(self, attr: str) -> None:
        fd = getattr(self, attr)
        setattr(self, attr, -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
