"""``watchdog-core export``: the live sessions of this machine as one scrape, in the
Prometheus text exposition format (``--prometheus``) or its OpenMetrics form
(``--openmetrics``), for node_exporter's textfile collector (docs/fleet.md).

Written here with the standard library, never through prometheus_client: the package
has no dependency for it, and the tests parse the output with prometheus_client's own
parsers. Only the status block and the counters of the ring's header are read, as
``ls`` reads them, so a scrape costs a mapping and a few words per session.

Labels are bounded on purpose: ``session`` (the session id), ``program`` (the host's
``/proc/<pid>/comm``, never its argv, which may hold secrets) and ``limit_source``
(one of a handful of words). Every family appears in the output, with its HELP and
TYPE, even when no session is live.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import TYPE_CHECKING, NamedTuple, TextIO

from .. import _attribution, _reader, _ring, _shm
from . import UsageError
from .read_ring import map_segment

if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable

NAME = "export"
HELP = ("print the live sessions of this machine as one scrape: Prometheus text format "
        "or OpenMetrics")


def configure(parser: argparse.ArgumentParser) -> None:
    form = parser.add_mutually_exclusive_group(required=True)
    form.add_argument("--prometheus", action="store_true",
                      help="the Prometheus text exposition format (version 0.0.4), as "
                      "node_exporter's textfile collector reads it")
    form.add_argument("--openmetrics", action="store_true",
                      help="OpenMetrics 1.0 text: UNIT lines, counters' samples end in "
                      "_total, the scrape ends with '# EOF'")


class Sample(NamedTuple):
    """What one live session of ours says, read once from its ring's header."""

    session: str
    program: str
    limit_source: str
    status: _reader.Status
    dumps: int
    pressure_dumps: int
    sampled_age: float  # seconds since the watchdog's last sample (wall clock)


class Family(NamedTuple):
    """A metric family: its name (with ``_total`` for a counter, as Prometheus names
    it), type, OpenMetrics unit (the name's suffix, or ""), help, and the value of a
    session (None: no sample for that session)."""

    name: str
    kind: str
    unit: str
    help: str
    value: Callable[[Sample], float | None]


def _limit(s: Sample) -> float | None:
    return s.status.heap_limit


FAMILIES = (
    Family("watchdog_core_rss_bytes", "gauge", "bytes",
           "Resident set size of the host at the watchdog's last sample.",
           lambda s: s.status.rss),
    Family("watchdog_core_limit_bytes", "gauge", "bytes",
           "The memory limit the host is graded against (no sample when it has none).",
           _limit),
    Family("watchdog_core_limit_used_ratio", "gauge", "ratio",
           "Memory in use over the limit, as the watchdog graded it (1 is the limit).",
           lambda s: s.status.ratio),
    Family("watchdog_core_level", "gauge", "",
           "Pressure level: 0 normal, 1 soft, 2 hard, 3 critical.",
           lambda s: _ring._LEVELS.index(s.status.level)),
    Family("watchdog_core_growth_bytes_per_second", "gauge", "bytes_per_second",
           "Growth of memory in use, bytes per second (negative when shrinking).",
           lambda s: s.status.growth),
    Family("watchdog_core_time_to_limit_seconds", "gauge", "seconds",
           "Seconds until the limit at the present growth (no sample when not growing).",
           lambda s: s.status.seconds_to_limit),
    Family("watchdog_core_last_sample_age_seconds", "gauge", "seconds",
           "Seconds since the watchdog's last sample of the host.",
           lambda s: s.sampled_age),
    Family("watchdog_core_samples_total", "counter", "",
           "Samples the watchdog has taken of the host.",
           lambda s: s.status.samples),
    Family("watchdog_core_dumps_total", "counter", "",
           "Diagnostics files written for the session, of every trigger.",
           lambda s: s.dumps),
    Family("watchdog_core_pressure_dumps_total", "counter", "",
           "Diagnostics files written for the session on a rise in pressure.",
           lambda s: s.pressure_dumps),
)


def live_sessions() -> list[Sample]:
    """One Sample per live session of ours that the watchdog has sampled, by session id.

    As ``ls`` counts trouble: only our own segments (anyone may plant one that says
    anything), and only those whose host holds its lock. Two live segments with one
    session id (a restart racing its predecessor's exit) are one series: the newest
    sample wins, so a scrape never holds the same series twice.
    """
    me = os.geteuid()
    now_ns = time.time_ns()
    found: dict[str, Sample] = {}
    for name in _shm.list_segments():
        if _shm.segment_owner(name) != me:
            continue  # another user's, or gone since the listing
        held = _shm.holders(name)
        if held is None or not held[0]:
            continue  # its host is gone (gc recovers it), or a lock we cannot see
        try:
            mapping = map_segment(name)
        except (UsageError, OSError, ValueError):
            continue  # not a ring's file, gone, or empty (being created): nothing live
        try:
            sample = _read(mapping, now_ns)
        finally:
            mapping.close()
        if sample is None:
            continue
        before = found.get(sample.session)
        if before is None or sample.sampled_age < before.sampled_age:
            found[sample.session] = sample
    return [found[key] for key in sorted(found)]


def _read(mapping: mmap.mmap, now_ns: int) -> Sample | None:
    try:
        image = _reader.RingImage(mapping)
    except _ring.RingError:
        return None  # unreadable or not written yet: ls shows why
    with image:
        status = image.status
        if status is None:
            return None  # before the watchdog's first sample there is nothing to say
        head = memoryview(mapping)[: _ring.HEADER_SIZE]
        words = head.cast("Q")
        try:
            pressure_dumps = int(words[_ring.W_PRESSURE_DUMPS])
        finally:
            words.release()
            head.release()
        return Sample(image.session_id, program_name(image.host_pid, image.host_start_ticks),
                      status.limit_source, status, image.dumps, pressure_dumps,
                      max(0.0, now_ns / 1e9 - status.sampled))


def program_name(pid: int, start_ticks: int) -> str:
    """The host's command name (``/proc/<pid>/comm``, at most 15 bytes), or ``unknown``
    when the pid is not the host's here: another pid namespace numbers it, or it was
    reused (its start time differs from the one the ring holds). Never argv."""
    stat = _attribution.read_proc_stat(pid)
    if stat is None or (start_ticks and stat.start_ticks != start_ticks):
        return "unknown"
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read(64).rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "unknown"
    return comm or "unknown"


def escape_label(value: str) -> str:
    """A label value as both formats quote it: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(samples: list[Sample], openmetrics: bool) -> str:
    """The scrape of ``samples``: every family with its HELP and TYPE (and UNIT in
    OpenMetrics), its samples together, one per session that has a value."""
    lines: list[str] = []
    for family in FAMILIES:
        name = family.name
        if openmetrics and family.kind == "counter":
            name = name.removesuffix("_total")  # OpenMetrics names the family without it
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        if openmetrics and family.unit:
            lines.append(f"# UNIT {name} {family.unit}")
        for s in samples:
            value = family.value(s)
            if value is None:
                continue
            labels = (f'session="{escape_label(s.session)}",'
                      f'program="{escape_label(s.program)}",'
                      f'limit_source="{escape_label(s.limit_source)}"')
            lines.append(f"{family.name}{{{labels}}} {format_value(value)}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, out: TextIO) -> int:
    out.write(render(live_sessions(), openmetrics=bool(args.openmetrics)))
    return 0
