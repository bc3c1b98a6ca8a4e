"""read-ring on saved, live, and hostile inputs (docs/cli.md); the CLI never shows a traceback."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from watchdog_core import _ring, _writer

READ_RING = [sys.executable, str(ROOT / "tools" / "read_ring.py")]
CLI = [sys.executable, "-m", "watchdog_core"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                          check=False)


@pytest.fixture(scope="module")
def saved_ring(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A .ring saved by a real watchdog after a real SIGKILL."""
    from tests.conftest import Host

    directory = tmp_path_factory.mktemp("ring") / "diag"
    host = Host(directory, "--stats", json.dumps({"turns": 7, "bytes": 123}),
                "--label", "tool:grep")
    info = host.wait_ready()
    for i in range(30):
        host.send("record " + json.dumps({"turns": 8 + i}))
        assert host.proc.stdout is not None
        host.proc.stdout.readline()
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    (ring,) = directory.glob("*.ring")
    return ring


@pytest.mark.parametrize("command", [READ_RING, [*CLI, "read-ring"]])
def test_saved_ring_text_and_json(saved_ring: Path, command: list[str]) -> None:
    text = run([*command, str(saved_ring), "--last", "5"])
    assert text.returncode == 0, text.stderr
    assert "tool:grep" in text.stdout
    assert text.stdout.count("  #") == 5
    assert "turns=37" in text.stdout  # the newest value
    as_json = run([*command, str(saved_ring), "--json", "--last", "3"])
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    assert doc["header"]["lastLabel"] == "tool:grep"
    assert [s["values"]["turns"] for s in doc["slots"]] == [35, 36, 37]
    assert doc["slots"][-1]["values"]["bytes"] == 123  # carried forward
    assert doc["torn"] == 0


def test_live_ring_by_session_id_and_by_name(start_host) -> None:
    host = start_host("--session", "live-one", "--stats", json.dumps({"x": 1}))
    info = host.wait_ready()
    by_id = run([*CLI, "read-ring", "live-one", "--json"])
    assert by_id.returncode == 0, by_id.stderr
    assert json.loads(by_id.stdout)["slots"][-1]["values"] == {"x": 1}
    by_name = run([*READ_RING, str(info["shm"])])
    assert by_name.returncode == 0 and "x=1" in by_name.stdout
    host.send("stop")
    host.finish()


def test_two_live_rings_for_one_session_id_is_ambiguous(start_host) -> None:
    hosts = [start_host("--session", "twin") for _ in range(2)]
    for h in hosts:
        h.wait_ready()
    result = run([*CLI, "read-ring", "twin"])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "2 live rings" in result.stderr
    for h in hosts:
        h.send("stop")
        h.finish()


def _valid_image() -> bytes:
    writer = _writer.RingWriter(None, 16)
    writer.init_header(session_id="s", host_pid=1, host_start_ticks=0, created_unix_ns=0,
                       created_mono_ns=0, interval=0.25, boot_id="", diagnostics_dir="/d",
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    writer.add_name("a")
    writer.commit(_ring.KIND_RECORD)
    return bytes(writer.buf)


def _wrong_version() -> bytes:
    image = bytearray(_valid_image())
    struct.pack_into("<I", image, 8, 99)
    return bytes(image)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated"),
        (b"garbage" * 100, "bad magic"),
        (os.urandom(20000), "bad magic"),
        (_ring.MAGIC + b"\0" * 100, "truncated"),
        (None, "truncated"),  # a valid ring cut short
        (_wrong_version(), "unsupported ring version 99"),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path: Path, content: bytes | None,
                                        message: str) -> None:
    path = tmp_path / "bad.ring"
    path.write_bytes(_valid_image()[:9000] if content is None else content)
    for command in (READ_RING, [*CLI, "read-ring"]):
        result = run([*command, str(path)])
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["no-such-session", "/no/such/file.ring", "../etc",
                                    "watchdog_core-../x-1", "a/b"])
def test_missing_and_unsafe_targets_exit_2(target: str) -> None:
    result = run([*CLI, "read-ring", target])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_usage_errors_exit_2_with_one_line() -> None:
    for argv in (["read-ring"], ["nope"], ["read-ring", "x", "--last", "-1"],
                 ["read-ring", "x", "--last", "many"]):
        result = run([*CLI, *argv])
        assert result.returncode == 2, argv
        assert result.stderr.count("\n") == 1, (argv, result.stderr)


@pytest.mark.parametrize("command", ["read-ring", "show"])
def test_endless_or_blocking_inputs_exit_2(tmp_path: Path, command: str) -> None:
    """/dev/zero never ends and a FIFO with no writer never answers: refused at once."""
    fifo = tmp_path / "fifo.ring"
    os.mkfifo(fifo)
    for target in ("/dev/zero", str(fifo), str(tmp_path)):
        result = run([*CLI, command, target])
        assert result.returncode == 2, (target, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "not a regular file" in result.stderr
