"""`watchdog-core export`: real hosts, the scrape parsed by prometheus_client's parsers."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, host_env, run_cli

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import (  # noqa: E402
    text_string_to_metric_families as parse_prometheus,
)

# A host whose watchdog samples once and then not for a minute, so the status it prints
# is the one the export reads. It says `ready {status}` and lives until stdin closes.
HOST = """
import json, sys, time
import watchdog_core
limit = int(sys.argv[3]) or None
if len(sys.argv) > 4 and sys.argv[4].startswith("comm="):
    with open("/proc/self/comm", "w") as f:  # the name `ps` shows, as setproctitle sets it
        f.write(sys.argv[4][len("comm="):])
wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], session_id=sys.argv[2],
                                  interval=60.0, memory_limit=limit)
while wd.status() is None:
    time.sleep(0.02)
print("ready " + json.dumps({"status": wd.status(), "shm": wd.shm_name}), flush=True)
sys.stdin.readline()
"""

SECRET = "--api-token=hunter2-s3cr3t"

GAUGES = {
    "watchdog_core_rss_bytes": "bytes",
    "watchdog_core_limit_bytes": "bytes",
    "watchdog_core_limit_used_ratio": "ratio",
    "watchdog_core_level": "",
    "watchdog_core_growth_bytes_per_second": "bytes_per_second",
    "watchdog_core_time_to_limit_seconds": "seconds",
    "watchdog_core_last_sample_age_seconds": "seconds",
}
COUNTERS = ("watchdog_core_samples", "watchdog_core_dumps")
LABELS = {"session", "program", "limit_source"}
TRIGGERS = ("hard", "critical", "unresponsive", "manual", "descendant-died")


class Hosts:
    """Real host processes, each with a known session id; ``close()`` ends them all
    (stdin closed: a clean exit) and waits for their watchdogs (stderr's EOF)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[str]] = []
        self.info: dict[str, dict[str, object]] = {}

    def start(self, session: str, limit: int = 0, *extra: str,
              env: dict[str, str] | None = None) -> None:
        env = host_env(**(env or {}))
        proc = subprocess.Popen(
            [sys.executable, "-c", HOST, str(self.directory), session, str(limit), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        self.procs.append(proc)
        self.info[session] = {"proc": proc}

    def wait_ready(self) -> None:
        for session, info in self.info.items():
            proc = info["proc"]
            assert isinstance(proc, subprocess.Popen)
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.startswith("ready "), f"{session} did not start: {line!r}"
            info.update(json.loads(line[len("ready "):]))
            info["pid"] = proc.pid

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
                proc.stdin = None  # closed: communicate() must not flush it
        for proc in self.procs:
            try:
                proc.communicate(timeout=30)
            except (subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.communicate(timeout=30)
        shms = [str(info.get("shm")) for info in self.info.values()]
        left = [name for name in shms if Path("/dev/shm", name).exists()]
        assert not left, f"segments left behind: {left}"


@pytest.fixture
def hosts(tmp_path: Path):  # type: ignore[no-untyped-def]
    started = Hosts(tmp_path / "diag")
    try:
        yield started
    finally:
        started.close()


def _ours(families: list[Any], prefix: str) -> dict[str, Any]:
    """The families by name, each with only the samples of our sessions (other tests'
    hosts may be live on this machine at the same time)."""
    out = {}
    for family in families:
        family.samples = [s for s in family.samples
                          if s.labels.get("session", "").startswith(prefix)]
        out[family.name] = family
    return out


def _value(families: dict[str, Any], name: str, session: str) -> float:
    """The one sample of ``name`` for ``session``."""
    (found,) = [s.value for s in families[name].samples if s.labels["session"] == session]
    return float(found)


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


def test_export_both_formats_match_the_hosts(hosts: Hosts) -> None:
    prefix = f"exp{os.getpid()}-"
    hosts.start(prefix + "a", 1 << 30)  # a configured limit
    hosts.start(prefix + "b", 0)  # the machine's
    hosts.start(prefix + "c", 512 << 20, SECRET)  # a secret-looking argv
    hosts.wait_ready()

    for option, parse in (("--prometheus", parse_prometheus),
                          ("--openmetrics", parse_openmetrics)):
        done = run_cli("export", option)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert "hunter2" not in done.stdout and "api-token" not in done.stdout
        if option == "--openmetrics":
            assert done.stdout.endswith("# EOF\n")
        else:
            assert "# EOF" not in done.stdout
        families = _ours(list(parse(done.stdout)), prefix)
        assert set(families) == set(GAUGES) | set(COUNTERS)
        for name, unit in GAUGES.items():
            assert families[name].type == "gauge"
            if unit:
                assert name.endswith("_" + unit)
            if option == "--openmetrics":
                assert families[name].unit == unit
        for name in COUNTERS:
            assert families[name].type == "counter"
            assert all(s.name == name + "_total"
                       for s in families[name].samples)

        v = functools.partial(_value, families)
        for name, family in families.items():
            series = [tuple(sorted(s.labels.items())) for s in family.samples]
            assert len(series) == len(set(series)), f"{name}: a series twice"
            for s in family.samples:
                assert set(s.labels) == LABELS | ({"trigger"} if name.endswith("dumps")
                                                  else set())

        for session, info in hosts.info.items():
            status = info["status"]
            assert isinstance(status, dict)
            (labels,) = [s.labels for s in families["watchdog_core_rss_bytes"].samples
                         if s.labels["session"] == session]
            assert labels["program"] == _comm(int(info["pid"]))
            assert labels["limit_source"] == status["limitSource"]
            assert v("watchdog_core_rss_bytes", session) == status["rss"]
            assert v("watchdog_core_limit_bytes", session) == status["heapLimit"]
            assert v("watchdog_core_limit_used_ratio", session) == pytest.approx(
                status["ratio"])
            assert v("watchdog_core_level", session) == 0  # normal
            assert v("watchdog_core_growth_bytes_per_second", session) == pytest.approx(
                status["growthBytesPerSecond"])
            assert v("watchdog_core_samples", session) == status["samples"]
            dumps = {s.labels["trigger"]: s.value for s in families["watchdog_core_dumps"].samples
                     if s.labels["session"] == session}
            assert dumps == dict.fromkeys(TRIGGERS, 0)
            age = v("watchdog_core_last_sample_age_seconds", session)
            assert 0 <= age < 120
            to_limit = [s for s in families["watchdog_core_time_to_limit_seconds"].samples
                        if s.labels["session"] == session]
            assert len(to_limit) == (status["secondsToLimit"] is not None)
        configured = {s.labels["session"]: s.labels["limit_source"]
                      for s in families["watchdog_core_level"].samples}
        assert configured[prefix + "a"] == configured[prefix + "c"] == "configured"
        assert v("watchdog_core_limit_bytes", prefix + "a") == 1 << 30


def test_a_program_name_with_quotes_is_escaped(hosts: Hosts) -> None:
    prefix = f"expq{os.getpid()}-"
    name = 'a"b\\c\nd'  # quote, backslash, newline: what the format escapes
    hosts.start(prefix + "q", 0, "comm=" + name)
    hosts.wait_ready()
    for option, parse in (("--prometheus", parse_prometheus),
                          ("--openmetrics", parse_openmetrics)):
        done = run_cli("export", option)
        assert done.returncode == 0, done.stderr
        families = _ours(list(parse(done.stdout)), prefix)
        (sample,) = families["watchdog_core_level"].samples
        assert sample.labels["program"] == name


def test_no_session_of_ours_still_gives_every_family() -> None:
    for option, parse in (("--prometheus", parse_prometheus),
                          ("--openmetrics", parse_openmetrics)):
        done = run_cli("export", option)
        assert done.returncode == 0, done.stderr
        names = {f.name for f in parse(done.stdout)}
        assert names == set(GAUGES) | set(COUNTERS)


@pytest.mark.parametrize("argv", [("export",), ("export", "--prometheus", "--openmetrics"),
                                  ("export", "--json")])
def test_bad_options_exit_2_with_one_line(argv: tuple[str, ...]) -> None:
    done = run_cli(*argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("watchdog-core: error: ")


def test_64_sessions_are_64_series_per_gauge(hosts: Hosts, tmp_path: Path) -> None:
    """In one scrape, and in the 64 files of a textfile folder read together as
    node_exporter reads them: one series per session (and trigger), bounded labels."""
    prefix = f"exp64-{os.getpid()}-"
    folder = tmp_path / "textfile"
    folder.mkdir()
    for i in range(64):
        hosts.start(f"{prefix}{i:02d}", 256 << 20,
                    env={"WATCHDOG_CORE_PROMETHEUS_DIR": str(folder)})
    hosts.wait_ready()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.prom"))) < 64:  # written at each watchdog's first sample
        assert time.monotonic() < deadline, "not every watchdog wrote its file"
        time.sleep(0.05)
    merged: dict[str, list[Any]] = {}
    for path in sorted(folder.glob("*.prom")):
        for family in parse_prometheus(path.read_text()):
            merged.setdefault(family.name, []).extend(family.samples)
    assert set(merged) == (set(GAUGES) | set(COUNTERS)) - {
        "watchdog_core_last_sample_age_seconds"}  # node_exporter gives each file's mtime
    for name, samples in merged.items():
        keys = [tuple(sorted(s.labels.items())) for s in samples]
        assert len(keys) == len(set(keys)), f"{name}: a series twice"
        assert {k for s in samples for k in s.labels} <= LABELS | {"trigger"}
    assert len(merged["watchdog_core_level"]) == 64
    assert len(merged["watchdog_core_dumps"]) == 64 * len(TRIGGERS)
    done = run_cli("export", "--openmetrics")
    assert done.returncode == 0, done.stderr
    families = _ours(list(parse_openmetrics(done.stdout)), prefix)
    for name in GAUGES:
        if name == "watchdog_core_time_to_limit_seconds":
            continue  # only the growing ones
        series = [s.labels["session"] for s in families[name].samples]
        assert sorted(series) == [f"{prefix}{i:02d}" for i in range(64)], name
    assert len(families["watchdog_core_samples"].samples) == 64
    assert len(families["watchdog_core_dumps"].samples) == 64 * len(TRIGGERS)


# -- export --otlp ------------------------------------------------------------------------

OTEL_NAMES = {  # instrument -> (the Prometheus name the Collector gives it, unit)
    "watchdog_core.rss": ("watchdog_core_rss_bytes", "By"),
    "watchdog_core.limit": ("watchdog_core_limit_bytes", "By"),
    "watchdog_core.limit_used": ("watchdog_core_limit_used_ratio", "1"),
    "watchdog_core.level": ("watchdog_core_level", "{level}"),
    "watchdog_core.growth": ("watchdog_core_growth_bytes_per_second", "By/s"),
    "watchdog_core.time_to_limit": ("watchdog_core_time_to_limit_seconds", "s"),
    "watchdog_core.last_sample_age": ("watchdog_core_last_sample_age_seconds", "s"),
    "watchdog_core.samples": ("watchdog_core_samples", "{sample}"),
    "watchdog_core.dumps": ("watchdog_core_dumps", "{dump}"),
}


def test_otel_instruments_through_the_sdks_in_memory_reader(hosts: Hosts) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum

    from watchdog_core.cli import _otel, export

    prefix = f"otel{os.getpid()}-"
    hosts.start(prefix + "a", 1 << 30)
    hosts.start(prefix + "b", 0, SECRET)
    hosts.wait_ready()
    reader = InMemoryMetricReader()
    provider = _otel.meter_provider([reader], export.live_sessions)
    try:
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    (resource_metrics,) = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "watchdog-core"
    assert resource_metrics.resource.attributes["host.name"]
    (scope,) = resource_metrics.scope_metrics
    metrics = {m.name: m for m in scope.metrics}
    # An instrument with no point is left out by the SDK: time to limit, while no
    # session grows.
    assert set(OTEL_NAMES) - {"watchdog_core.time_to_limit"} <= set(metrics) <= set(OTEL_NAMES)
    for name, (prometheus_name, unit) in OTEL_NAMES.items():
        if name not in metrics:
            continue
        metric = metrics[name]
        assert metric.unit == unit
        # The Collector's translation: "." -> "_", and the unit's suffix where it has one.
        suffix = {"By": "_bytes", "1": "_ratio", "By/s": "_bytes_per_second",
                  "s": "_seconds"}.get(unit, "")
        assert name.replace(".", "_") + suffix == prometheus_name
        counter = prometheus_name in ("watchdog_core_samples", "watchdog_core_dumps")
        assert isinstance(metric.data, Sum if counter else Gauge), name
        if counter:
            assert metric.data.is_monotonic
    assert "hunter2" not in repr(data.to_json())

    def points(name: str, session: str) -> list[Any]:
        return [p for p in metrics[name].data.data_points
                if p.attributes["session"] == session]

    for session, info in hosts.info.items():
        status = info["status"]
        assert isinstance(status, dict)
        (rss,) = points("watchdog_core.rss", session)
        assert rss.value == status["rss"]
        assert set(rss.attributes) == LABELS
        assert rss.attributes["program"] == _comm(int(info["pid"]))
        assert rss.attributes["limit_source"] == status["limitSource"]
        (level,) = points("watchdog_core.level", session)
        assert level.value == 0
        dumps = {p.attributes["trigger"]: p.value for p in points("watchdog_core.dumps",
                                                                  session)}
        assert dumps == dict.fromkeys(TRIGGERS, 0)
    (limit,) = points("watchdog_core.limit", prefix + "a")
    assert limit.value == 1 << 30


class _Collector:
    """An OTLP/HTTP receiver on the loopback: it keeps every ExportMetricsServiceRequest
    posted to /v1/metrics, decoded with the OpenTelemetry protobuf classes."""

    def __init__(self) -> None:
        import http.server
        import threading

        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        received = self.requests = []  # type: ignore[var-annotated]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                received.append((self.path, request))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(
                    metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_export_otlp_once_pushes_to_a_real_endpoint(hosts: Hosts) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    prefix = f"otlp{os.getpid()}-"
    hosts.start(prefix + "a", 1 << 30)
    hosts.wait_ready()
    collector = _Collector()
    try:
        done = run_cli("export", "--otlp", "--once",
                       env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                            "OTEL_SERVICE_NAME": "fleet-a"})
    finally:
        collector.close()
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""
    (path, request), = collector.requests
    assert path == "/v1/metrics"
    (resource_metrics,) = request.resource_metrics
    attributes = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
    assert attributes["service.name"] == "fleet-a"  # the standard variable wins
    metrics = {m.name: m for s in resource_metrics.scope_metrics for m in s.metrics}
    assert set(OTEL_NAMES) - {"watchdog_core.time_to_limit"} <= set(metrics) <= set(OTEL_NAMES)
    (point,) = [p for p in metrics["watchdog_core.limit"].gauge.data_points
                if any(a.key == "session" and a.value.string_value == prefix + "a"
                       for a in p.attributes)]
    assert point.as_int == 1 << 30


def test_export_otlp_to_a_dead_endpoint_is_one_line_and_exit_1(hosts: Hosts) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import socket

    hosts.start(f"otlpdead{os.getpid()}", 0)
    hosts.wait_ready()
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        done = run_cli("export", "--otlp", "--once",
                       env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                            "OTEL_EXPORTER_OTLP_TIMEOUT": "2"})
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"watchdog-core: export --otlp: cannot push to "
                                  f"http://127.0.0.1:{port}/v1/metrics")


@pytest.mark.parametrize(("argv", "env", "says"), [
    (("export", "--prometheus", "--once"), {}, "--once goes with --otlp"),
    (("export", "--otlp"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf only"),
    (("export", "--otlp"), {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/json"),
])
def test_otlp_bad_input_exits_2(argv: tuple[str, ...], env: dict[str, str], says: str) -> None:
    done = run_cli(*argv, env=env)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert says in done.stderr


@pytest.mark.parametrize("missing", ["sdk", "exporter"])
def test_otlp_without_the_extra_says_how_to_get_it(tmp_path: Path, missing: str) -> None:
    """The SDK missing (a package shadowing it that cannot be imported), or only its
    OTLP/HTTP exporter (an empty package in its place): exit 2, one line naming the
    extra."""
    if missing == "sdk":
        fake = tmp_path / "opentelemetry"
        fake.mkdir()
        (fake / "__init__.py").write_text("raise ImportError('not installed here')\n")
    else:
        fake = tmp_path / "opentelemetry" / "exporter"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("")
    done = run_cli("export", "--otlp", "--once",
                   env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "pip install 'watchdog-core[otel]'" in done.stderr


def test_export_otlp_pushes_at_its_interval_until_sigterm(hosts: Hosts) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    hosts.start(f"otlploop{os.getpid()}", 0)
    hosts.wait_ready()
    collector = _Collector()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
               OTEL_METRIC_EXPORT_INTERVAL="100")
    proc = subprocess.Popen([sys.executable, "-m", "watchdog_core", "export", "--otlp"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(collector.requests) < 3:
            assert time.monotonic() < deadline, "no pushes at the interval"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        collector.close()
    assert proc.returncode == 0, err
    assert out == "" and err == ""
