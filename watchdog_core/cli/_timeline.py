"""A dump's timeline, ready to draw: RSS against the limit over the minute before the
dump, the marks, the dump itself and the other dumps of its session beside it.

One picture, three renderings: text for ``show`` (``_chart``), an SVG page for
``--html`` (``_page``), a PNG for ``--png`` (``_png``); each takes a ``Timeline``.
Everything here is read from files someone else wrote: figures are checked, strings
are left for the renderer to escape.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._diagnostics import Diagnostics

# SessionConfig's own defaults (soft, hard, critical): the bands of a dump whose session's
# settings cannot be found (tests/unit/test_timeline.py holds them to SessionConfig's).
DEFAULT_THRESHOLDS = (0.50, 0.65, 0.80)
# The y axis reaches up to the limit unless the limit is this many times the highest RSS
# (a host of 40 MiB on a machine of 64 GiB is a flat line at the bottom otherwise).
LIMIT_IN_VIEW = 5.0
# The dumps of the same session read beside a dump: the nearest in time, within an hour
# (a dump may weigh 16 MiB; retention keeps 100 files).
MAX_SIBLINGS, SIBLING_SECONDS = 32, 3600.0
MIB, GIB = 1 << 20, 1 << 30

# The limit sources whose usage is not RSS (docs/pressure.md): a ratio near 1 with RSS
# far below the limit is no contradiction there.
USAGE_OF = {"cgroup-v2": "the cgroup's memory", "cgroup-v1": "the cgroup's memory",
            "rlimit-as": "the address space (VMS)", "rlimit-data": "the data segment"}


class Mark:
    """A ``mark()`` label, placed at the first timeline point that saw it."""

    __slots__ = ("t", "rss", "label")

    def __init__(self, t: float, rss: int, label: str) -> None:
        self.t, self.rss, self.label = t, rss, label


class Sibling:
    """Another dump of the same session, beside the file: ``t`` seconds after this one
    (negative: before it)."""

    __slots__ = ("t", "rss", "trigger", "level", "name")

    def __init__(self, t: float, rss: int | None, trigger: str, level: str,
                 name: str) -> None:
        self.t, self.rss, self.trigger, self.level, self.name = t, rss, trigger, level, name


class Timeline:
    """What the pictures draw, in bytes and in seconds relative to the dump."""

    def __init__(self, points: list[tuple[float, int]], marks: list[Mark], *,
                 rss: int | None, limit: int | None, ratio: float,
                 thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS,
                 thresholds_from: str = "the defaults",
                 siblings: list[Sibling] | None = None) -> None:
        self.points = points  # (t, rss), oldest first
        self.marks = marks
        self.rss = rss  # the dump's own figure, drawn at t = 0
        self.limit = limit if limit is not None and limit > 0 else None
        self.ratio = ratio
        self.thresholds = thresholds
        self.thresholds_from = thresholds_from
        self.siblings = siblings or []

    # -- the axes ---------------------------------------------------------------------

    def x_range(self) -> tuple[float, float]:
        """Seconds: from the first point (or the oldest sibling drawn) to the dump or
        the newest sibling drawn; never empty."""
        ts = [t for t, _ in self.points] + [s.t for s in self.drawn_siblings()] + [0.0]
        low, high = min(ts), max(ts)
        if len(self.points) < 2:  # one sample, or none: at least a second before the dump
            low = min(low, high - 1.0)
        return low, high

    def drawn_siblings(self) -> list[Sibling]:
        """The other dumps that fall within this timeline's minute (or the minute after
        the dump): the rest are only listed."""
        start = min((t for t, _ in self.points), default=0.0)
        return [s for s in self.siblings
                if s.rss is not None and start - 1.0 <= s.t <= 60.0]

    def limit_in_view(self) -> bool:
        """Whether the y axis reaches the limit: when RSS is within LIMIT_IN_VIEW of it,
        or the dump's ratio is in a band (its usage may not be RSS, see USAGE_OF)."""
        if self.limit is None:
            return False
        return (self.limit <= LIMIT_IN_VIEW * self.data_top()
                or self.ratio >= self.thresholds[0])

    def data_top(self) -> int:
        values = [rss for _, rss in self.points] + [
            s.rss for s in self.drawn_siblings() if s.rss is not None]
        if self.rss is not None:
            values.append(self.rss)
        return max(values, default=0)

    def y_axis(self, counts: tuple[int, ...] = (4, 5, 6)) -> tuple[float, float, str]:
        """(top, step, unit): the top of the y axis and the step between its labelled
        lines, in bytes, and the unit they are labelled in (MiB or GiB). The lowest top
        of at most max(``counts``) nice steps: 178 MiB is drawn up to 180, not 250."""
        top = float(self.data_top())
        if self.limit_in_view():
            assert self.limit is not None
            top = max(top, float(self.limit))
        top = max(top, float(MIB))  # an empty or tiny host: 1 MiB of axis
        unit, scale = ("GiB", GIB) if top >= 2 * GIB else ("MiB", MIB)
        steps = [nice_ceiling(top / scale / n) * scale for n in counts]
        step = min(steps, key=lambda s: (math.ceil(top / s - 1e-9) * s, -s))
        return math.ceil(top / step - 1e-9) * step, step, unit


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10.0 * power


def nice_seconds(span: float, ticks: int = 6) -> float:
    """A step between x ticks for ``span`` seconds: about ``ticks`` of them."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= ticks:
            return float(step)
    return nice_ceiling(span / ticks)


def byte_label(value: float, unit: str) -> str:
    """``value`` bytes in ``unit`` (MiB or GiB), as short as it stays exact enough."""
    scaled = value / (GIB if unit == "GiB" else MIB)
    if scaled == 0:
        return "0"
    text = f"{scaled:.0f}" if scaled >= 10 or scaled == int(scaled) else f"{scaled:.1f}"
    if abs(float(text) - scaled) > scaled * 0.01:
        text = f"{scaled:.2f}"
    return f"{text} {unit}"


def size(value: int | float | None) -> str:
    """Bytes for a person: MiB below 2 GiB, GiB above; ``-`` for unknown."""
    if value is None:
        return "-"
    if value >= 2 * GIB:
        return f"{value / GIB:.2f} GiB"
    return f"{value / MIB:.1f} MiB"


def seconds(t: float, digits: int = 1) -> str:
    """A time on the axis: ``-12.3 s``, ``0 s``."""
    return "0 s" if abs(t) < 0.5 * 10.0 ** -digits else f"{t:.{digits}f} s"


def place_labels(xs: list[float], widths: list[float], rows: int, right: float,
                 gap: float = 6.0) -> list[tuple[int, float] | None]:
    """Where each of a row of labels goes, left to right (``xs`` in order, in the units of
    ``widths``): (row, where it starts), the label starting at its x or, against the
    ``right`` edge, ending there; the first of ``rows`` rows with room for it, else
    None: no label (the tick stays, and the table beside names it)."""
    ends = [-math.inf] * rows
    placed: list[tuple[int, float] | None] = []
    for at, width in zip(xs, widths, strict=True):
        start = at if at + width <= right else at - width
        row = next((r for r in range(rows) if ends[r] + gap <= start), None)
        if row is not None:
            ends[row] = start + width
        placed.append(None if row is None else (row, start))
    return placed


# -- from a dump ----------------------------------------------------------------------------

def from_dump(dump: Diagnostics, path: str | None = None) -> Timeline:
    """The timeline of ``dump``; with ``path`` (where it was read), the other dumps of its
    session in the same directory, and the session's thresholds from a ring image saved
    beside it (its own or another dump's), where there is one."""
    points: list[tuple[float, int]] = []
    marks: list[Mark] = []
    for point in sorted((p for p in dump.timeline if math.isfinite(p.t)), key=_by_t):
        points.append((point.t, point.rss))
        if point.mark is not None:
            marks.append(Mark(point.t, point.rss, point.mark))
    ratio = dump.memory.ratio if math.isfinite(dump.memory.ratio) else 0.0
    timeline = Timeline(points, marks, rss=dump.memory.rss, limit=dump.memory.heap_limit,
                        ratio=ratio)
    if dump.thresholds is not None:  # older dumps did not say them
        t = dump.thresholds
        timeline.thresholds = (t.soft, t.hard, t.critical)
        timeline.thresholds_from = "the session's, as the dump says them"
    if path is None:
        return timeline
    directory = os.path.dirname(path) or "."
    siblings, rings = _siblings(directory, os.path.basename(path), dump)
    timeline.siblings = siblings
    for name in ([dump.ring.file] if dump.ring.file else []) + rings:
        if dump.thresholds is not None:
            break
        if os.path.basename(name) != name or name in (".", ".."):
            continue  # a dump may name anything: only a file beside it is read
        found = ring_thresholds(os.path.join(directory, name), dump.session_id)
        if found is not None:
            timeline.thresholds = found
            timeline.thresholds_from = f"the session's, from {name}"
            break
    return timeline


def _by_t(point: object) -> float:
    return float(point.t)  # type: ignore[attr-defined]


def _siblings(directory: str, own: str, dump: Diagnostics) -> tuple[list[Sibling], list[str]]:
    """The other dumps of ``dump``'s session in ``directory``, oldest first, and the
    ring images they name. A file that cannot be read is left out: they are extras."""
    from .._diagnostics import load
    from .._store import DUMP_PREFIX, dump_set_of
    from . import UsageError, read_input_file
    from .show import MAX_DUMP_BYTES

    try:
        names = os.listdir(directory)
    except OSError:
        return [], []
    prefix = f"{DUMP_PREFIX}{dump.session_id}-"
    here = _when(dump.timestamp)
    candidates = []
    for name in names:
        found = dump_set_of(name) if name != own and name.endswith(".json") else None
        # memory-{session}-{stamp}.json of this very session (another's id may be longer)
        if found is not None and name == f"{prefix}{found[1]}.json":
            away = abs((_dt.datetime.strptime(found[1], "%Y%m%dT%H%M%S.%fZ")
                        - here).total_seconds())
            if away <= SIBLING_SECONDS:  # judged from the name, before a byte is read
                candidates.append((away, name))
    siblings, rings = [], []
    for _, name in sorted(candidates)[:MAX_SIBLINGS]:  # the nearest in time
        try:
            other = load(read_input_file(os.path.join(directory, name), MAX_DUMP_BYTES))
        except (UsageError, ValueError):  # pydantic's ValidationError is a ValueError
            continue
        if other.session_id != dump.session_id:
            continue
        siblings.append(Sibling((_when(other.timestamp) - here).total_seconds(),
                                other.memory.rss, other.trigger, other.level, name))
        if other.ring.file:
            rings.append(other.ring.file)
    siblings.sort(key=lambda s: s.t)
    return siblings, rings


def _when(timestamp: str) -> _dt.datetime:
    # The model checked the form: 2026-11-29T10:15:00.123456Z, the fraction optional.
    form = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in timestamp else "%Y-%m-%dT%H:%M:%SZ"
    return _dt.datetime.strptime(timestamp, form)


def ring_thresholds(path: str, session_id: str) -> tuple[float, float, float] | None:
    """(soft, hard, critical) from the header of the ring image at ``path``, if it is
    one of ``session_id``'s and holds thresholds a session may have; else None.

    Only the header is read, and only from a regular file: a FIFO is never waited on."""
    from .. import _reader, _ring
    from .._config import check_thresholds

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        head = os.read(fd, _ring.HEADER_SIZE)
        _reader._validate_header(head, st.st_size)
        at = _ring.SESSION_ID_AT
        if _ring._cstr(head[at : at + _ring.SESSION_ID_SIZE]) != session_id:
            return None
        config = _ring.RingConfig.unpack(head[_ring.CONFIG_AT : _ring.CONFIG_AT
                                              + _ring.CONFIG.size])
        return check_thresholds(config.soft, config.hard, config.critical)
    except (OSError, ValueError, _ring.RingError):
        return None
    finally:
        os.close(fd)


# -- words ----------------------------------------------------------------------------------

_SURE = {"certain": "certain", "likely": "likely, not certain",
         "unknown": "a guess: nothing tells for sure"}
_KINDS = {"oom-killed": "was killed by the kernel's OOM killer", "crashed": "crashed",
          "killed": "was killed", "exited": "exited", "unknown": "ended, how is unknown"}


def verdict(dump: Diagnostics) -> str:
    """How the host fared, in one line (the dump's own words in it, unescaped): how it
    died and how sure that is, or that it lived and at what level."""
    exit_ = dump.host.exit
    if exit_ is not None:
        how = _KINDS.get(exit_.kind, exit_.kind)
        detail = [part for part in (
            exit_.signal, f"exit code {exit_.exit_code}" if exit_.exit_code is not None
            else None, exit_.exception) if part]
        tail = f" ({', '.join(detail)})" if detail else ""
        sure = "" if exit_.kind == "unknown" else f", {_SURE.get(exit_.confidence, '?')}"
        return f"the host {how}{tail}{sure}"
    if not dump.host.alive:
        return "the host died; how is not known"
    m = dump.memory
    at = f"at level {dump.level}"
    if m.heap_limit and math.isfinite(m.ratio):
        at += f", {m.ratio:.0%} of its {size(m.heap_limit)} limit ({m.limit_source})"
    r = dump.responsiveness
    if r is not None and r.state == "unresponsive":
        return f"the host was unresponsive ({r.reason}) {at}"
    return f"the host was alive {at}"
