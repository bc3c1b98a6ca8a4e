"""``watchdog-core show FILE.ring``: a saved ring, read as ``show`` reads a dump."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from . import UsageError, printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from .. import _reader

SLOTS_READ = 4096  # the newest slots looked through for marks
MARKS = 10  # of those, the newest shown


def show_ring(path: str, raw: bytes, out: TextIO) -> int:
    """A saved ring, read as ``show`` reads a dump: whose, how far, its last stats and
    marks and the watchdog's last grading. Exit 1 when that grading is hard or critical."""
    from .. import _reader, _ring
    from ._timeline import size

    try:
        image = _reader.RingImage(raw)
        slots, torn = image.slots(last=SLOTS_READ)
    except _ring.RingError as exc:
        raise UsageError(f"{path}: {exc}") from None
    p = printable
    w = out.write
    newest = slots[-1] if slots else None
    w(f"ring of session {p(image.session_id)} in {p(path)}\n")
    w(f"  host        pid {image.host_pid}, watchdog pid {image.watchdog_pid or '-'}\n")
    w(f"  records     {newest.index + 1 if newest else 0} in {image.slot_count} slots "
      f"({torn} torn), sampled every {image.interval} s\n")
    status = image.status
    if status is None:
        w("  status      none: the watchdog had not sampled the host\n")
    else:
        w(f"  status      {status.level} (ratio {status.ratio:.3f} of "
          f"{size(status.heap_limit)}, {p(status.limit_source)}), rss {size(status.rss)}\n")
    if image.exception:
        w(f"  exception   {p(image.exception)}\n")
    w(f"  activity    {p(image.last_label or '-')}\n")
    for key, value in (newest.values.items() if newest else ()):
        w(f"  stat        {p(key)} = {value}\n")
    _print_ring_marks(slots, w)
    w(f"  dir         {p(image.diagnostics_dir)}\n")
    return 1 if status is not None and status.level in ("hard", "critical") else 0


def _print_ring_marks(slots: list[_reader.Slot], w: Callable[[str], object]) -> None:
    marks = [s for s in slots if s.kind == "mark"]
    for slot in marks[-MARKS:]:
        w(f"  mark        #{slot.index} {printable(slot.label or '')}\n")
    if len(marks) > MARKS:
        w(f"              (and {len(marks) - MARKS} earlier among the newest "
          f"{len(slots)} slots)\n")

