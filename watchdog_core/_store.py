"""The diagnostics directory: naming, atomic writes, retention (SPEC 7).

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

import datetime as _dt
import os
import time

from filelock import FileLock, Timeout

from ._safedir import FILE_MODE, StoreError, open_dir

__all__ = ["DiagnosticsDir", "StoreError", "dump_name", "dump_timestamp"]

LOCK_NAME = ".watchdog-core.lock"
DUMP_PREFIX = "memory-"
DEFAULT_MAX_FILES = 100
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# filelock polls (50 ms by default); 5 ms cut the p99 wait under 64-way contention in
# benchmarks/lock_contention.py without the CPU cost of polling faster on 2 cores.
LOCK_POLL = 0.005


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def dump_timestamp(wall_ns: int) -> tuple[str, str]:
    """(name part ``20261125T174001.123456Z``, ISO ``2026-11-25T17:40:01.123456Z``)."""
    # Integer microseconds: a float of seconds since 1970 cannot hold them exactly.
    t = _EPOCH + _dt.timedelta(microseconds=wall_ns // 1000)
    return t.strftime("%Y%m%dT%H%M%S.%fZ"), t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dump_name(session_id: str, wall_ns: int) -> str:
    return f"{DUMP_PREFIX}{session_id}-{dump_timestamp(wall_ns)[0]}.json"


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
        """Delete the oldest dump sets beyond ``max_files``/``max_bytes``; never ``keep``.

        A dump set is the JSON and every sibling sharing its stem (``.ring``, extras).
        Runs under the directory's file lock; returns the names removed.
        """
        dfd = self.open()
        self.last_lock_wait = None
        if not self._over_limits(dfd):
            return []  # the common case: no lock at all, so no session waits for another
        self._check_lock_file(dfd)
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
        count = size = 0
        for entry in os.scandir(dfd):
            if entry.name.startswith(DUMP_PREFIX):
                count += entry.name.endswith(".json")
                try:
                    size += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
        return count > self.max_files or size > self.max_bytes

    def _prune_locked(self, dfd: int, keep: str | None, dry_run: bool = False) -> list[str]:
        sets: dict[str, list[tuple[str, int]]] = {}
        mtimes: dict[str, float] = {}
        for entry in os.scandir(dfd):
            name = entry.name
            if not name.startswith(DUMP_PREFIX):
                continue
            stem = name.split(".json", 1)[0] if ".json" in name else name.rsplit(".", 1)[0]
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            sets.setdefault(stem, []).append((name, st.st_size))
            if name.endswith(".json"):
                mtimes[stem] = st.st_mtime
        keep_stem = keep.rsplit(".json", 1)[0] if keep else None
        # Oldest first: by the timestamp in the name (the stem), mtime as a tie-break.
        order = sorted(sets, key=lambda s: (mtimes.get(s, 0.0), s))
        total = sum(size for files in sets.values() for _, size in files)
        count = len(order)
        removed: list[str] = []
        for stem in order:
            if count <= self.max_files and total <= self.max_bytes:
                break
            if stem == keep_stem:
                continue
            for name, size in sets[stem]:
                if dry_run or _unlink_quietly(name, dfd):
                    removed.append(name)
                    total -= size
            count -= 1
        return removed

    def list_dumps(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        return sorted(n for n in names if n.startswith(DUMP_PREFIX) and n.endswith(".json"))


def _acquire(lock: FileLock, timeout: float, poll_interval: float) -> bool:
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
