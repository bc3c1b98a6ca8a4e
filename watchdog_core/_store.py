"""The diagnostics directory: naming, atomic writes, retention (docs/design.md).

* Every file is created relative to a descriptor of the directory, opened with
  ``O_NOFOLLOW | O_DIRECTORY``, with ``O_NOFOLLOW | O_EXCL``: a planted symlink
  is never followed, an existing file never overwritten.
* A dump's name is claimed without a lock: the complete temp file is hard-linked
  to ``memory-{session}-{timestamp}.json``; ``EEXIST`` moves the timestamp on by
  one microsecond and tries again. Readers never see a partial file.
* The second, enriched version replaces the first with ``rename`` and is the
  only one fsynced (with the directory), so the quick first phase costs
  microseconds.
* The ``filelock`` guards only what reads and then rewrites the directory:
  retention. Collection and writing never wait for it.
"""

from __future__ import annotations

import os
import re
import time

from ._safedir import FILE_MODE, StoreError, open_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from filelock import FileLock

__all__ = ["DiagnosticsDir", "StoreError", "dump_name", "dump_set_of", "dump_timestamp"]

LOCK_NAME = ".watchdog-core.lock"
DUMP_PREFIX = "memory-"
DEFAULT_MAX_FILES = 100
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# filelock polls (50 ms by default); 5 ms cut the p99 wait under 64-way contention in
# benchmarks/lock_contention.py without the CPU cost of polling faster on 2 cores.
LOCK_POLL = 0.005



def dump_timestamp(wall_ns: int) -> tuple[str, str]:
    """(name part ``20261125T174001.123456Z``, ISO ``2026-11-25T17:40:01.123456Z``)."""
    # Integer microseconds: a float of seconds since 1970 cannot hold them exactly. And
    # time, not datetime: the watchdog would load datetime for this alone.
    seconds, micros = divmod(wall_ns // 1000, 1_000_000)
    t = time.gmtime(seconds)
    return (time.strftime("%Y%m%dT%H%M%S", t) + f".{micros:06d}Z",
            time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{micros:06d}Z")


def dump_name(session_id: str, wall_ns: int) -> str:
    return f"{DUMP_PREFIX}{session_id}-{dump_timestamp(wall_ns)[0]}.json"


# The name part of dump_timestamp; followed by the "." that starts a file's suffix.
# [0-9], not \d: \d also matches other scripts' digits.
_STAMP = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z(?=\.)")
_SESSION = re.compile(r"[A-Za-z0-9._-]{1,64}")


def dump_set_of(name: str) -> tuple[str, str] | None:
    """(stem, timestamp) of a file in a dump set; None for any other name.

    A set is every file named ``{stem}{suffix}``, where the stem is
    ``memory-{session}-{timestamp}`` and the suffix starts with ``.`` (``.json``,
    ``.ring``, ``.stacks.txt``, ...). The timestamp is the last one in the name followed
    by ``.``: a session id may itself hold ``.json``, ``-``, ``.`` or a timestamp.
    """
    if not name.startswith(DUMP_PREFIX):
        return None  # hidden files (.tmp-, .crash-, the lock) and foreign ones
    stamps = list(_STAMP.finditer(name, len(DUMP_PREFIX)))  # they cannot overlap
    if not stamps:
        return None
    last = stamps[-1]
    session = name[len(DUMP_PREFIX) : last.start()]
    if not session.endswith("-") or not _SESSION.fullmatch(session[:-1]):
        return None
    return name[: last.end()], last.group()


class DiagnosticsDir:
    """An opened diagnostics directory, safe against symlinks and collisions."""

    def __init__(self, path: str, *, max_files: int = DEFAULT_MAX_FILES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = os.path.abspath(path)
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._fd = -1
        self._tmp_counter = 0
        self.last_lock_wait: float | None = None  # seconds, for the contention benchmark

    def open(self) -> int:
        """The directory's descriptor, creating the directory (0700) if needed."""
        if self._fd < 0:
            self._fd = open_dir(self.path)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- writing --------------------------------------------------------------------

    def _write_temp(self, data: bytes, *, sync: bool) -> str:
        dfd = self.open()
        self._tmp_counter += 1
        name = f".tmp-{os.getpid()}-{self._tmp_counter}-{os.urandom(4).hex()}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE,
                     dir_fd=dfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(name, dfd)
            raise
        os.close(fd)
        return name

    def publish(self, session_id: str, wall_ns: int, data: bytes) -> str:
        """Write ``data`` under a new, unique dump name; returns the name.

        Never overwrites: the name is claimed by ``link``, which fails on anything
        already there (file or symlink).
        """
        dfd = self.open()
        tmp = self._write_temp(data, sync=False)
        try:
            for _ in range(10_000):
                name = dump_name(session_id, wall_ns)
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    wall_ns += 1000  # the next microsecond
                    continue
                return name
            raise StoreError(f"no free dump name for session {session_id}")
        finally:
            _unlink_quietly(tmp, dfd)

    def replace(self, name: str, data: bytes) -> None:
        """Atomically replace our own file ``name`` with ``data``, fsynced once."""
        dfd = self.open()
        tmp = self._write_temp(data, sync=True)
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            _unlink_quietly(tmp, dfd)
            raise
        os.fsync(dfd)

    def write_new(self, name: str, data: bytes) -> None:
        """Write a sibling file (``.ring``, stacks) that must not exist yet."""
        dfd = self.open()
        tmp = self._write_temp(data, sync=True)
        try:
            os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            _unlink_quietly(tmp, dfd)

    def read_private(self, name: str, limit: int = 256 * 1024) -> str | None:
        """Read one of the host's hidden files (crash, stacks); None if absent."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.open())
        except OSError:
            return None
        try:
            raw = os.read(fd, limit + 1)
        finally:
            os.close(fd)
        text = raw[:limit].decode("utf-8", "replace")
        return text + "\n[truncated]\n" if len(raw) > limit else text

    def read_dump(self, name: str, limit: int = 16 << 20) -> bytes | None:
        """The bytes of one of our dump files, or None if it cannot be read."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.open())
        except OSError:
            return None
        try:
            return os.read(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)

    def open_private(self, name: str) -> int | None:
        """A read-only descriptor of one of the host's hidden files, or None."""
        try:
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.open())
        except OSError:
            return None

    def remove_private(self, name: str) -> None:
        try:
            _unlink_quietly(name, self.open())
        except OSError:
            pass

    # -- retention ------------------------------------------------------------------

    def prune(self, keep: str | None = None, lock_timeout: float = 10.0,
              dry_run: bool = False, poll_interval: float = LOCK_POLL) -> list[str]:
        """Delete the oldest dump sets beyond ``max_files``/``max_bytes``; never ``keep``'s.

        A dump set is the JSON and every sibling sharing its stem (``.ring``,
        ``.stacks.txt``, ...; see ``dump_set_of``), removed together; the oldest has the
        earliest timestamp in its name. ``max_files`` counts sets, ``max_bytes`` all their
        files. Runs under the directory's file lock; returns the names removed.
        """
        dfd = self.open()
        self.last_lock_wait = None
        if not self._over_limits(dfd):
            return []  # the common case: no lock at all, so no session waits for another
        self._check_lock_file(dfd)
        # Loaded only now, when retention must prune: a watchdog that never prunes never
        # pays for it (filelock brings asyncio with it).
        from filelock import FileLock

        lock = FileLock(os.path.join(self.path, LOCK_NAME), timeout=lock_timeout,
                        mode=FILE_MODE)
        asked = time.monotonic()
        if not _acquire(lock, lock_timeout, poll_interval):
            return []
        try:
            self.last_lock_wait = time.monotonic() - asked
            return self._prune_locked(dfd, keep, dry_run)
        finally:
            lock.release()

    def _check_lock_file(self, dfd: int) -> None:
        """filelock opens its file following symlinks: make sure ours is a plain file."""
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE,
                         dir_fd=dfd)
        except OSError as exc:
            raise StoreError(f"{os.path.join(self.path, LOCK_NAME)} is not a plain file "
                             f"({exc.strerror}); refusing to lock through it") from exc
        os.close(fd)

    def _over_limits(self, dfd: int) -> bool:
        """A look without the lock: is there anything to prune? (Re-checked under it.)"""
        sets = _dump_sets(dfd)
        size = sum(size for files in sets.values() for _, size in files)
        return len(sets) > self.max_files or size > self.max_bytes

    def _prune_locked(self, dfd: int, keep: str | None, dry_run: bool = False) -> list[str]:
        sets = _dump_sets(dfd)
        kept = dump_set_of(keep) if keep else None
        total = sum(size for files in sets.values() for _, size in files)
        count = len(sets)
        removed: list[str] = []
        # Oldest first: by the timestamp in the name (fixed width, so it sorts as text),
        # then by stem. Not by mtime: a copy, a restore or a touch changes it.
        for stamp, stem in sorted(sets):
            if count <= self.max_files and total <= self.max_bytes:
                break
            if kept is not None and stem == kept[0]:
                continue
            for name, size in sorted(sets[stamp, stem]):
                if dry_run or _unlink_quietly(name, dfd):
                    removed.append(name)
                    total -= size
            count -= 1
        return removed

    def list_dumps(self) -> list[str]:
        """The dumps' JSON names, oldest first (by the timestamp in the name)."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        dumps = []
        for name in names:
            parsed = dump_set_of(name)
            if parsed is not None and name == parsed[0] + ".json":
                dumps.append((parsed[1], name))
        return [name for _, name in sorted(dumps)]


def _dump_sets(dfd: int) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """The directory's dump sets, keyed (timestamp, stem): [(name, bytes)], one per file."""
    sets: dict[tuple[str, str], list[tuple[str, int]]] = {}
    with os.scandir(dfd) as entries:
        for entry in entries:
            parsed = dump_set_of(entry.name)
            if parsed is None:
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed meanwhile
            stem, stamp = parsed
            sets.setdefault((stamp, stem), []).append((entry.name, size))
    return sets


def _acquire(lock: FileLock, timeout: float, poll_interval: float) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(timeout=timeout, poll_interval=poll_interval)
    except Timeout:
        return False
    return True


def _unlink_quietly(name: str, dfd: int) -> bool:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def monotonic_to_wall_ns(mono: float) -> int:
    """Wall-clock ns for a ``time.monotonic()`` reading taken in this process."""
    return time.time_ns() - int((time.monotonic() - mono) * 1e9)
