"""A dump's timeline, ready to draw: RSS against the limit over the minute before the
dump, the marks, the dump itself and the other dumps of its session beside it.

One picture, three renderings: text for ``show`` (``_chart``), an SVG for ``--html``'s
page (``_svg``, in ``_page``), a PNG for ``--png`` (``_png``); each takes a ``Timeline``,
and what is drawn the same on each (the least span, the bands, the marks drawn) is
decided here.
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
    from collections.abc import Callable

    from .._diagnostics import Descendant, Diagnostics

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
# The units of the axes, each used from twice its size: 10**18 bytes (a hand-edited
# dump) reads as 888 PiB, not 953674316 GiB.
UNITS = (("MiB", MIB), ("GiB", GIB), ("TiB", 1 << 40), ("PiB", 1 << 50), ("EiB", 1 << 60))
# The least span of the time axis, seconds: samples all at one time (a dump taken at
# once after the start holds t = -0.001 and 0.0) are drawn over it, not over nothing.
MIN_SPAN = 1.0
# A sample further than this from the dump is no sample of its minute (a hand-edited
# t of -1e300): it is left out of the pictures, and they say how many were.
MAX_AWAY = 7 * 86400.0
# The most marks drawn as ticks: beyond, they hatch over the bands. Every mark is in
# the tables and lists; the ticks are thinned evenly.
MAX_DRAWN_MARKS = 40
# Each sample gets a dot while at most this many distinct places on the plot hold one.
MAX_SAMPLE_DOTS = 30

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
        kept = [(t, rss) for t, rss in points if _near(t)]
        self.points = kept  # (t, rss), oldest first
        self.left_out = len(points) - len(kept)  # the samples of absurd times
        self.marks = [m for m in marks if _near(m.t)]
        self.rss = rss  # the dump's own figure, drawn at t = 0
        self.limit = limit if limit is not None and limit > 0 else None
        self.ratio = ratio
        self.thresholds = thresholds
        self.thresholds_from = thresholds_from
        self.siblings = siblings or []
        self.path: str | None = None  # where the dump was read: its extras lie beside it

    # -- the axes ---------------------------------------------------------------------

    def x_range(self) -> tuple[float, float]:
        """Seconds: from the first point (or the oldest sibling drawn) to the dump or
        the newest sibling drawn; never empty."""
        ts = [t for t, _ in self.points] + [s.t for s in self.drawn_siblings()] + [0.0]
        low, high = min(ts), max(ts)
        # One sample, none, or all at one time: MIN_SPAN before the newest.
        return min(low, high - MIN_SPAN), high

    def x_title(self) -> str:
        """The time axis's title: "before" only while nothing is drawn after the dump."""
        return "seconds before the dump" if self.x_range()[1] <= 0 else (
            "seconds from the dump")

    def samples(self) -> str:
        """How many samples, over what span: ``240 samples over 59.8 s``."""
        points = self.points
        if not points:
            return "no samples"
        if len(points) == 1:
            return "one sample"
        span = points[-1][0] - points[0][0]
        return (f"{len(points)} samples at one time" if span == 0
                else f"{len(points)} samples over {span:.1f} s" if span >= 0.1
                else f"{len(points)} samples over {span * 1000:.0f} ms")

    def drawn_marks(self, most: int = MAX_DRAWN_MARKS) -> list[tuple[int, Mark]]:
        """(number from 1, mark) of the marks drawn as ticks: all of them up to ``most``,
        else ``most`` evenly spread, the first and the last kept."""
        marks = self.marks
        if len(marks) <= most:
            return list(enumerate(marks, 1))
        picked = sorted({round(i * (len(marks) - 1) / (most - 1)) for i in range(most)})
        return [(i + 1, marks[i]) for i in picked]

    def bands(self) -> list[tuple[str, float, float]]:
        """(name, from, to) as shares of the limit: soft to hard, hard to critical,
        critical to the limit (1.0), then "over" (to infinity). Thresholds as a
        hand-edited dump may hold them are drawable all the same: a non-finite one is
        left out (the band below reaches up to the next), each is clamped to [0, 1] and
        none is below the one before; a band of no height is not drawn."""
        edges: list[tuple[str, float]] = []
        floor = 0.0
        for name, value in zip(("soft", "hard", "critical"), self.thresholds, strict=True):
            if math.isfinite(value):
                floor = max(floor, min(1.0, value))
                edges.append((name, floor))
        ends = [at for _, at in edges[1:]] + [1.0]
        return [(name, start, end) for (name, start), end in zip(edges, ends, strict=True)
                if end > start] + [("over", 1.0, math.inf)]

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
        lowest = self.bands()[0][1]
        return self.limit <= LIMIT_IN_VIEW * self.data_top() or self.ratio >= lowest

    def data_top(self) -> int:
        values = [rss for _, rss in self.points] + [
            s.rss for s in self.drawn_siblings() if s.rss is not None]
        if self.rss is not None:
            values.append(self.rss)
        return max(values, default=0)

    def y_axis(self, counts: tuple[int, ...] = (4, 5, 6)) -> tuple[float, float, str]:
        """(top, step, unit): the top of the y axis and the step between its labelled
        lines, in bytes, and the unit they are labelled in (one of UNITS). The lowest
        top of at most max(``counts``) nice steps: 178 MiB is drawn up to 180, not 250."""
        top = float(self.data_top())
        if self.limit_in_view():
            assert self.limit is not None
            top = max(top, float(self.limit))
        top = max(top, float(MIB))  # an empty or tiny host: 1 MiB of axis
        unit, scale = unit_for(top)
        steps = [nice_ceiling(top / scale / n) * scale for n in counts]
        step = min(steps, key=lambda s: (math.ceil(top / s - 1e-9) * s, -s))
        return math.ceil(top / step - 1e-9) * step, step, unit


def _near(t: float) -> bool:
    return math.isfinite(t) and abs(t) <= MAX_AWAY


def dots(points: list[tuple[float, int]], x: Callable[[float], float],
         y: Callable[[float], float], most: int = MAX_SAMPLE_DOTS) -> list[tuple[float, int]]:
    """The samples that get a dot, one for each distinct place (``x`` and ``y`` give it,
    rounded): none when more than ``most`` places hold one (the line alone says it
    then). 50 samples at one time and size are one dot, not nothing."""
    places: dict[tuple[int, int], tuple[float, int]] = {}
    for t, rss in points:
        places.setdefault((round(x(t)), round(y(rss))), (t, rss))
        if len(places) > most:
            return []
    return list(places.values())


def unit_for(value: float) -> tuple[str, int]:
    """(name, bytes) of the unit ``value`` bytes is said in: MiB, or the largest of
    UNITS that ``value`` is at least twice of."""
    return next(((name, scale) for name, scale in reversed(UNITS) if value >= 2 * scale),
                UNITS[0])


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
    """``value`` bytes in ``unit`` (one of UNITS), as short as it stays exact enough."""
    scaled = value / dict(UNITS)[unit]
    if scaled == 0:
        return "0"
    text = f"{scaled:.0f}" if scaled >= 10 or scaled == int(scaled) else f"{scaled:.1f}"
    if abs(float(text) - scaled) > scaled * 0.01:
        text = f"{scaled:.2f}"
    return f"{text} {unit}"


def size(value: int | float | None) -> str:
    """Bytes for a person: MiB below 2 GiB, GiB below 2 TiB, and so on (UNITS); ``-``
    for unknown."""
    if value is None:
        return "-"
    unit, scale = unit_for(abs(value))
    return f"{value / scale:.1f} MiB" if unit == "MiB" else f"{value / scale:.2f} {unit}"


def seconds(t: float, digits: int = 1) -> str:
    """A time on the axis: ``-12.3 s``, ``0 s``; whole seconds from 1000 s away."""
    digits = 0 if abs(t) >= 1000 else digits
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
    timeline.path = path
    if dump.thresholds is not None:  # older dumps did not say them
        t = dump.thresholds
        timeline.thresholds = (t.soft, t.hard, t.critical)
        timeline.thresholds_from = "the session's, as the dump says them"
        if not all(math.isfinite(v) and 0 <= v <= 1 for v in timeline.thresholds):
            timeline.thresholds_from += (f" ({t.soft}, {t.hard}, {t.critical}: drawn left "
                                         "out where not a number, else within 0 to 1)")
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


def descendant_verdict(descendant: Descendant) -> str:
    """How the process of ``run``'s tree a descendant-died dump is about ended, in one
    line (its name unescaped): ``descendant tail (pid 4321) was killed by the kernel's
    OOM killer (SIGKILL) at 180.0 MiB, certain``."""
    e = descendant.exit
    pid = "pid unknown" if descendant.pid is None else f"pid {descendant.pid}"
    detail = [part for part in (e.signal, None if e.exit_code is None
                                else f"exit code {e.exit_code}") if part]
    tail = f" ({', '.join(detail)})" if detail else ""
    at = "" if descendant.rss is None else f" at {size(descendant.rss)}"
    sure = "" if e.kind == "unknown" else f", {_SURE.get(e.confidence, '?')}"
    return f"descendant {descendant.name} ({pid}) {_KINDS.get(e.kind, e.kind)}{tail}{at}{sure}"
