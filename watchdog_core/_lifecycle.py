"""What the host installs into its own process for a session (docs/design.md,
"Dying, hanging, losing the watchdog").

* atexit marks the ring *exiting*; ``sys.excepthook`` and ``threading.excepthook``
  write an uncaught exception's type name (never its message) and chain on. These
  three belong to the process: each is installed once and dispatches to the session
  running now, so start/stop cycles add nothing;
* ``faulthandler`` writes every thread's traceback to a per-session crash file
  when the host segfaults or aborts (unless the host enabled faulthandler
  itself: then it is left alone and the ring says so);
* ``faulthandler.register`` dumps every thread's stack to a stacks file on the
  stack signal (SIGUSR2 by default), which the watchdog sends when the host
  stops responding; faulthandler's C handler works even while the GIL is held;
* a heartbeat thread writes ``CLOCK_MONOTONIC`` into the ring every second and
  restarts a watchdog that died (a few times at most); with ``hang_after`` it also
  notes when the main thread's innermost frame last changed (``_mainframe``);
* an uncaught exception's frames (file, line, function: code, no values) go to a
  private file beside the dumps, for the postmortem;
* with ``catch_sigterm=True``, SIGTERM is noted in the ring, then re-raised.

The first rule: what we install must never hurt the host. A handler is installed only
over the default disposition, and taken back only while it is still ours; the stack
signal's "ours" is kept current in the ring (FLAG_STACK_SIGNAL, FLAG_STACK_SIGNAL_LOST)
because the watchdog sends that signal only while the flag says so.

Stdlib only: ``_signal`` and ``_thread`` rather than ``signal`` and ``threading``
where the public module would import ``enum`` (8 ms) into the host (docs/design.md).
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
from ._announce import Announcer
from ._mainframe import MainFrameWatch
from ._safedir import StoreError, create_private_file, open_dir, private_file_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, TracebackType
    from typing import Any

    from ._extras import HostExtras
    from ._host import Watchdog

MAX_RESTARTS = 3
MAX_FRAMES = 64  # of an uncaught exception's traceback, the innermost kept
RESTART_SPACING = 2.0  # seconds between two restarts of a dying watchdog

# -- process-wide hooks: installed once, dispatching to the running session --------------
#
# atexit, sys.excepthook, threading.excepthook and the SIGTERM handler belong to the
# process, not to a session. Registered per session, 1,000 `with start_watchdog(): ...`
# cycles left 1,000 atexit callbacks and a 1,000-deep excepthook chain (a RecursionError
# at the end), every link keeping its stopped session and a scratch mapping alive. So
# each is installed once and finds the session running now in `_session`.

_session: HostHooks | None = None  # the running session in this process, if any
_atexit_registered = False


def _at_exit() -> None:
    session = _session
    if session is not None:
        session.at_exit()


class _ExceptHook:
    """Our link in ``sys.excepthook``'s chain: notes the exception, calls on."""

    __slots__ = ("previous",)

    def __init__(self, previous: Callable[..., object]) -> None:
        self.previous = previous

    def __call__(self, exc_type: type[BaseException], exc: BaseException,
                 tb: TracebackType | None) -> None:
        session = _session
        try:
            if session is not None:
                session.note_exception(exc_type, in_thread=False, tb=tb)
        finally:  # the host's hook runs whatever happened here
            self.previous(exc_type, exc, tb)


class _ThreadExceptHook:
    """Our link in ``threading.excepthook``'s chain: notes the exception, calls on."""

    __slots__ = ("previous",)

    def __init__(self, previous: Callable[..., object]) -> None:
        self.previous = previous

    def __call__(self, args: Any) -> None:
        session = _session
        try:
            if session is not None:
                session.note_exception(getattr(args, "exc_type", None), in_thread=True)
        finally:  # the host's hook runs whatever happened here
            self.previous(args)


def _interactive() -> bool:
    """An interactive interpreter (``python -i``, the REPL, ``code.interact()``)
    survives an uncaught exception: sys.excepthook prints it and the prompt returns."""
    return bool(sys.flags.interactive) or hasattr(sys, "ps1")


def _install_process_hooks() -> None:
    """atexit once per process; each excepthook once, and again only over a hook the
    host has put in its place since (at most once per replacement: the host's keeps
    working, ours is chained in front of it)."""
    global _atexit_registered
    if not _atexit_registered:
        import atexit

        atexit.register(_at_exit)
        _atexit_registered = True
    if type(sys.excepthook) is not _ExceptHook:
        sys.excepthook = _ExceptHook(sys.excepthook)
    threading: Any = sys.modules.get("threading")  # not imported for this: it costs
    if threading is not None and type(threading.excepthook) is not _ThreadExceptHook:
        threading.excepthook = _ThreadExceptHook(threading.excepthook)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """catch_sigterm: note SIGTERM in the ring, then die of it as without a handler.

    One function for every session, so a handler left in place (stop() outside the
    main thread cannot restore the default) is recognised as ours by the next session,
    and with no session catching SIGTERM it behaves exactly as the default would.
    """
    session = _session
    if session is not None and session.sigterm_caught and session.active():
        session.w.set_flag(_ring.FLAG_SIGTERM)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    os.kill(os.getpid(), _signal.SIGTERM)


def _signal_caught(signum: int) -> bool | None:
    """Whether the kernel says this process catches ``signum`` (``SigCgt`` in
    /proc/self/status); None where that cannot be read.

    ``signal.getsignal()`` knows only handlers installed through the signal module:
    faulthandler's, or one a C extension installed with sigaction, are invisible to it.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line[7:], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return None


class HostHooks:
    """The session's hooks in this process; ``uninstall`` undoes what can be undone."""

    def __init__(self, handle: Watchdog) -> None:
        self.handle = handle
        self.config = handle._config
        self.w = handle._w
        self.pid = os.getpid()
        self.nonce = int(self.w.words[_ring.W_NONCE])  # in our private files' names
        self.crash_fd = -1
        self.stacks_fd = -1
        self.dir_fd = -1
        self.stack_signal = self.config.stack_signal
        self.stack_registered = False  # faulthandler.register(stack_signal) is ours to undo
        self.stack_seen: object = None  # getsignal(stack_signal) right after registering
        self.stack_lost = False  # the host installed its own handler since; for good
        self.sigterm_caught = False  # _on_sigterm is installed for this session
        self.restarts = 0
        self.last_restart = 0.0
        self.main: MainFrameWatch | None = None  # hang_after: the main thread's frame
        self.announcer = Announcer(handle, self.config.on_pressure)
        self.extras: HostExtras | None = None  # extras=...: served when the watchdog asks
        if self.config.extras:
            from ._extras import HostExtras

            self.extras = HostExtras(handle)
        self.running = True
        # stop() releases `_wake` so the heartbeat ends at once, and waits for it on
        # `_beating` (held while the thread runs): one heartbeat thread at a time.
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._beating = _thread.allocate_lock()

    # -- install -----------------------------------------------------------------------

    def install(self) -> None:
        """Install the session's hooks. May raise (a thread limit, say): the caller then
        stops the session, and ``uninstall`` undoes whatever part was done."""
        global _session
        _install_process_hooks()
        self._install_fault_files()
        if self.config.catch_sigterm:
            self._install_sigterm()
        if self.config.hang_after:
            self.main = MainFrameWatch(self.w.words)
        self._beating.acquire()
        try:
            _thread.start_new_thread(self._heartbeat, ())
        except BaseException:
            self._beating.release()
            raise
        _session = self

    def _install_fault_files(self) -> None:
        config, w = self.config, self.w
        if self.handle._dir_refused:  # no folder at all: start_watchdog() has said so once
            return
        try:
            # The folder start_watchdog() chose (its fallback chain) and checked just now;
            # opened afresh, so checked again.
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
                self.crash_fd = create_private_file(self.dir_fd, private_file_name(
                    "crash", config.session_id, self.pid, self.nonce))
                faulthandler.enable(file=self.crash_fd, all_threads=True)
                w.set_flag(_ring.FLAG_CRASH_FILE)
            except (OSError, RuntimeError):
                self._close_fd("crash_fd")
        signum = self.stack_signal
        if not signum:
            return
        # Only over the default disposition as both the signal module and the kernel see
        # it: a handler a C extension installed (SigCgt set, getsignal() unaware) is the
        # host's too, and faulthandler with chain=False would silence it.
        if _signal.getsignal(signum) not in (_signal.SIG_DFL, None) or _signal_caught(signum):
            w.set_flag(_ring.FLAG_STACK_SIGNAL_TAKEN)  # the host's own handler: leave it
            return
        try:
            self.stacks_fd = create_private_file(
                self.dir_fd, private_file_name("stacks", config.session_id, self.pid, self.nonce))
            faulthandler.register(signum, file=self.stacks_fd, all_threads=True, chain=False)
        except (OSError, RuntimeError, ValueError):
            self._close_fd("stacks_fd")
            return
        self.stack_registered = True
        # faulthandler installs its handler with sigaction, behind the signal module's
        # back, so getsignal() still returns what it did before; the host's signal.signal()
        # for this signal later changes it. That change is how we learn the handler is no
        # longer ours (_check_stack_signal).
        self.stack_seen = _signal.getsignal(signum)
        w.set_flag(_ring.FLAG_STACK_SIGNAL)

    def _install_sigterm(self) -> None:
        current = _signal.getsignal(_signal.SIGTERM)
        if current is _on_sigterm:  # left by an earlier session (stopped off the main thread)
            self.sigterm_caught = True
            return
        if current not in (_signal.SIG_DFL, None) or _signal_caught(_signal.SIGTERM):
            return  # the host handles SIGTERM itself; its handler decides how it ends
        try:
            _signal.signal(_signal.SIGTERM, _on_sigterm)
        except ValueError:  # signal.signal() works only in the main thread
            warnings.warn(
                "watchdog-core: catch_sigterm=True ignored: start_watchdog() was called "
                "outside the main thread, and only the main thread can install a signal "
                "handler", RuntimeWarning, stacklevel=4)
            return
        self.sigterm_caught = True

    def note_exception(self, exc_type: object, *, in_thread: bool,
                       tb: TracebackType | None = None) -> None:
        """For our excepthooks: the type's name only, never the message (messages can
        hold secrets), and where it was raised. Never raises: the host's own hook is
        called next."""
        name = getattr(exc_type, "__qualname__", None)
        if not isinstance(name, str) or not self.active():
            return
        if not in_thread and _interactive():
            return  # the REPL prints it and goes on: not how this process will end
        try:
            if in_thread:
                self.w.set_thread_exception(name)
            else:
                self._save_frames(tb)
                self.w.set_exception(name)
                if "sentry_sdk" in sys.modules:  # its own SDK reports this one itself
                    from ._sentry_host import host_client

                    if host_client() is not None:
                        self.w.set_flag(_ring.FLAG_HOST_SENTRY)
        except (TypeError, ValueError):  # detached between the check and the write
            pass

    def _save_frames(self, tb: TracebackType | None) -> None:
        """The traceback's frames, one ``line<TAB>function<TAB>file`` per line, outermost
        first, into the session's private exception file. The innermost MAX_FRAMES are
        kept (a RecursionError has a thousand)."""
        if tb is None or self.dir_fd < 0:
            return
        lines = []
        while tb is not None:
            code = tb.tb_frame.f_code
            where = code.co_filename.replace("\t", "?").replace("\n", "?")
            function = getattr(code, "co_qualname", code.co_name)  # 3.11+: Class.method
            lines.append(f"{tb.tb_lineno}\t{function}\t{where}")
            tb = tb.tb_next
        if len(lines) > MAX_FRAMES:
            lines[: -MAX_FRAMES] = [f"# {len(lines) - MAX_FRAMES} frames omitted"]
        try:
            fd = create_private_file(self.dir_fd, private_file_name(
                "exception", self.config.session_id, self.pid, self.nonce))
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:  # a full disk: the type name in the ring still says what it was
            pass

    # -- running -----------------------------------------------------------------------

    def active(self) -> bool:
        return (self.running and os.getpid() == self.pid and not self.handle._stopped
                and self.w.attached)

    def _heartbeat(self) -> None:
        """Write the heartbeat, notice a stack signal the host took over, restart a
        watchdog that died. Runs until the session ends; stop() wakes it and waits."""
        config = self.config
        period = min(1.0, config.hang_after / 3) if config.hang_after else 1.0
        if config.on_pressure is not None:  # the host's callback hears of a change soon
            period = min(period, config.interval)
        try:
            while self.active():
                try:
                    self.w.words[_ring.W_HEARTBEAT] = time.monotonic_ns()
                    if self.main is not None:
                        self.main.look(self.active)
                    self.announcer.check()
                    if self.extras is not None:
                        self.extras.check()
                    if self.stack_registered and not self.stack_lost:
                        self._check_stack_signal()
                    self._reap_or_restart()
                except (ValueError, OSError):  # detached between the check and the write
                    return
                if self._wake.acquire(True, period):
                    return
        finally:
            if self.main is not None:
                self.main.forget()
            self.announcer.stop()
            self._beating.release()

    def _check_stack_signal(self) -> None:
        # A host that calls signal.signal() for the stack signal after us (a gunicorn
        # master uses SIGUSR2 for binary upgrades) changes what getsignal() returns:
        # from then on the handler is the host's, and the watchdog must never send it.
        if _signal.getsignal(self.stack_signal) is not self.stack_seen:
            self._lose_stack_signal()

    def _lose_stack_signal(self) -> None:
        """The handler is the host's now: say so in the ring, for the rest of the session
        (a host that puts SIG_DFL back has not given it back to us)."""
        self.stack_lost = True
        self._set_stack_flags(_ring.FLAG_STACK_SIGNAL_LOST)

    def _set_stack_flags(self, add: int) -> None:
        """Clear FLAG_STACK_SIGNAL and set ``add``, in our own ring only."""
        w = self.w
        if w.attached and os.getpid() == self.pid:
            words = w.words
            # One expression with no call between the read and the write: under the
            # GIL no other thread's set_flag() can fall in between (set_flag is the same).
            words[_ring.W_FLAGS] = words[_ring.W_FLAGS] & ~_ring.FLAG_STACK_SIGNAL | add

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
            handle._process = spawn_watchdog(str(handle.shm_name), self.config)
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

                unlink_segment(self.handle.shm_name, self.w.lock_fd)
            process.close_channel()

    def quiesce(self, timeout: float) -> None:
        """stop(), first part, while the watchdog may still run: end the heartbeat (so no
        restart either) and take the stack signal off the ring, so the watchdog asks for
        no more stacks before uninstall() takes the handler down."""
        self.running = False
        try:
            self._wake.release()
        except RuntimeError:  # released already
            pass
        if self._beating.acquire(True, timeout):
            self._beating.release()
        if self.stack_registered and not self.stack_lost:
            if self._stack_signal_ours():
                self._set_stack_flags(0)
            else:
                self._lose_stack_signal()

    def uninstall(self) -> None:
        """stop(), once the watchdog has gone (it can send no stack signal any more):
        take back what is still ours, remove our files. Never touches what is not ours."""
        global _session
        self.running = False
        if _session is self:
            _session = None
        self._release_faulthandler(in_child=False)
        if self.sigterm_caught and _signal.getsignal(_signal.SIGTERM) is _on_sigterm:
            # Only our own: a handler the host set since then stays.
            try:
                _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
            except ValueError:
                # stop() outside the main thread cannot; _on_sigterm stays, and with no
                # session catching SIGTERM it dies of it exactly as the default would.
                pass
        self.sigterm_caught = False
        for attr, kind in (("crash_fd", "crash"), ("stacks_fd", "stacks")):
            if getattr(self, attr) >= 0:
                self._close_fd(attr)
                self._remove_private(kind)
        if self.dir_fd >= 0:  # an exception a REPL survived left its frames
            self._remove_private("exception")
        self._close_fd("dir_fd")

    def _remove_private(self, kind: str) -> None:
        try:
            os.unlink(private_file_name(kind, self.config.session_id, self.pid, self.nonce),
                      dir_fd=self.dir_fd)
        except OSError:
            pass

    def after_fork_in_child(self) -> None:
        """A forked child must not write its crashes into the parent's files, and writes
        nothing into the parent's ring (its flags included: the parent's session goes
        on). Threads do not survive a fork: the heartbeat is the parent's alone."""
        global _session
        self.running = False
        if _session is self:
            _session = None
        self._release_faulthandler(in_child=True)
        if self.main is not None:
            self.main.forget()
        for attr in ("crash_fd", "stacks_fd", "dir_fd"):
            self._close_fd(attr)

    def _stack_signal_ours(self) -> bool:
        """Whether faulthandler's handler for the stack signal is still installed, as far
        as this process can tell (the limits are in docs/design.md)."""
        if not self.stack_registered or self.stack_lost:
            return False
        if _signal.getsignal(self.stack_signal) is not self.stack_seen:
            return False  # the host's signal.signal() since
        # Not caught at all: reset to the default or ignored from C behind getsignal().
        return _signal_caught(self.stack_signal) is not False

    def _release_faulthandler(self, *, in_child: bool) -> None:
        """Undo what we enabled (never what the host enabled itself)."""
        if self.crash_fd >= 0:
            # faulthandler cannot say which file it writes to: if the host called
            # faulthandler.enable() itself after us, this turns its off too.
            faulthandler.disable()
        if self.stack_registered:
            if self._stack_signal_ours():
                # unregister() puts back the disposition saved at register() (the
                # default): right only while faulthandler's handler is the one in place.
                faulthandler.unregister(self.stack_signal)
            elif not self.stack_lost and not in_child:
                self._lose_stack_signal()
            # Not ours: the registration stays. faulthandler's handler is no longer
            # installed, so nothing writes to the stacks file's descriptor any more and
            # it can be closed; unregistering would reset the host's handler.
            self.stack_registered = False

    def _close_fd(self, attr: str) -> None:
        fd = getattr(self, attr)
        setattr(self, attr, -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
