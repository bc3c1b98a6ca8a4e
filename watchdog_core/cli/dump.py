"""``watchdog-core dump SESSION``: ask a live session's watchdog for a dump now, from
outside the host (as ``jcmd`` or Node's ``--report-on-signal`` do), and print its path.

Exit 0 with the path; 1 when no such session of ours is live or its watchdog does not
answer; 2 on bad input. The protocol is in ``watchdog_core._outside``.
"""

from __future__ import annotations

import argparse
import math
import mmap
import os
from typing import TextIO

from .. import _outside, _reader, _ring, _shm
from .._config import validate_session_id
from . import UsageError, json_text, owner_name, printable, require_segment_file

NAME = "dump"
HELP = "ask a live session's watchdog for a dump now and print its path"


class _NotLiveError(Exception):
    """No such session of ours is live: exit 1, one line."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="SESSION",
                        help="a live session's id, its segment's name, or its host's pid")
    parser.add_argument("--timeout", type=_seconds, default=10.0,
                        help="seconds to wait for the watchdog's answer (default 10)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds: {text!r}")
    return value


def run(args: argparse.Namespace, out: TextIO) -> int:
    try:
        name = _find(args.target)
        path = _ask(name, args.timeout)
    except _NotLiveError as exc:
        message = printable(str(exc))
        if args.json:
            out.write(json_text({"session": args.target, "path": None, "error": message}))
        else:
            import sys

            print(f"watchdog-core: {message}", file=sys.stderr)
        return 1
    if args.json:
        out.write(json_text({"session": args.target, "segment": name, "path": path,
                             "error": None}))
    else:
        out.write(printable(path) + "\n")
    return 0


def _find(target: str) -> str:
    """The segment of our live session named by ``target``: a session id, a segment
    name, or a host pid. Another user's session is never ours to ask."""
    if target.startswith(_shm.PREFIX):
        try:
            _shm.parse_segment_name(target)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        names = [target] if _shm.segment_exists(target) else []
    elif target.isascii() and target.isdigit():
        # A pid; a session id made of digits only is tried next (its segment name is
        # never ambiguous).
        names = (_shm.segments_of(host_pid=int(target))
                 or _shm.segments_of(session_id=target))
    else:
        try:
            validate_session_id(target, "session id")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        names = _shm.segments_of(session_id=target)
    mine = [n for n in names if _shm.segment_owner(n) in (os.geteuid(), None)
            or os.geteuid() == 0]
    live = [n for n in mine if (_shm.holders(n) or (False, False))[0]]
    if not live:
        others = [n for n in names if n not in mine]
        if others:
            uid = _shm.segment_owner(others[0])
            whose = owner_name(uid) if uid is not None else "another user"
            raise _NotLiveError(f"session {target} is {whose}'s, not yours to ask")
        raise _NotLiveError(f"no live session {target}")
    if len(live) > 1:
        raise UsageError(f"{target} names {len(live)} live sessions: {', '.join(live)}; "
                         "name one")
    return live[0]


def _ask(name: str, timeout: float) -> str:
    """Make the request, wake the watchdog, wait for its answer: the dump's path."""
    require_segment_file(name)
    try:
        fd = _shm._shm_open(name, os.O_RDWR)
    except FileNotFoundError:
        raise _NotLiveError(f"session {name} ended before it could be asked") from None
    except OSError as exc:
        raise _NotLiveError(f"cannot open {name}: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        if not _ring.HEADER_SIZE <= size <= _ring.ring_size(_reader.MAX_SLOTS):
            raise _NotLiveError(f"{name} is not a ring ({size} bytes)")
        with mmap.mmap(fd, _ring.HEADER_SIZE) as mapping:  # a request needs the header
            buf = memoryview(mapping)
            words = buf.cast("Q")
            try:
                return _request(fd, name, buf, words, timeout)
            finally:
                words.release()
                buf.release()
    finally:
        os.close(fd)


def _request(fd: int, name: str, buf: memoryview, words: memoryview, timeout: float) -> str:
    if bytes(buf[: len(_ring.MAGIC)]) != _ring.MAGIC:
        raise _NotLiveError(f"{name} is not a ring")
    if not _shm.held(fd, _shm.WATCHDOG):
        raise _NotLiveError(f"session {name} has no watchdog running to ask")
    try:
        request = _outside.ask(fd, words)
    except OSError as exc:
        raise _NotLiveError(str(exc)) from None
    _outside.wake(words, name)
    try:
        file_name = _outside.wait(fd, words, buf, request, timeout)
    except _outside.NotAnsweredError as exc:
        if "is gone" in str(exc):
            raise _NotLiveError(str(exc)) from None
        raise _NotLiveError(f"{exc} (is the session stuck, or its watchdog older than this "
                            "command?)") from None
    if not file_name:
        raise _NotLiveError(f"the watchdog of {name} could not write a dump (its stderr says why)")
    # fsdecode, not the reader's UTF-8: the writer fsencodes the folder, whatever its bytes.
    directory = bytes(buf[_ring.DIR_AT : _ring.DIR_AT + _ring.DIR_SIZE]).split(b"\0", 1)[0]
    return os.path.join(os.fsdecode(directory), file_name)
