"""Starting the watchdog interpreter and the channels between it and the host (docs/design.md).

Three descriptors go to the watchdog:

* the segment, opened afresh and holding the watchdog's lock (see ``_shm``): taken
  here, before the spawn, so a ring is never without a lock holder while its
  watchdog boots; the watchdog maps the ring from it, so it watches exactly the
  segment its host created;
* a pidfd of the host (``os.pidfd_open(os.getpid())``): it turns readable the
  moment the host exits, killed or not, and it cannot be fooled by pid reuse;
* the read end of the *control pipe*. The host keeps the only write end (not
  inherited by exec'd children, closed in forked ones), writes a byte to wake
  the watchdog for a request, and closes it on ``stop()``/exit. Where pidfd is
  missing (macOS, old kernels) EOF on this pipe is the death notification.

``os.posix_spawn`` rather than ``subprocess``: importing subprocess costs
15-50 ms in the host (docs/performance.md), and posix_spawn does the one thing needed.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import SessionConfig

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WatchdogProcess:
    """The host's view of its watchdog child."""

    __slots__ = ("pid", "ctl_fd", "_reaped")

    def __init__(self, pid: int, ctl_fd: int) -> None:
        self.pid = pid
        self.ctl_fd = ctl_fd
        self._reaped = False

    def wake(self) -> None:
        """Tell the watchdog to look at the request word now."""
        if self.ctl_fd >= 0:
            try:
                os.write(self.ctl_fd, b"r")
            except OSError:  # watchdog gone (EPIPE) or the pipe full: it polls anyway
                pass

    def close_channel(self) -> None:
        """Close our write end: the watchdog sees EOF (stop, exit, or after fork)."""
        fd, self.ctl_fd = self.ctl_fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def alive(self) -> bool:
        """True while the watchdog runs; reaps it (no zombie) once it has exited."""
        if self._reaped:
            return False
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # someone else reaped it (a host calling os.wait())
            self._reaped = True
            return False
        if pid == 0:
            return True
        self._reaped = True
        return False

    def wait(self, timeout: float) -> bool:
        """Reap the watchdog within ``timeout`` seconds; False if it is still running."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def reap_later(self) -> None:
        """Reap the watchdog whenever it exits, from a thread of its own: after stop()
        nothing else would, and it would stay a zombie for the host's life."""
        import _thread

        def reap() -> None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:  # someone reaped it first (a host's os.wait())
                pass
            self._reaped = True

        if not self._reaped:
            _thread.start_new_thread(reap, ())

    def disown(self) -> None:
        """Forget the child without touching it (after fork: it is the parent's)."""
        self._reaped = True
        self.ctl_fd = -1


class ParentWatchdog(WatchdogProcess):
    """The watchdog of a session joined from ``watchdog-core run``: the host's parent,
    which answers requests at its next sample and reaps the host itself. Nothing to
    wake, close, wait for or reap; it lives while it is still our parent."""

    __slots__ = ()

    def __init__(self, pid: int) -> None:
        super().__init__(pid, -1)

    def alive(self) -> bool:
        return os.getppid() == self.pid

    def wait(self, timeout: float) -> bool:
        return True

    def reap_later(self) -> None:
        pass


def watchdog_argv(shm_name: str, lock_fd: int, pidfd: int, ctl_fd: int,
                  config: SessionConfig) -> list[str]:
    # -P (3.11+) keeps the host's working directory off sys.path: the watchdog must
    # never import a module of the host's (docs/design.md).
    argv = [sys.executable]
    if sys.version_info >= (3, 11):
        argv.append("-P")
    argv += ["-m", "watchdog_core._watchdog", "--shm", shm_name, "--lock", str(lock_fd),
             "--pidfd", str(pidfd), "--ctl", str(ctl_fd)]
    for level, text in config.suggestion.items():
        argv += ["--suggestion", f"{level}={text}"]
    if config.prometheus_textfile_dir:  # a folder's name: nothing private in argv
        argv += ["--prometheus", config.prometheus_textfile_dir,
                 "--prometheus-expire", repr(config.prometheus_expire_after)]
    return argv


def spawn_watchdog(shm_name: str, config: SessionConfig) -> WatchdogProcess:
    """Start ``python -m watchdog_core._watchdog`` for this host's ring.

    Raises OSError when the process cannot be started; the caller turns that into
    a disabled handle, never an exception in the host.
    """
    from ._shm import lock_for_watchdog, release

    lock_fd = lock_for_watchdog(shm_name)
    try:
        pidfd = _own_pidfd()
        ctl_read, ctl_write = os.pipe()
    except BaseException:
        release(lock_fd)
        raise
    passed = [fd for fd in (pidfd, ctl_read) if fd >= 0]
    try:
        for fd in (lock_fd, *passed):
            os.set_inheritable(fd, True)
        env = dict(os.environ)
        if config.sentry is not None:  # the DSN holds a key: never in argv (_sentry_host)
            from ._sentry_host import ENV, encode

            env[ENV] = encode(config.sentry)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + path if path else "")
        pid = os.posix_spawn(
            sys.executable,
            watchdog_argv(shm_name, lock_fd, pidfd, ctl_read, config),
            env,
            file_actions=_stdio_actions(),
            setsid=True,  # Ctrl-C in the terminal goes to the host, not the watchdog
        )
    except BaseException:
        os.close(ctl_write)
        raise
    finally:
        release(lock_fd)  # the watchdog's copy carries on, and the lock with it
        for fd in passed:
            os.close(fd)
    return WatchdogProcess(pid, ctl_write)


def _own_pidfd() -> int:
    pidfd_open = getattr(os, "pidfd_open", None)
    # WATCHDOG_CORE_NO_PIDFD=1 takes the pipe-only path that macOS and old kernels use,
    # so that path is exercised by the tests on Linux too.
    if pidfd_open is None or os.environ.get("WATCHDOG_CORE_NO_PIDFD") == "1":
        return -1
    try:
        return int(pidfd_open(os.getpid()))
    except OSError:  # kernel < 5.3, or seccomp says no: the control pipe covers it
        return -1


def _stdio_actions() -> Sequence[tuple[int, ...] | tuple[int, int, str, int, int]]:
    # stdin and stdout from /dev/null: a watchdog holding the host's stdout pipe would
    # keep a reader waiting for EOF. stderr stays: the postmortem's path goes there.
    return [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    ]
