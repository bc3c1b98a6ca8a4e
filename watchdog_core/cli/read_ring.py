"""``watchdog-core read-ring TARGET``: decode a live or saved ring (docs/cli.md)."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
from typing import TYPE_CHECKING, TextIO

from .. import _reader, _ring, _shm
from .._config import validate_session_id
from . import (
    UsageError,
    _reason,
    json_text,
    owner_name,
    printable,
    read_input_file,
    require_segment_file,
)

if TYPE_CHECKING:
    import mmap

NAME = "read-ring"
HELP = "decode a ring: a saved .ring file, a session id, or a shared-memory segment name"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help=".ring file, session id, or segment name")
    parser.add_argument("--last", type=int, default=20, metavar="N",
                        help="show the newest N slots (default 20; 0 for the header only)")
    parser.add_argument("--json", action="store_true", help="print JSON")


class Source:
    """What was read: ``name`` (a path or a segment name) and, for a live segment, its
    owner's uid (None for a file)."""

    def __init__(self, name: str, uid: int | None = None) -> None:
        self.name, self.uid = name, uid

    def describe(self) -> str:
        """The name, and whose it is when it is not ours."""
        if self.uid is None or self.uid == os.geteuid():
            return self.name
        return f"{self.name} ({owner_name(self.uid)}'s)"


def load(target: str) -> tuple[Source, _reader.RingImage]:
    """(what was read, decoded image) for a file path, segment name or session id.

    A session id names our own live segment; another user's only when we have none
    (``ls`` lists everyone's, and a stranger's ring must not shadow ours)."""
    if os.path.sep in target or target.endswith(".ring") or os.path.isfile(target):
        return Source(target), _reader.RingImage(_read_file(target))
    if target.startswith(_shm.PREFIX):
        try:
            _shm.parse_segment_name(target)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return Source(target, _shm.segment_owner(target)), _open_live(target)
    try:
        validate_session_id(target, "session id")
    except ValueError as exc:
        if os.path.lexists(target):  # ".", "..": a directory, said as such
            return Source(target), _reader.RingImage(_read_file(target))
        raise UsageError(str(exc)) from None
    owned: list[tuple[str, int]] = []
    for n in _shm.segments_of(session_id=target):
        uid = _shm.segment_owner(n)
        if uid is not None:  # None: gone
            owned.append((n, uid))
    ours = [(n, uid) for n, uid in owned if uid == os.geteuid()]
    names = ours or owned
    if not names:
        if os.path.lexists(target):  # a directory, a FIFO, a loop: say what it is
            return Source(target), _reader.RingImage(_read_file(target))
        raise UsageError(f"no live ring for session {target!r} and no such file")
    if len(names) > 1:
        listed = ", ".join(n if ours else f"{n} ({owner_name(uid)}'s)" for n, uid in names)
        whose = "" if ours else " of other users (none of yours)"
        raise UsageError(f"session {target!r} has {len(names)} live rings{whose}: {listed}; "
                         "name one")
    name, uid = names[0]
    return Source(name, uid), _open_live(name)


# The largest ring the format allows: a header and MAX_SLOTS slots (about 336 MiB).
MAX_RING_BYTES = _ring.ring_size(_reader.MAX_SLOTS)


def _read_file(path: str) -> bytes:
    return read_input_file(path, MAX_RING_BYTES, "ring")


def map_segment(name: str) -> mmap.mmap:
    """A read-only mapping of the live segment ``name``, of its whole size once that size
    is one a ring may have: a segment of 10 GiB is refused from its fstat, not mapped
    (under a memory limit that would fail as "Cannot allocate memory"). UsageError for
    what is not a ring's file; OSError (``_shm.SegmentError`` for an empty one) for what
    the open says."""
    require_segment_file(name)
    fd = _shm._shm_open(name, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > MAX_RING_BYTES:
            raise UsageError(f"segment {name} is {size} bytes, more than any ring "
                             f"({MAX_RING_BYTES} bytes at most)")
        try:
            return _shm.map_descriptor(fd)
        except _shm.SegmentError:
            raise _shm.SegmentError(f"segment {name} is empty") from None
    finally:
        os.close(fd)


def _open_live(name: str) -> _reader.RingImage:
    try:
        mapping = map_segment(name)
    except FileNotFoundError:
        raise UsageError(f"no such segment: {name}") from None
    except _shm.SegmentError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        uid = _shm.segment_owner(name)
        whose = (f" (it is {owner_name(uid)}'s)" if uid is not None and uid != os.geteuid()
                 else "")
        raise UsageError(f"cannot open segment {name}: {_reason(exc)}{whose}") from None
    # The image reads each slot from the mapping under its seqlock when asked; the
    # mapping closes when the image is released (or dropped).
    try:
        return _reader.RingImage(mapping)
    except _ring.RingError:
        mapping.close()
        raise


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.last < 0:
        raise UsageError("--last must be >= 0")
    try:
        source, image = load(args.target)
        slots, torn = image.slots(last=args.last) if args.last else ([], 0)
    except _ring.RingError as exc:
        raise UsageError(f"{args.target}: {exc}") from None
    if args.json:
        # Strict and ASCII (json_text): a recorded stat may be NaN or infinite, a damaged
        # header may hold any float and any text; stdlib only, so tools/read_ring.py
        # runs where pydantic is not installed.
        out.write(json_text(_document(source, image, slots, torn)))
        return 0
    _print_text(source, image, slots, torn, out)
    return 0


def _document(source: Source, image: _reader.RingImage, slots: list[_reader.Slot],
              torn: int) -> dict[str, object]:
    owner = ({"uid": source.uid, "user": owner_name(source.uid)} if source.uid is not None
             else {})
    return {"source": source.name, **owner, "header": image.header_dict(),
            "slots": [s.as_dict() for s in slots], "torn": torn}


def _print_text(source: Source, image: _reader.RingImage, slots: list[_reader.Slot],
                torn: int, out: TextIO) -> None:
    # Every string here but the flag names comes from the ring, which its host (or anyone
    # who planted the segment or the file) wrote: printable() before the terminal sees it.
    p = printable
    created = _dt.datetime.fromtimestamp(image.created_unix_ns / 1e9, tz=_dt.timezone.utc)
    w = out.write
    w(f"ring      {p(source.describe())}\n")
    w(f"session   {image.session_id}   host pid {image.host_pid}   "
      f"watchdog pid {image.watchdog_pid or '-'}\n")
    w(f"created   {created:%Y-%m-%d %H:%M:%S} UTC   slots {image.slot_count}   "
      f"interval {image.interval}s\n")
    w(f"flags     {', '.join(_reader.flag_names(image.flags)) or '-'}"
      + (f"   exception {p(image.exception)}" if image.exception else "") + "\n")
    w(f"activity  {p(image.last_label or '-')}\n")
    status = image.status
    if status:
        w(f"status    {status.level}   ratio {status.ratio:.3f}   rss {status.rss}   "
          f"limit {status.heap_limit or '-'} ({status.limit_source})\n")
    w(f"stats     {', '.join(p(n) for n in image.names) or '-'}\n")
    w(f"dir       {p(image.diagnostics_dir)}\n")
    if slots or torn:
        w(f"slots     newest {len(slots)} shown, {torn} torn skipped\n")
    for slot in slots:
        label = f" [{p(slot.label)}]" if slot.label is not None else ""
        values = " ".join(f"{p(k)}={v}" for k, v in slot.values.items())
        w(f"  #{slot.index} {slot.kind}{label} {values}\n")
