"""POSIX shared-memory segments without ``multiprocessing.shared_memory`` (docs/ring-format.md).

Before Python 3.13, ``SharedMemory`` registers every segment it creates *or
attaches* with the resource tracker, which unlinks it when the tracker exits:
the ring would vanish with the host it is meant to outlive. ``_posixshmem``
is the C module underneath ``SharedMemory``; calling it directly gives the
same segment with no tracker. It is also cheap to import (no multiprocessing).

This module is the one place that knows how segments are named, created,
opened, listed, locked and removed.

Liveness is decided by locks, never by pids (pids mean nothing across pid
namespaces, and containers often share ``/dev/shm``). Each segment carries two
open-file-description locks (``F_OFD_SETLK``) on its first two bytes: byte 0 is
held by the host for its whole life (a forked child closes its copy; an exec
closes it, the descriptor being close-on-exec), byte 1 by its watchdog, taken by
the host *before* the watchdog is spawned and inherited by it, so there is no
moment at which a starting watchdog's ring looks abandoned. The kernel drops a
lock when its holder dies, however it dies. A segment is an orphan exactly when
an exclusive lock on both bytes can be taken; that lock is also the recoverer's
claim, so two recoverers never write two postmortems of one orphan. Where OFD
locks are missing (macOS) the locks are skipped: there is no segment listing
there either, so nothing relies on them.
"""

from __future__ import annotations

import _posixshmem
import fcntl
import mmap
import os
import stat
import struct
import time

from ._config import validate_session_id

PREFIX = "watchdog_core-"
_SHM_DIR = "/dev/shm"  # where Linux shows POSIX segments; used only to list them
HOST, WATCHDOG = 0, 1  # the byte each one locks
MAX_SAME_NAME = 100  # hosts sharing a session id and a pid number (other pid namespaces)
_OFD = hasattr(fcntl, "F_OFD_SETLK")  # Linux >= 3.15 with Python >= 3.9
LOCKS = _OFD  # whether segments carry the locks (the ring header says so to its readers)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: type, whence, start, len, pid


class SegmentError(OSError):
    """A segment could not be created or opened."""


# The lock descriptors this process holds. A child forked from it (by any thread, at
# any moment, even while start_watchdog() runs) must not keep them: it would hold the
# host's lock after the host died or exec'd. One module-level hook closes them all.
_held: set[int] = set()
# Segments being opened for a lock right now: shm_open() lets go of the GIL, so another
# thread may fork after the descriptor exists and before its number is in _held.
_opening: set[str] = set()


def _shm_open(name: str, flags: int) -> int:
    """Open an existing segment; SegmentError unless it is a regular file. Anyone may
    put a FIFO with a segment's name in /dev/shm: a blocking open of it would wait for
    a writer forever, and a device would map without end."""
    fd: int = _posixshmem.shm_open("/" + name, flags | os.O_NONBLOCK, 0o600)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        raise SegmentError(f"segment {name} is not a regular file")
    return fd


def _open_for_lock(name: str, flags: int) -> int:
    _opening.add(name)
    try:
        fd: int = _posixshmem.shm_open("/" + name, flags, 0o600)
        _held.add(fd)
        return fd
    finally:
        _opening.discard(name)


def release(fd: int) -> None:
    """Close a lock descriptor of ours, dropping its lock (once; unknown fds are left)."""
    if fd in _held:
        _held.discard(fd)
        try:
            os.close(fd)
        except OSError:
            pass


def _drop_in_child() -> None:
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()
    if _opening:  # the fork raced an open: find its descriptor by what it points at
        targets = {os.path.join(_SHM_DIR, name) for name in _opening}
        try:
            fds = os.listdir("/proc/self/fd")
        except OSError:
            fds = []
        for entry in fds:
            try:
                if os.readlink(f"/proc/self/fd/{entry}") in targets:
                    os.close(int(entry))
            except (OSError, ValueError):
                continue
        _opening.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


def segment_name(session_id: str, host_pid: int, n: int = 0) -> str:
    """``watchdog_core-{session}-{pid}``; ``.{n}`` is added when hosts in other pid
    namespaces sharing this ``/dev/shm`` already use the plain name."""
    return f"{PREFIX}{session_id}-{host_pid}" + (f".{n}" if n else "")


def parse_segment_name(name: str) -> tuple[str, int]:
    """``(session_id, host_pid)`` from a segment name; ValueError for anything else.

    Names come from the outside (the CLI, a directory listing), so they are
    checked before they become part of a path.
    """
    if not name.startswith(PREFIX):
        raise ValueError(f"not a watchdog-core segment name: {name!r}")
    session_id, sep, tail = name[len(PREFIX) :].rpartition("-")
    pid, dot, n = tail.partition(".")
    if (not sep or not pid.isascii() or not pid.isdigit()
            or (dot and not (n.isascii() and n.isdigit() and n[0] != "0"))):
        raise ValueError(f"not a watchdog-core segment name: {name!r}")
    validate_session_id(session_id, "session id in segment name")
    return session_id, int(pid)


def create_segment(session_id: str, host_pid: int, size: int) -> tuple[str, mmap.mmap, int]:
    """Create, lock, reserve and map a new segment: ``(name, mapping, lock descriptor)``.

    The host's lock is taken before anything is written, so no recoverer can ever
    judge the new segment abandoned; the descriptor must stay open for the host's
    life (it is close-on-exec). The pages are reserved with ``posix_fallocate``: a
    sparse segment on a full ``/dev/shm`` would SIGBUS the host on its first write to
    a missing page.
    """
    for n in range(MAX_SAME_NAME):
        name = segment_name(session_id, host_pid, n)
        try:
            fd = _open_for_lock(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        except FileExistsError:
            continue  # another pid namespace's host with our pid and session id
        try:
            # A recoverer may be holding its claim for a moment: it looked at the
            # empty segment and will let go without touching it.
            if not _lock(fd, HOST, wait=0.5):
                raise SegmentError(f"cannot lock segment {name}")
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # macOS: no fallocate; ftruncate is what SharedMemory does too
                os.ftruncate(fd, size)
            return name, _map_apart(name, size), fd
        except BaseException:
            unlink_segment(name, fd)
            release(fd)
            raise
    raise SegmentError(f"{MAX_SAME_NAME} segments named after session {session_id!r} and "
                       f"pid {host_pid} exist already")


def _map_apart(name: str, size: int) -> mmap.mmap:
    """Map the segment through a descriptor of its own. An mmap object keeps a dup of
    the descriptor it was made from; made from the lock's, it would keep the lock's
    open file description alive in every forked child that inherits the mapping, and
    the host's lock would outlive the host."""
    fd = _shm_open(name, os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def lock_for_watchdog(name: str) -> int:
    """A new descriptor of the segment holding the watchdog's lock, for the watchdog
    to inherit. The host makes it before spawning, so the lock is never missing."""
    fd = _open_for_lock(name, os.O_RDWR)
    if not _lock(fd, WATCHDOG, wait=0.5):
        release(fd)
        raise SegmentError(f"segment {name} has a watchdog already")
    return fd


def map_descriptor(fd: int, *, writable: bool = False) -> mmap.mmap:
    """Map the segment behind ``fd`` (read-only unless ``writable``)."""
    size = os.fstat(fd).st_size
    if size == 0:
        raise SegmentError("segment is empty")
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    return mmap.mmap(fd, size, access=access)


def open_segment(name: str, *, writable: bool = False) -> mmap.mmap:
    """Map an existing segment (read-only unless ``writable``)."""
    parse_segment_name(name)
    flags = os.O_RDWR if writable else os.O_RDONLY
    fd = _shm_open(name, flags)
    try:
        try:
            return map_descriptor(fd, writable=writable)
        except SegmentError:
            raise SegmentError(f"segment {name} is empty") from None
    finally:
        os.close(fd)


def unlink_segment(name: str, fd: int = -1) -> bool:
    """Remove a segment; False if it was already gone.

    With ``fd`` (a descriptor of the segment its caller holds), only while the name
    still means that segment: once a segment is removed, a host in another pid
    namespace may create one of the same name, and a late remover must not take it.
    """
    if fd >= 0 and os.path.isdir(_SHM_DIR):
        try:
            ours, now = os.fstat(fd), os.stat(os.path.join(_SHM_DIR, name))
        except OSError:
            return False
        if (ours.st_dev, ours.st_ino) != (now.st_dev, now.st_ino):
            return False
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


def segments_of(*, session_id: str | None = None, host_pid: int | None = None) -> list[str]:
    """Names of the segments of ``session_id`` or of ``host_pid`` (as the names say)."""
    out = []
    for name in list_segments():
        session, pid = parse_segment_name(name)
        if session == session_id or pid == host_pid:
            out.append(name)
    return out


def segment_owner(name: str) -> int | None:
    """The uid owning a segment, or None if it is gone."""
    try:
        return os.stat(os.path.join(_SHM_DIR, name)).st_uid
    except OSError:
        return None


def segment_exists(name: str) -> bool:
    return os.path.exists(os.path.join(_SHM_DIR, name))


def claim_segment(name: str) -> int | None:
    """Claim an abandoned segment: an exclusive lock on the host's and the watchdog's
    bytes, which succeeds exactly when neither lives. None if someone holds it or it
    is gone (or locks are unavailable); close the descriptor to release the claim.
    The claimer must check the descriptor still has a name (``st_nlink``) before
    trusting it: the segment may have been removed between the open and the lock."""
    if not _OFD:
        return None
    try:
        fd = _shm_open(name, os.O_RDWR)
    except OSError:
        return None
    if not _lock(fd, HOST, length=2):
        os.close(fd)
        return None
    return fd


def holders(name: str) -> tuple[bool, bool] | None:
    """(host holds its lock, a watchdog holds its lock); None where that cannot be
    known (gone, not ours to open, or no OFD locks)."""
    if not _OFD:
        return None
    try:
        fd = _shm_open(name, os.O_RDONLY)
    except OSError:
        return None
    try:
        return held(fd, HOST), held(fd, WATCHDOG)
    finally:
        os.close(fd)


def held(fd: int, role: int) -> bool:
    """True when another open description of the segment holds ``role``'s lock."""
    if not _OFD:
        return False
    try:
        raw = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET,
                                                            role, 1, 0))
    except OSError:
        return False
    return bool(_FLOCK.unpack(raw)[0] != fcntl.F_UNLCK)


def _lock(fd: int, role: int, *, length: int = 1, wait: float = 0.0) -> bool:
    """Take ``role``'s lock (``length`` bytes from it) on ``fd``'s open description;
    False when someone else holds it after ``wait`` seconds. Where OFD locks do not
    exist this is a no-op that succeeds."""
    if not _OFD:
        return True
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, role, length, 0)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
            return True
        except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held elsewhere
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


def take(fd: int, role: int, *, wait: float = 0.0) -> bool:
    """Take ``role``'s lock on ``fd`` for a moment (an outside requester's, byte 2);
    False when another holds it after ``wait`` seconds. ``let_go`` ends it."""
    return _lock(fd, role, wait=wait)


def let_go(fd: int, role: int) -> None:
    if _OFD:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, role, 1, 0))
