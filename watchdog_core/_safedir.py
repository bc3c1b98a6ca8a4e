"""Opening the diagnostics directory safely (docs/design.md); stdlib only, so the host can use it.

The directory is refused when it is itself a symlink, belongs to another user,
or is writable by group or others; symlinks among its ancestors are fine.
Files are then created relative to its descriptor with O_NOFOLLOW | O_EXCL.
``choose_dir`` is the host's fallback chain when the folder asked for is refused
(docs/design.md, "Where files go"); it also refuses a folder no file can be made in
(read-only, or not writable by us), and ``ls`` and ``gc`` follow it too, without making
anything. Every folder made here is 0700 whatever the umask.
"""

from __future__ import annotations

import errno
import os
import stat

DIR_MODE = 0o700
FILE_MODE = 0o600


class StoreError(OSError):
    """The directory cannot be used (symlink, foreign owner, open to others, unwritable)."""


class UnsafeDirectoryError(StoreError):
    """The directory is refused for what it is (a symlink, another user's, open to
    others), not for a passing condition such as a full disk."""


def open_dir(path: str, *, create: bool = True) -> int:
    """A descriptor of ``path``, created 0700 (with any missing parents) if missing
    (unless ``create`` is false); StoreError if it cannot be used, UnsafeDirectoryError
    if it is unsafe.

    Whether files can be made in it is not asked here: the watchdog opens its folder
    again at a death, and a folder read-only or full at that moment must still hold
    the evidence (docs/design.md). ``choose_dir`` asks, once, at start."""
    try:
        if create:
            make_dirs(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise UnsafeDirectoryError(
                f"{path} is a symlink; refusing to write through it") from exc
        raise StoreError(f"cannot open diagnostics directory {path}: {exc.strerror}") from exc
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeDirectoryError(f"{path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise UnsafeDirectoryError(f"{path} is writable by others (mode "
                              f"{stat.S_IMODE(st.st_mode):o}); refusing to write there")
    return fd


def make_dirs(path: str) -> None:
    """Create ``path`` and its missing parents, each 0700 whatever the umask.

    ``os.makedirs`` gives the parents it makes 0777 minus the umask (0777 under
    ``umask 000``), and a umask can take the owner's bits from ``mkdir`` too. So each
    folder is made on its own and set to 0700 through a descriptor, only when this call
    made it: a folder that already existed is never changed.
    """
    missing = []  # a loop, not recursion: a 4095-byte path can hold 2,000 levels
    while not os.path.isdir(path):  # follows symlinks: an ancestor may be one
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # a file or link (open_dir judges), or someone else's mkdir
            continue
        try:  # O_NOFOLLOW: never the target of a symlink planted since the mkdir
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # open_dir's own checks judge what is there
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, DIR_MODE)
        finally:
            os.close(fd)


def private_subdir(path: str) -> str:
    """The per-user folder made inside a refused ``path``: ``watchdog-core-{uid}``."""
    return os.path.join(path, f"watchdog-core-{os.geteuid()}")


def choose_dir(requested: str, state_dir: str, *, create: bool = True,
               ) -> tuple[str | None, list[str]]:
    """Where dumps go, tried in order: ``requested``; a private per-user subfolder
    inside it (``private_subdir``), unless it is a symlink; ``state_dir`` (the default
    state folder).

    The first that ``open_dir`` accepts and in which files can be made wins (made 0700
    if missing; one made by another user, a symlink, one open to others, a read-only
    one or one we may not write in is refused like any other). Returns that folder, or
    None when all were refused, and why each folder tried before it was refused, one
    sentence each.

    With ``create`` false nothing is made: a missing folder wins when it could be made
    (``ls`` and ``gc`` ask where a session would write without making its folder).
    """
    refusals: list[str] = []
    # A folder that is itself a symlink may lead anywhere (that is why it is refused):
    # nothing of ours goes through it, a subfolder included.
    inside = () if os.path.islink(requested) else (private_subdir(requested),)
    for candidate in dict.fromkeys((requested, *inside, state_dir)):
        try:
            if create or os.path.lexists(candidate):
                fd = open_dir(candidate, create=create)
                try:
                    _require_writable(candidate, fd)
                finally:
                    os.close(fd)
            else:
                _require_makeable(candidate)
        except StoreError as exc:
            refusals.append(str(exc))
            continue
        return candidate, refusals
    return None, refusals


def _require_writable(path: str, fd: int) -> None:
    """StoreError unless files can be made in the folder ``fd`` (``path``)."""
    if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
        raise StoreError(f"{path} is read-only")
    if not os.access(".", os.W_OK | os.X_OK, dir_fd=fd, effective_ids=True):
        raise StoreError(f"{path} is not writable")


def _require_makeable(path: str) -> None:
    """StoreError unless the missing folder ``path`` could be made: its nearest existing
    ancestor is a folder we can write in (asked, never tried)."""
    parent = os.path.dirname(path) or "."
    while not os.path.lexists(parent) and parent != (up := os.path.dirname(parent) or "."):
        parent = up
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)  # an ancestor may be a symlink
    except OSError as exc:
        raise StoreError(f"cannot make {path}: {parent}: {exc.strerror}") from exc
    try:
        _require_writable(parent, fd)
    except StoreError as exc:
        raise StoreError(f"cannot make {path}: {exc}") from exc
    finally:
        os.close(fd)


def private_file_name(kind: str, session_id: str, host_pid: int, nonce: int = 0) -> str:
    """The host's own files beside the dumps: ``.crash-{session}-{pid}-{nonce}.txt``,
    ``.stacks-...``. The nonce (random, kept in the ring header) keeps apart hosts that
    share a directory, a session id and a pid number from different pid namespaces.

    Hidden (a leading dot), so retention, which keeps dump sets, never counts them.
    """
    return f".{kind}-{session_id}-{host_pid}" + (f"-{nonce:08x}" if nonce else "") + ".txt"


def create_private_file(dir_fd: int, name: str) -> int:
    """Create ``name`` (0600, append-only) in the directory; a stale one is replaced."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
    except FileExistsError:  # left by an earlier process with our pid: not ours to keep
        os.unlink(name, dir_fd=dir_fd)
        return os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
