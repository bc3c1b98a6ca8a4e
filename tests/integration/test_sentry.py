"""Reports to Sentry through the real sentry-sdk, received by an ingest endpoint on the
loopback that these tests run: real hosts, real deaths, real envelopes."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import host_env, run_cli

pytest.importorskip("sentry_sdk")

SECRET = "--api-key=sk-live-SECRET-in-argv"


class Ingest:
    """Accepts envelopes at /api/<project>/envelope/ and keeps them, parsed: the event
    and the attachments of each."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        received = self.envelopes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":  # the host's own SDK
                    import gzip

                    body = gzip.decompress(body)
                received.append({"path": self.path, "auth": self.headers.get("X-Sentry-Auth"),
                                 "raw": body, **_parse_envelope(body)})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.dsn = f"http://publickey@127.0.0.1:{port}/42"

    def events(self, logger: str | None = "watchdog-core") -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["event"] is not None
                and (logger is None or e["event"].get("logger") == logger)]

    def wait(self, n: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _parse_envelope(body: bytes) -> dict[str, Any]:
    """An envelope: a header line, then items, each a header line and a payload of its
    ``length`` (or up to the next newline)."""
    header_line, _, rest = body.partition(b"\n")
    out: dict[str, Any] = {"header": json.loads(header_line), "event": None, "attachments": {}}
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item = json.loads(item_line)
        if "length" in item:
            payload, rest = rest[: item["length"]], rest[item["length"] + 1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        if item.get("type") == "event":
            out["event"] = json.loads(payload)
        elif item.get("type") == "attachment":
            out["attachments"][item["filename"]] = payload
    return out


@pytest.fixture
def ingest():  # type: ignore[no-untyped-def]
    server = Ingest()
    yield server
    server.close()


def _env(ingest: Ingest, **more: str) -> dict[str, str]:
    return {"SENTRY_DSN": ingest.dsn, "WATCHDOG_CORE_SENTRY": "1", **more}


def test_a_sigkilled_host_is_one_fatal_event_with_its_postmortem(start_host, diag_dir: Path,
                                                                 ingest: Ingest) -> None:
    host = start_host("--label", "tool:shell", SECRET, env=_env(ingest))
    host.wait_ready()
    host.send("kill")
    host.finish()
    (postmortem,) = sorted(diag_dir.glob("*.json"))
    (envelope,) = ingest.wait()
    assert envelope["path"] == "/api/42/envelope/"
    assert "sentry_key=publickey" in envelope["auth"]
    event = envelope["event"]
    assert event["level"] == "fatal"
    assert event["message"].startswith("Killed by SIGKILL at ")
    assert event["message"].endswith(" while `tool:shell`")
    assert event["tags"]["exit.kind"] == "killed"
    assert event["tags"]["exit.signal"] == "SIGKILL"
    assert event["tags"]["exit.confidence"] == "certain"
    assert event["tags"]["trigger"] == "host-died"
    assert event["fingerprint"][:4] == ["watchdog-core", "host-died", "killed", "SIGKILL"]
    assert event["contexts"]["memory"]["rss"] > 0
    # The postmortem is attached as it is on disk: it was complete before the send.
    assert envelope["attachments"][postmortem.name] == postmortem.read_bytes()
    # Nothing of the machine, the modules or the argv beyond what the dump holds.
    assert "server_name" not in event and "modules" not in event
    assert b"sk-live-SECRET" not in envelope["raw"]
    assert "sent to Sentry as event" in host.stderr


def test_a_real_oom_kill_names_the_limit(start_host, ingest: Ingest, memory_cgroup) -> None:
    host = start_host("--label", "tool:ingest", cgroup=memory_cgroup, env=_env(ingest))
    host.wait_ready()
    host.send("balloon")
    assert host.finish() == -signal.SIGKILL
    (envelope,) = ingest.wait()
    event = envelope["event"]
    assert event["message"].startswith("OOM-killed at "), event["message"]
    assert "of a 200.0 MiB cgroup limit while `tool:ingest`" in event["message"]
    assert event["tags"]["exit.kind"] == "oom-killed"
    assert event["tags"]["limit.source"].startswith("cgroup-")


def test_a_dead_endpoint_costs_the_postmortem_nothing(start_host, diag_dir: Path) -> None:
    import socket

    with socket.socket() as s:  # bound, never listening: connection refused
        s.bind(("127.0.0.1", 0))
        dsn = f"http://key@127.0.0.1:{s.getsockname()[1]}/1"
        host = start_host(env={"SENTRY_DSN": dsn, "WATCHDOG_CORE_SENTRY": "1"})
        host.wait_ready()
        host.send("kill")
        host.finish()
    (postmortem,) = diag_dir.glob("*.json")
    assert json.loads(postmortem.read_text())["collectionComplete"] is True
    lines = [line for line in host.stderr.splitlines() if "Sentry" in line]
    assert len(lines) == 1 and "cannot send to Sentry (127.0.0.1)" in lines[0], host.stderr
    assert "key@" not in host.stderr


def test_a_clean_exit_and_a_bad_dsn(start_host, ingest: Ingest) -> None:
    host = start_host(env=_env(ingest))
    host.wait_ready()
    host.send("exit0")
    assert host.finish() == 0
    host = start_host(env={"SENTRY_DSN": "not a dsn", "WATCHDOG_CORE_SENTRY": "1"})
    host.wait_ready()
    host.send("kill")
    host.finish()
    assert ingest.envelopes == []
    assert "no Sentry reports: SENTRY_DSN must be a Sentry DSN" in host.stderr
    assert "not a dsn" not in host.stderr


def test_bad_arguments_are_value_errors() -> None:
    from watchdog_core import start_watchdog

    for bad in ("nope", "https://o0.ingest.sentry.io/1", 42):
        with pytest.raises(ValueError, match="sentry_dsn"):
            start_watchdog(sentry_dsn=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sentry_reports"):
        start_watchdog(sentry_reports="yes")  # type: ignore[arg-type]


HOST_WITH_SDK = """
import os, sys, time
import sentry_sdk
import watchdog_core
mode = sys.argv[2]
if mode in ("sdk-kill", "sdk-raise"):
    sentry_sdk.init(dsn=sys.argv[3], release="app@1.2.3", environment="staging",
                    default_integrations=True)
wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], interval=0.05,
                                  sentry_reports=mode != "later")
if mode == "later":
    sentry_sdk.init(dsn=sys.argv[3], release="app@9", environment="prod")
    assert wd.report_to_sentry()
while wd.status() is None:
    time.sleep(0.01)
time.sleep(0.2)
if mode.endswith("raise"):
    raise ValueError("a message that must stay in the host")
os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("mode", ["sdk-kill", "later", "sdk-raise", "raise"])
def test_the_hosts_own_sdk(tmp_path: Path, ingest: Ingest, mode: str) -> None:
    """The host's client is copied (at start, or later when told); an uncaught exception
    is the host SDK's to send, and ours only when the host has none."""
    env = host_env()
    env.pop("SENTRY_DSN", None)
    if mode == "raise":
        env.update(_env(ingest))
    done = subprocess.run([sys.executable, "-c", HOST_WITH_SDK, str(tmp_path), mode,
                           ingest.dsn], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    ours = ingest.wait(1 if mode != "sdk-raise" else 0, timeout=5 if mode == "sdk-raise"
                       else 30)
    if mode == "sdk-raise":
        assert ours == [], done.stderr  # the host's SDK sent it; sending it twice is noise
        assert ingest.events(logger=None), "the host's own SDK sent nothing"
        return
    (envelope,) = ours
    event = envelope["event"]
    if mode == "raise":
        assert event["message"].startswith("Died of an uncaught ValueError")
        assert event["exception"]["values"][0]["stacktrace"]["frames"][-1]["function"]
        assert b"must stay in the host" not in envelope["raw"]
        return
    assert event["tags"]["exit.signal"] == "SIGKILL", done.stderr
    assert (event["release"], event["environment"]) == (
        ("app@1.2.3", "staging") if mode == "sdk-kill" else ("app@9", "prod"))


def test_the_host_never_imports_the_sdk_for_us(ingest: Ingest) -> None:
    code = ("import sys, watchdog_core\n"
            "wd = watchdog_core.start_watchdog(sentry_reports=True)\n"
            "print('sentry_sdk' in sys.modules)\n"
            "wd.stop()\n")
    env = host_env(SENTRY_DSN=ingest.dsn)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_run_reports_its_childs_death(tmp_path: Path, ingest: Ingest) -> None:
    done = run_cli("run", "--dir", str(tmp_path / "d"), "--sentry-dsn", ingest.dsn, "--",
                   "sh", "-c", "sleep 0.3; kill -9 $$")
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    (envelope,) = ingest.wait()
    assert envelope["event"]["tags"]["exit.signal"] == "SIGKILL"
    assert envelope["event"]["tags"]["program"] == "sh"


def test_a_hang_is_an_error_event_while_the_host_lives(start_host, ingest: Ingest) -> None:
    host = start_host("--hang-after", "0.5", "--label", "tool:stuck", env=_env(ingest))
    host.wait_ready()
    assert host.ask("hang 3") == "woke"  # the GIL held in C for 3 s
    (envelope,) = ingest.wait()
    host.send("stop")
    assert host.finish() == 0
    event = envelope["event"]
    assert event["level"] == "error"
    assert event["tags"]["trigger"] == "unresponsive"
    assert event["message"].startswith("Unresponsive (gil-held) at "), event["message"]
    assert len(ingest.events()) == 1  # the recovery and the clean stop send nothing


def test_pressure_dumps_only_when_asked(tmp_path: Path, ingest: Ingest) -> None:
    code = ("import sys, watchdog_core\n"
            "wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], interval=0.05,\n"
            "    memory_limit='160MiB', sentry_dsn=sys.argv[2],\n"
            "    sentry_pressure=sys.argv[3] == '1')\n"
            "hold = []\n"
            "while wd.level.label != 'critical':\n"
            "    hold.append(bytearray(b'x') * (4 << 20))\n"
            "    import time; time.sleep(0.02)\n"
            "import time; time.sleep(1)\n"
            "wd.stop()\n")
    env = host_env()
    for asked, expected in (("0", 0), ("1", 2)):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / asked), ingest.dsn, asked],
                       env=env, capture_output=True, text=True, timeout=120, check=True)
        events = ingest.wait(expected, timeout=10 if expected else 2)
        assert sorted(e["event"]["tags"]["trigger"] for e in events) == (
            ["critical", "hard"] if expected else []), events


def test_a_sigterm_is_a_stop_not_an_event(start_host, ingest: Ingest) -> None:
    """A deploy stops services with SIGTERM: a fatal event each time would be noise."""
    host = start_host(env=_env(ingest))
    info = host.wait_ready()
    os.kill(int(info["pid"]), signal.SIGTERM)
    host.finish()
    assert "postmortem written" in host.stderr
    assert ingest.wait(1, timeout=2) == []


def test_a_segfault_shows_the_crashed_threads_frames(start_host, ingest: Ingest) -> None:
    """faulthandler lists every thread, ours (the heartbeat) among them: the event's
    frames are those of the thread that crashed."""
    host = start_host(env=_env(ingest))
    host.wait_ready()
    host.send("segv")
    host.finish()
    (envelope,) = ingest.wait()
    (exception,) = envelope["event"]["exception"]["values"]
    assert exception["type"] == "SIGSEGV"
    frames = exception["stacktrace"]["frames"]
    functions = [f["function"] for f in frames]
    assert "_heartbeat" not in functions, functions
    assert frames[-1]["function"] == "string_at", functions  # innermost last
    assert any(f["filename"].endswith("host_program.py") and f["in_app"] for f in frames)
    assert not any(f["in_app"] for f in frames if "ctypes" in f["filename"])


SCRIPTED = """
import os, signal, sys, time
import watchdog_core
directory, dsn, other, case = sys.argv[1:5]
if case == "sigpipe":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as many command-line tools do
wd = watchdog_core.start_watchdog(diagnostics_dir=directory, interval=0.05,
                                  memory_limit="160MiB", sentry_dsn=dsn,
                                  sentry_pressure=True, restart=False,
                                  extras=("stacks",) if case == "extras" else ())
while wd.status() is None:
    time.sleep(0.01)
if case == "sigpipe":
    os.kill(wd._process.pid, signal.SIGKILL)
    time.sleep(0.3)
    print("told" if wd.report_to_sentry(other) else "not told", flush=True)
    sys.exit(0)
hold = []
while wd.level.label != "critical":
    hold.append(bytearray(b"x") * (4 << 20))
    time.sleep(0.02)
time.sleep(3)  # the pressure reports go (and the extras come) meanwhile
if case == "moved":
    assert wd.report_to_sentry(other)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)
wd.stop()
"""


def _scripted(tmp_path: Path, ingest: Ingest, case: str) -> subprocess.CompletedProcess[str]:
    env = host_env()
    other = ingest.dsn.rsplit("/", 1)[0] + "/43"
    return subprocess.run([sys.executable, "-c", SCRIPTED, str(tmp_path), ingest.dsn, other,
                           case], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_told_later_the_watchdog_sends_where_it_was_told(tmp_path: Path,
                                                         ingest: Ingest) -> None:
    done = _scripted(tmp_path, ingest, "moved")
    assert done.returncode == -signal.SIGKILL, done.stderr
    events = ingest.wait(3)
    paths = {e["event"]["tags"]["trigger"]: e["path"] for e in events}
    assert paths == {"hard": "/api/42/envelope/", "critical": "/api/42/envelope/",
                     "host-died": "/api/43/envelope/"}, done.stderr


def test_the_critical_event_waits_for_the_stacks(tmp_path: Path, ingest: Ingest) -> None:
    done = _scripted(tmp_path, ingest, "extras")
    assert done.returncode == 0, done.stderr
    (critical,) = [e for e in ingest.wait(2) if e["event"]["tags"]["trigger"] == "critical"]
    names = sorted(critical["attachments"])
    assert any(n.endswith(".stacks.txt") for n in names), names


def test_telling_a_dead_watchdog_never_kills_the_host(tmp_path: Path, ingest: Ingest) -> None:
    done = _scripted(tmp_path, ingest, "sigpipe")
    assert done.returncode == 0, done.stderr  # 141 was SIGPIPE
    assert done.stdout.strip() == "not told"
