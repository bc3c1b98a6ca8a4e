"""Dumps asked for from outside the host: ``watchdog-core dump SESSION`` (docs/cli.md).

The host asks its watchdog for a dump through its own request word and a pipe only it
holds. Another process (the CLI, run by the session's owner) uses two words of its own
and a signal:

1. it takes the segment's requester lock (byte 2; bytes 0 and 1 are the host's and the
   watchdog's), adds one to ``W_OUTSIDE_REQUEST`` and lets go: two requesters at once
   never lose a request;
2. it sends ``WAKE_SIGNAL`` to the watchdog, whose pid the header names, once
   ``/proc/<pid>/cmdline`` shows that process is the watchdog of this very segment (a
   recycled pid must not get the signal) and ``/proc/<pid>/status`` shows it catches
   the signal (a watchdog of an older version would die of it). Without the signal the
   watchdog still answers at its next sample;
3. the watchdog writes the dump, puts its file name at ``OUTSIDE_DUMP_AT`` and sets
   ``W_OUTSIDE_DONE`` to the request it answered; the requester waits for that.

The watchdog installs its handler for ``WAKE_SIGNAL`` before it writes its pid into the
header, so no requester can signal a watchdog that would die of it.
"""

from __future__ import annotations

import os
import signal
import time

from . import _ring, _shm
from ._attribution import signal_caught

WAKE_SIGNAL = signal.SIGUSR1
REQUESTER = 2  # the lock byte of outside requesters
LOCK_WAIT = 2.0  # seconds to wait for another requester's increment


class NotAnsweredError(Exception):
    """The watchdog did not answer in time (it is busy, stuck, or too old to know
    outside requests)."""


def ask(fd: int, words: memoryview) -> int:
    """Add an outside request to the ring behind ``fd`` (its mapping's ``words``);
    returns its number. OSError when the requester lock cannot be had."""
    if not _shm.take(fd, REQUESTER, wait=LOCK_WAIT):
        raise OSError("another request is being made; try again")
    try:
        request = int(words[_ring.W_OUTSIDE_REQUEST]) + 1
        words[_ring.W_OUTSIDE_REQUEST] = request
    finally:
        _shm.let_go(fd, REQUESTER)
    return request


def wake(words: memoryview, shm_name: str) -> bool:
    """Signal the ring's watchdog, only once its command line shows it watches
    ``shm_name``; False when it could not be (gone, not ours, not a watchdog)."""
    pid = int(words[_ring.W_WATCHDOG_PID])
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(65536).split(b"\0")
    except OSError:
        return False
    if b"watchdog_core._watchdog" not in argv or shm_name.encode() not in argv:
        return False
    if signal_caught(pid, WAKE_SIGNAL) is not True:  # an older one: the default kills
        return False
    try:
        os.kill(pid, WAKE_SIGNAL)
    except OSError:
        return False
    return True


def wait(fd: int, words: memoryview, buf: memoryview, request: int, timeout: float) -> str:
    """The file name of the dump that answered ``request`` ("" when the watchdog could
    not write one); NotAnsweredError after ``timeout`` seconds, or as soon as the
    ring's watchdog is gone (the session stopped or died, and no one will answer)."""
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while int(words[_ring.W_OUTSIDE_DONE]) < request:
        now = time.monotonic()
        if now >= deadline:
            raise NotAnsweredError(f"the watchdog did not answer within {timeout:g} s")
        if now - checked >= 0.1:
            checked = now
            if not _shm.held(fd, _shm.WATCHDOG) and int(words[_ring.W_OUTSIDE_DONE]) < request:
                raise NotAnsweredError("its watchdog is gone (the session ended, or the "
                                       "watchdog died) and will not answer")
        time.sleep(0.005)
    return _ring._cstr(bytes(buf[_ring.OUTSIDE_DUMP_AT :
                                 _ring.OUTSIDE_DUMP_AT + _ring.OUTSIDE_DUMP_SIZE]))


def answered(buf: memoryview, words: memoryview, request: int, name: str) -> None:
    """The watchdog's side: the dump ``name`` ("" for none) answers ``request``."""
    _ring._put_str(buf, _ring.OUTSIDE_DUMP_AT, _ring.OUTSIDE_DUMP_SIZE, name)
    words[_ring.W_OUTSIDE_DONE] = request  # last: the name is in place before it
