"""One line for a status bar from the watchdog's status block: ``wd.status_line()``.

    mem 1.3 GiB / 2.0 GiB (65%) +40 MiB/min, ~14 min to limit

Stdlib only and cheap (the host may call it every turn): a header read and a format.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._reader import Status

FLAT = 1 << 20  # bytes per minute below which growth is not worth a mention


def render(status: Status | None, *, always: bool = False) -> str:
    """The line for ``status``; "" before the first sample, and at the normal level
    unless ``always`` (a status bar shows it only when there is something to see)."""
    if status is None or (status.level == "normal" and not always):
        return ""
    line = f"mem {size(status.rss)}"
    if status.heap_limit:
        line += f" / {size(status.heap_limit)} ({status.ratio:.0%})"
    per_minute = status.growth * 60
    if per_minute >= FLAT:
        line += f" +{size(per_minute)}/min"
    if status.seconds_to_limit is not None and status.heap_limit:
        line += f", ~{duration(status.seconds_to_limit)} to limit"
    return line


def size(count: float) -> str:
    """Bytes in binary units: ``812 MiB``, ``1.3 GiB``."""
    if count >= 1 << 30:
        return f"{count / (1 << 30):.1f} GiB"
    if count >= 1 << 20:
        return f"{count / (1 << 20):.0f} MiB"
    return f"{count / (1 << 10):.0f} KiB"


def duration(seconds: float) -> str:
    """``40 s``, ``14 min``, ``2.5 h``, ``3 d``."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"
