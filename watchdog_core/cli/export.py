"""``watchdog-core export``: the live sessions of this machine as one scrape, in the
Prometheus text exposition format (``--prometheus``) or its OpenMetrics form
(``--openmetrics``), for node_exporter's textfile collector, or pushed through the
OpenTelemetry SDK (``--otlp``, ``_otel``) (docs/fleet.md).

The families and their text are ``_metrics``', shared with the files the watchdogs
keep in a textfile folder (``_textfile``). Only the status block and the counters of
the ring's header are read, as ``ls`` reads them, so a scrape costs a mapping and a few
words per session. Every family appears in the output, with its HELP and TYPE, even
when no session is live.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, NamedTuple, TextIO

from .. import _metrics, _reader, _ring, _shm
from . import UsageError
from .read_ring import map_segment

if TYPE_CHECKING:
    import mmap

NAME = "export"
HELP = ("print the live sessions of this machine as one scrape (Prometheus text format "
        "or OpenMetrics), or push them over OTLP")


def configure(parser: argparse.ArgumentParser) -> None:
    form = parser.add_mutually_exclusive_group(required=True)
    form.add_argument("--prometheus", action="store_true",
                      help="the Prometheus text exposition format (version 0.0.4), as "
                      "node_exporter's textfile collector reads it")
    form.add_argument("--openmetrics", action="store_true",
                      help="OpenMetrics 1.0 text: UNIT lines, counters' samples end in "
                      "_total, the scrape ends with '# EOF'")
    form.add_argument("--otlp", action="store_true",
                      help="push through the OpenTelemetry SDK over OTLP/HTTP, configured "
                      "by the OTEL_* environment, every OTEL_METRIC_EXPORT_INTERVAL until "
                      "stopped (needs watchdog-core[otel])")
    parser.add_argument("--once", action="store_true",
                        help="with --otlp: push once and exit (1 if the push failed)")


class Sample(NamedTuple):
    """What one live session of ours says, read once from its ring's header."""

    session: str
    program: str
    limit_source: str
    status: _reader.Status
    dumps: dict[str, int]  # by trigger
    sampled_age: float  # seconds since the watchdog's last sample (wall clock)

    def series(self) -> _metrics.Series:
        return _metrics.live_series(self.status, self.dumps, self.sampled_age)


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
            dumps = _ring.dump_counts(words)
        finally:
            words.release()
            head.release()
        return Sample(image.session_id,
                      _metrics.program_name(image.host_pid, image.host_start_ticks),
                      status.limit_source, status, dumps,
                      max(0.0, now_ns / 1e9 - status.sampled))


def render(samples: list[Sample], openmetrics: bool) -> str:
    """The scrape of ``samples``: every family, each session's series under its labels."""
    return _metrics.render(
        _metrics.LIVE,
        [(_metrics.session_labels(s.session, s.program, s.limit_source), s.series())
         for s in samples],
        openmetrics)


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.once and not args.otlp:
        raise UsageError("--once goes with --otlp: the text formats are printed once anyway")
    if args.otlp:
        try:
            from . import _otel
        except ImportError as exc:
            raise UsageError(f"--otlp needs the OpenTelemetry SDK ({exc}): pip install "
                             "'watchdog-core[otel]'") from None
        return _otel.push(live_sessions, once=args.once, err=sys.stderr)
    out.write(render(live_sessions(), openmetrics=bool(args.openmetrics)))
    return 0
