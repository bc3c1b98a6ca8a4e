"""``watchdog-core read-ring TARGET``: decode a live or saved ring (docs/cli.md)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from typing import TextIO

from .. import _reader, _ring, _shm
from .._config import validate_session_id
from . import UsageError, read_input_file, require_segment_file

NAME = "read-ring"
HELP = "decode a ring: a saved .ring file, a session id, or a shared-memory segment name"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help=".ring file, session id, or segment name")
    parser.add_argument("--last", type=int, default=20, metavar="N",
                        help="show the newest N slots (default 20; 0 for the header only)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def load(target: str) -> tuple[str, _reader.RingImage]:
    """(description, decoded image) for a file path, segment name or session id."""
    if os.path.sep in target or target.endswith(".ring") or os.path.isfile(target):
        return target, _reader.RingImage(_read_file(target))
    if target.startswith(_shm.PREFIX):
        try:
            _shm.parse_segment_name(target)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return target, _open_live(target)
    try:
        validate_session_id(target, "session id")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    names = [n for n in _shm.list_segments() if _shm.parse_segment_name(n)[0] == target]
    if not names:
        if os.path.lexists(target):  # a directory, a FIFO, a loop: say what it is
            return target, _reader.RingImage(_read_file(target))
        raise UsageError(f"no live ring for session {target!r} and no such file")
    if len(names) > 1:
        raise UsageError(f"session {target!r} has {len(names)} live rings: {', '.join(names)}; "
                         "name one")
    return names[0], _open_live(names[0])


# The largest ring the format allows: a header and MAX_SLOTS slots (about 336 MiB).
MAX_RING_BYTES = _ring.ring_size(_reader.MAX_SLOTS)


def _read_file(path: str) -> bytes:
    return read_input_file(path, MAX_RING_BYTES, "ring")


def _open_live(name: str) -> _reader.RingImage:
    require_segment_file(name)
    try:
        mapping = _shm.open_segment(name)
    except FileNotFoundError:
        raise UsageError(f"no such segment: {name}") from None
    except OSError as exc:
        raise UsageError(f"cannot open segment {name}: {exc}") from None
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
        out.write(json.dumps(_document(source, image, slots, torn), indent=2,
                             allow_nan=False, default=str) + "\n")
        return 0
    _print_text(source, image, slots, torn, out)
    return 0


def _document(source: str, image: _reader.RingImage, slots: list[_reader.Slot],
              torn: int) -> dict[str, object]:
    # A recorded stat may be NaN or infinite, and a damaged ring's header may hold any
    # float: JSON has neither, so they are written as a dump's session writes them.
    from .._diagnostics import json_safe_stats  # pydantic: only when JSON is asked for

    header = json_safe_stats(image.header_dict())
    if isinstance(header["status"], dict):
        header["status"] = json_safe_stats(header["status"])
    return {"source": source, "header": header,
            "slots": [{**s.as_dict(), "values": json_safe_stats(s.values)} for s in slots],
            "torn": torn}


def _print_text(source: str, image: _reader.RingImage, slots: list[_reader.Slot], torn: int,
                out: TextIO) -> None:
    created = _dt.datetime.fromtimestamp(image.created_unix_ns / 1e9, tz=_dt.timezone.utc)
    w = out.write
    w(f"ring      {source}\n")
    w(f"session   {image.session_id}   host pid {image.host_pid}   "
      f"watchdog pid {image.watchdog_pid or '-'}\n")
    w(f"created   {created:%Y-%m-%d %H:%M:%S} UTC   slots {image.slot_count}   "
      f"interval {image.interval}s\n")
    w(f"flags     {', '.join(_reader.flag_names(image.flags)) or '-'}"
      + (f"   exception {image.exception}" if image.exception else "") + "\n")
    w(f"activity  {image.last_label or '-'}\n")
    status = image.status
    if status:
        w(f"status    {status.level}   ratio {status.ratio:.3f}   rss {status.rss}   "
          f"limit {status.heap_limit or '-'} ({status.limit_source})\n")
    w(f"stats     {', '.join(image.names) or '-'}\n")
    w(f"dir       {image.diagnostics_dir}\n")
    if slots or torn:
        w(f"slots     newest {len(slots)} shown, {torn} torn skipped\n")
    for slot in slots:
        label = f" [{slot.label}]" if slot.label is not None else ""
        values = " ".join(f"{k}={v}" for k, v in slot.values.items())
        w(f"  #{slot.index} {slot.kind}{label} {values}\n")
