"""``watchdog-core export --otlp``: every live session's metrics through the
OpenTelemetry SDK, pushed over OTLP from this one process (docs/fleet.md). Never from
the watchdogs: the SDK alone is tens of MiB, against the 10 MiB an idle watchdog has.

The instruments are ``export``'s families under OpenTelemetry's names, chosen so that
the Collector's Prometheus exporter, which turns ``.`` into ``_`` and adds the unit's
suffix (``By`` -> ``_bytes``, ``1`` -> ``_ratio``, ``_total`` for a counter), gives back
exactly the Prometheus names of ``export --prometheus``. Configured the standard way:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._METRICS_ENDPOINT``), ``..._HEADERS``,
``..._TIMEOUT``, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``; OTLP/HTTP with protobuf, the Python SDK's default.

Imported only for ``--otlp``: the ``otel`` extra is optional, and nothing else loads it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from .. import _metrics
from . import UsageError

if TYPE_CHECKING:
    from .export import Sample

# (the family export prints, the instrument's name, its unit)
INSTRUMENTS = (
    (_metrics.RSS, "watchdog_core.rss", "By"),
    (_metrics.LIMIT, "watchdog_core.limit", "By"),
    (_metrics.RATIO, "watchdog_core.limit_used", "1"),
    (_metrics.LEVEL, "watchdog_core.level", "{level}"),
    (_metrics.GROWTH, "watchdog_core.growth", "By/s"),
    (_metrics.TO_LIMIT, "watchdog_core.time_to_limit", "s"),
    (_metrics.AGE, "watchdog_core.last_sample_age", "s"),
    (_metrics.SAMPLES, "watchdog_core.samples", "{sample}"),
    (_metrics.DUMPS, "watchdog_core.dumps", "{dump}"),
)
_FRESH = 1.0  # seconds a read of the sessions serves every instrument of one collection


class Sessions:
    """The live sessions, read once per collection: the SDK asks each instrument's
    callback in turn, and nine reads of every ring would cost nine times one."""

    def __init__(self, read: Callable[[], list[Sample]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._at = -math.inf
        self._samples: list[Sample] = []

    def series(self) -> list[tuple[_metrics.Labels, _metrics.Series]]:
        with self._lock:
            if time.monotonic() - self._at > _FRESH:
                self._samples = self._read()
                self._at = time.monotonic()
            samples = self._samples
        return [(_metrics.session_labels(s.session, s.program, s.limit_source), s.series())
                for s in samples]


def meter_provider(readers: list[MetricReader],
                   read: Callable[[], list[Sample]]) -> MeterProvider:
    """A MeterProvider whose instruments observe the sessions ``read`` returns (export's
    ``live_sessions``) at every collection of ``readers``."""
    base = Resource.create()
    extra: dict[str, str] = {}
    if str(base.attributes.get("service.name", "")).startswith("unknown_service"):
        extra["service.name"] = "watchdog-core"  # unless OTEL_SERVICE_NAME says otherwise
    if "host.name" not in base.attributes:
        extra["host.name"] = socket.gethostname()  # session ids repeat across machines
    provider = MeterProvider(metric_readers=readers, resource=base.merge(Resource(extra)))
    meter = provider.get_meter("watchdog_core")
    sessions = Sessions(read)
    for family, name, unit in INSTRUMENTS:
        callback = _observer(sessions, family)
        if family.kind == "counter":
            meter.create_observable_counter(name, [callback], unit=unit,
                                            description=family.help)
        else:
            meter.create_observable_gauge(name, [callback], unit=unit,
                                          description=family.help)
    return provider


def _observer(sessions: Sessions, family: _metrics.Family
              ) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for labels, series in sessions.series():
            for of, own, value in series:
                if of is family:
                    yield Observation(value, dict(labels + own))
    return observe


class _Reporting(MetricExporter):
    """The OTLP exporter, saying on stderr when pushing fails and when it works again:
    one line each, instead of the SDK's log records."""

    def __init__(self, exporter: MetricExporter, err: TextIO | None) -> None:
        super().__init__(preferred_temporality=exporter._preferred_temporality,
                         preferred_aggregation=exporter._preferred_aggregation)
        self.exporter, self.err = exporter, err
        self.failed: bool | None = None  # None before the first push
        self.stopping = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: object) -> MetricExportResult:
        if self.stopping and self.failed:
            # Told to stop while the endpoint fails: the last push would wait out its
            # timeout again, past a container's grace period. The last failure was said.
            return MetricExportResult.FAILURE
        try:
            result = self.exporter.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as exc:  # the SDK's thread would log a traceback: one line instead
            result = MetricExportResult.FAILURE
            why = f"{type(exc).__name__}: {exc}"
        else:
            why = "the endpoint refused it or did not answer"
        failed = result is not MetricExportResult.SUCCESS
        if failed != self.failed and (failed or self.failed) and self.err is not None:
            where = _endpoint()
            self.err.write(f"watchdog-core: export --otlp: cannot push to {where}: {why}\n"
                           if failed else f"watchdog-core: export --otlp: pushing to "
                           f"{where} again\n")
            self.err.flush()
        self.failed = failed
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis)


def _endpoint() -> str:
    env = os.environ
    return (env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            or (env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
                + "/v1/metrics"))


def _exporter() -> MetricExporter:
    for variable in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = os.environ.get(variable)
        if protocol:
            break
    if protocol and protocol != "http/protobuf":
        raise UsageError(f"{variable}={protocol}: export --otlp speaks http/protobuf only "
                         "(point it at the Collector's port 4318)")
    try:  # the SDK without this exporter (only the gRPC one, say)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
    except ImportError as exc:
        raise UsageError(f"--otlp needs the OTLP/HTTP exporter ({exc}): pip install "
                         "'watchdog-core[otel]'") from None
    return OTLPMetricExporter()


def push(read: Callable[[], list[Sample]], once: bool, err: TextIO | None) -> int:
    """Push every OTEL_METRIC_EXPORT_INTERVAL until SIGTERM or Ctrl-C (then once more),
    or once with ``once``; 1 when the last push failed."""
    # The SDK logs each failed push with a traceback; _Reporting says it in one line.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL + 1)
    exporter = _Reporting(_exporter(), err)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf
                                           if once else None)
    provider = meter_provider([reader], read)
    if not once:
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            stop.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        exporter.stopping = True
    else:
        provider.force_flush()  # the only collection and push: no ticker runs with inf
    provider.shutdown()  # (after the loop: the last collection and push)
    return 1 if exporter.failed else 0

