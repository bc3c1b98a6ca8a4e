"""One session's metrics file in node_exporter's textfile folder (docs/fleet.md).

The watchdog keeps ``watchdog-core+{session}.prom`` there while the host lives: written
at the first sample, then when a value changed (the samples counter aside) but at most
every MIN_GAP seconds, and every REFRESH seconds whatever happens, so that a file
nobody has rewritten for longer is known to be stale. When the host dies uncleanly the
watchdog writes ``watchdog-core+{session}+exit.prom`` (``watchdog_core_host_exit`` and
its time) and removes the live file; a clean end removes it and writes nothing.
Session ids cannot hold ``+``, so the two names never meet.

Files are written as node_exporter asks: a hidden temp file in the folder, renamed
into place, so a scrape never reads half of one. They are 0644 (node_exporter is
another user), in a folder that may be group-writable (a group shared with
node_exporter is the usual setup) but is refused when it is a symlink or writable by
every user. Old files go (``expire``): exit files after ``expire_after`` seconds, live
files nobody has refreshed for as long (and at least 2 REFRESH), temp files a crash
left behind; only our user's, by later watchdogs and by ``watchdog-core gc``.

Stdlib only and no ``typing``: the watchdog loads it when asked to keep a file.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from . import _metrics

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._reader import Status

MIN_GAP = 15.0  # seconds between two writes of a live file, changes or not
REFRESH = 300.0  # seconds after which a live file is rewritten unchanged
DEFAULT_EXPIRE_AFTER = 3600.0
PREFIX, SUFFIX, EXIT_SUFFIX = "watchdog-core+", ".prom", "+exit.prom"
FILE_MODE = 0o644
_TEMP_GRACE = 60.0  # a temp file older than this was left by a watchdog that died


class TextfileError(OSError):
    """The folder cannot take our files (missing, a symlink, open to every user)."""


def open_folder(path: str) -> int:
    """A descriptor of the textfile folder ``path``, never made here (it is
    node_exporter's); TextfileError when it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise TextfileError(f"{path} is a symlink; refusing to write through it") from None
        raise TextfileError(f"cannot open {path}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if mode & stat.S_IWOTH:
        os.close(fd)
        raise TextfileError(f"{path} is writable by every user (mode "
                            f"{stat.S_IMODE(mode):o}); refusing to write there")
    return fd


def live_name(session: str) -> str:
    return f"{PREFIX}{session}{SUFFIX}"


def exit_name(session: str) -> str:
    return f"{PREFIX}{session}{EXIT_SUFFIX}"


def write(dir_fd: int, name: str, text: str) -> int:
    """``text`` as ``name`` in the folder, atomically; the file's inode."""
    temp = f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, FILE_MODE, dir_fd=dir_fd)
    except FileExistsError:  # left by an earlier process of our pid that died
        os.unlink(temp, dir_fd=dir_fd)
        fd = os.open(temp, flags, FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask: node_exporter must read it
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink(dir_fd, temp)
        raise
    return inode


def inode_of(dir_fd: int, name: str) -> int | None:
    """The inode ``name`` has in the folder now (a link's own), None when it is gone."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino
    except OSError:
        return None


def remove_if_ours(dir_fd: int, name: str, inode: int) -> None:
    """Remove ``name`` if it is still the file we wrote: a later host of the same
    session (a restarted kernel) may have put its own there since."""
    if inode_of(dir_fd, name) == inode:
        _unlink(dir_fd, name)


def expire(dir_fd: int, expire_after: float, now: float | None = None,
           dry_run: bool = False, failed: list[str] | None = None) -> list[str]:
    """Remove our user's old files from the folder (see the module's docstring); the
    names removed (or that would be, with ``dry_run``). Those that could not be
    removed (a read-only folder) go to ``failed`` with the reason."""
    now = time.time() if now is None else now
    me = os.geteuid()
    stale_live = max(expire_after, 2 * REFRESH)
    gone: list[str] = []
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return gone
    for name in names:
        if name.startswith(PREFIX) and name.endswith(EXIT_SUFFIX):
            after = expire_after
        elif name.startswith(PREFIX) and name.endswith(SUFFIX):
            after = stale_live
        elif name.startswith("." + PREFIX) and name.endswith(".tmp"):
            after = _TEMP_GRACE
        else:
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != me or not stat.S_ISREG(st.st_mode) or now - st.st_mtime < after:
            continue
        if dry_run:
            gone.append(name)
            continue
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            continue  # another sweep took it
        except OSError as exc:
            if failed is not None:
                failed.append(f"{name}: {exc.strerror}")
            continue
        gone.append(name)
    return gone


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


class SessionFile:
    """The watchdog's file for its host: ``update`` after every sample, ``host_died``
    or ``host_ended`` at the end. Every error is one line (``say``) per kind, and the
    watchdog goes on: metrics are never worth the postmortem."""

    def __init__(self, path: str, session: str, host_pid: int, start_ticks: int,
                 expire_after: float, say: Callable[[str], None],
                 program: str | None = None) -> None:
        """``program``: the host's name where the caller knows it better than its comm
        now (``run``, whose child may not have exec'd yet)."""
        self.path, self.session, self.expire_after = path, session, expire_after
        self.host_pid, self.start_ticks = host_pid, start_ticks
        self._say = say
        self.errors: set[str] = set()
        self.dir_fd = -1
        # Read now, while the host surely lives: one killed before the first sample
        # must still be named by its exit file.
        self.program = program or _metrics.program_name(host_pid, start_ticks)
        self.inode = 0  # of the live file we wrote last; 0 when there is none
        self.written_at = 0.0  # time.monotonic() of that write
        self.written: tuple[object, ...] = ()  # the values it holds
        self.swept_at: float | None = None  # time.monotonic() of the last expire()
        try:
            self.dir_fd = open_folder(path)
        except TextfileError as exc:
            self._error("open", f"no metrics file: {exc}")

    def may_write(self, now: float) -> bool:
        """Could ``update`` write now? Not within MIN_GAP of the last write: the caller
        then skips reading what it would be given."""
        return self.dir_fd >= 0 and (not self.inode or now - self.written_at >= MIN_GAP)

    def update(self, status: Status, dumps: dict[str, int], now: float) -> None:
        """After a sample: rewrite the live file if due (see the module's docstring)."""
        if not self.may_write(now):
            return
        series = _metrics.live_series(status, dumps)
        values = tuple(v for family, _, v in series if family is not _metrics.SAMPLES)
        if (self.inode and values == self.written and now - self.written_at < REFRESH
                and inode_of(self.dir_fd, live_name(self.session)) == self.inode):
            return  # unchanged, and still ours: another host of the id may replace it
        labels = _metrics.session_labels(self.session, self.program, status.limit_source)
        try:
            self.inode = write(self.dir_fd, live_name(self.session),
                               _metrics.render(_metrics.TEXTFILE, [(labels, series)]))
        except OSError as exc:
            self._error(f"write:{exc.errno}", f"cannot write the metrics file in "
                        f"{self.path}: {exc.strerror}")
            return
        self.written_at, self.written = now, values
        if self.swept_at is None or now - self.swept_at >= REFRESH:
            self.swept_at = now  # at the first write and at every refresh after it
            expire(self.dir_fd, self.expire_after)

    def host_died(self, kind: str, signal: str | None, confidence: str) -> None:
        """The host died uncleanly: its live file out, then its exit file in (in that
        order: on a full disk the live file's blocks are what the exit file needs)."""
        if self.dir_fd < 0:
            return
        if self.inode:
            remove_if_ours(self.dir_fd, live_name(self.session), self.inode)
            self.inode = 0
        labels = _metrics.session_labels(self.session, self.program)
        text = _metrics.render(_metrics.EXIT, [(labels, _metrics.exit_series(
            kind, signal, confidence, round(time.time(), 3)))])
        try:
            write(self.dir_fd, exit_name(self.session), text)
        except OSError as exc:
            self._error(f"write:{exc.errno}", f"cannot write the metrics file in "
                        f"{self.path}: {exc.strerror}")
        self.host_ended()

    def host_ended(self) -> None:
        """The session is over (a clean end, or after ``host_died``): no live file."""
        if self.dir_fd < 0:
            return
        if self.inode:
            remove_if_ours(self.dir_fd, live_name(self.session), self.inode)
            self.inode = 0
        os.close(self.dir_fd)
        self.dir_fd = -1

    def _error(self, key: str, message: str) -> None:
        if key not in self.errors:
            self.errors.add(key)
            self._say(message)
