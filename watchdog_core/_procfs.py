"""Reading the kernel's files (/proc, cgroupfs) through descriptors kept open.

The watchdog reads the same few files every sample. Opening them each time costs
three system calls instead of one, and, worse, allocates kernel memory (a file, a
seq_file buffer) charged to the memory cgroup the watchdog shares with its host:
in the milliseconds after the OOM killer took the host and before its memory is
uncharged, such an allocation makes the kernel pick the watchdog next (docs/design.md,
"The watchdog in its host's cgroup"). A descriptor kept open is read again with
``pread`` at offset 0, which re-generates the file and reuses its buffer.

A descriptor of /proc/<pid>/... keeps meaning that process: once it has gone, reads
fail, and a new process with the pid is never read by mistake.
"""

from __future__ import annotations

import os

MAX_OPEN = 32  # the files one watchdog reads repeatedly are a dozen at most
READ_SIZE = 1 << 16

_open: dict[str, int] = {}


def read(path: str) -> bytes | None:
    """The file's bytes now, or None when it cannot be read (gone, not allowed)."""
    fd = _open.get(path)
    if fd is not None:
        try:
            return _pread_all(fd)
        except OSError:
            forget(path)  # the process or cgroup behind it is gone, or it was replaced
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if len(_open) >= MAX_OPEN:
        forget(next(iter(_open)))
    _open[path] = fd
    try:
        return _pread_all(fd)
    except OSError:
        forget(path)
        return None


def read_text(path: str) -> str | None:
    raw = read(path)
    return None if raw is None else raw.decode("ascii", "replace")


def forget(path: str) -> None:
    """Close the descriptor of ``path``, if one is open."""
    fd = _open.pop(path, None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _pread_all(fd: int) -> bytes:
    data = os.pread(fd, READ_SIZE, 0)
    if len(data) < READ_SIZE:
        return data
    chunks, offset = [data], len(data)  # a large file: memory.stat of a busy cgroup
    while chunk := os.pread(fd, READ_SIZE, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def boot_id() -> str:
    """This boot's id (/proc/sys/kernel/random/boot_id), "" where there is none: with a
    pid and a start time, it names one process across pid reuse and reboots. Read once
    per caller, so not through the descriptors kept open above."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""
