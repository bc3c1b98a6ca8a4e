"""POSIX shared-memory segments without ``multiprocessing.shared_memory`` (SPEC 8).

Before Python 3.13, ``SharedMemory`` registers every segment it creates *or
attaches* with the resource tracker, which unlinks it when the tracker exits:
the ring would vanish with the host it is meant to outlive. ``_posixshmem``
is the C module underneath ``SharedMemory``; calling it directly gives the
same segment with no tracker. It is also cheap to import (no multiprocessing).

This module is the one place that knows how segments are named, created,
opened, listed and removed.
"""

from __future__ import annotations

import _posixshmem
import mmap
import os

from ._config import validate_session_id

PREFIX = "watchdog_core-"
_SHM_DIR = "/dev/shm"  # where Linux shows POSIX segments; used only to list them


class SegmentError(OSError):
    """A segment could not be created or opened."""


def segment_name(session_id: str, host_pid: int) -> str:
    return f"{PREFIX}{session_id}-{host_pid}"


def parse_segment_name(name: str) -> tuple[str, int]:
    """``(session_id, host_pid)`` from a segment name; ValueError for anything else.

    Names come from the outside (the CLI, a directory listing), so they are
    checked before they become part of a path.
    """
    if not name.startswith(PREFIX):
        raise ValueError(f"not a watchdog-core segment name: {name!r}")
    session_id, sep, pid = name[len(PREFIX) :].rpartition("-")
    if not sep or not pid.isascii() or not pid.isdigit():
        raise ValueError(f"not a watchdog-core segment name: {name!r}")
    validate_session_id(session_id, "session id in segment name")
    return session_id, int(pid)


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create, reserve and map a new segment.

    The pages are reserved with ``posix_fallocate``: a sparse segment on a full
    ``/dev/shm`` would SIGBUS the host on its first write to a missing page.
    """
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # macOS: no fallocate; ftruncate is what SharedMemory does too
                os.ftruncate(fd, size)
            return mmap.mmap(fd, size)
        except BaseException:
            unlink_segment(name)
            raise
    finally:
        os.close(fd)


def open_segment(name: str, *, writable: bool = False) -> mmap.mmap:
    """Map an existing segment (read-only unless ``writable``)."""
    parse_segment_name(name)
    flags = os.O_RDWR if writable else os.O_RDONLY
    fd = _posixshmem.shm_open("/" + name, flags, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise SegmentError(f"segment {name} is empty")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)


def read_segment(name: str) -> bytes | None:
    """A copy of a whole segment, or None if it cannot be opened (gone, not ours)."""
    try:
        mapping = open_segment(name)
    except (OSError, ValueError):
        return None
    try:
        return bytes(mapping)
    finally:
        mapping.close()


def unlink_segment(name: str) -> bool:
    """Remove a segment; False if it was already gone."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def list_segments() -> list[str]:
    """Names of the watchdog-core segments on this machine (Linux only; [] elsewhere)."""
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return []
    out = []
    for name in names:
        try:
            parse_segment_name(name)
        except ValueError:
            continue
        out.append(name)
    return sorted(out)


def segment_owner(name: str) -> int | None:
    """The uid owning a segment, or None if it is gone."""
    try:
        return os.stat(os.path.join(_SHM_DIR, name)).st_uid
    except OSError:
        return None


def segment_exists(name: str) -> bool:
    return os.path.exists(os.path.join(_SHM_DIR, name))


def claim_segment(name: str) -> int | None:
    """An exclusive, non-blocking claim on a segment (flock on its descriptor), so that
    two recoverers never write two postmortems of one orphan. None if someone holds it
    or it is gone; close the returned descriptor to release the claim."""
    import fcntl

    try:
        fd: int = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
