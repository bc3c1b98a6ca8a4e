"""Opening the diagnostics directory safely (docs/design.md); stdlib only, so the host can use it.

The directory is refused when it is itself a symlink, belongs to another user,
or is writable by group or others; symlinks among its ancestors are fine.
Files are then created relative to its descriptor with O_NOFOLLOW | O_EXCL.
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


def open_dir(path: str) -> int:
    """A descriptor of ``path``, created 0700 if missing; StoreError if it is unsafe."""
    try:
        os.makedirs(os.path.dirname(path), mode=DIR_MODE, exist_ok=True)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass
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
