"""The watchdog writes its dumps with the stdlib and never loads pydantic, and what it
writes is exactly the file the schema describes (docs/performance.md,
docs/diagnostics.md)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from watchdog_core._diagnostics import load


def _keys_agree(written: object, model: object, where: str = "") -> None:
    """Every key the schema has is in the file and nothing else, all the way down
    (a timeline point's ``mark`` is left out where there is none)."""
    if isinstance(model, dict):
        assert isinstance(written, dict), where
        expected = set(model)
        if where.endswith(".timeline[]") and model.get("mark") is None:
            expected.discard("mark")
        if where.endswith(".session"):
            return  # the user's own stat names
        assert set(written) == expected, (where, set(written) ^ expected)
        for key in written:
            _keys_agree(written[key], model[key], f"{where}.{key}")
    elif isinstance(model, list):
        assert isinstance(written, list) and len(written) == len(model), where
        for a, b in zip(written, model, strict=True):
            _keys_agree(a, b, f"{where}[]")


def _agrees_with_the_schema(path: Path) -> dict[str, object]:
    raw = path.read_bytes()
    model = load(raw)  # pydantic validates every field
    written = json.loads(raw)
    _keys_agree(written, json.loads(model.to_json()))
    return written  # type: ignore[no-any-return]


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_live_dumps_and_the_postmortem_are_the_schemas_file(start_host, diag_dir) -> None:
    host = start_host("--stats", json.dumps({"turns": 3, "loss": 0.5}), "--label",
                      "tool:shell", "--idle-after", "0.3", "--interval", "0.05")
    info = host.wait_ready()
    assert host.ask("dump").endswith(".json")
    deadline = time.monotonic() + 30
    while len(list(diag_dir.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the idle spell's unresponsive dump
    watchdog = int(info["watchdog_pid"])
    # Dumps written, and neither pydantic's compiled core nor anything of it is mapped.
    assert "pydantic" not in _mapped_files(watchdog)
    os.kill(host.pid, signal.SIGKILL)
    host.finish()
    dumps = {d["trigger"]: d for d in map(_agrees_with_the_schema,
                                          sorted(diag_dir.glob("*.json")))}
    assert set(dumps) == {"manual", "unresponsive", "host-died"}, set(dumps)
    assert dumps["unresponsive"]["responsiveness"]["reason"] == "idle"
    assert dumps["host-died"]["host"]["exit"]["signal"] == "SIGKILL"
    assert dumps["host-died"]["collectionComplete"] is True


def test_bytes_that_are_not_utf8_and_nan_stats_still_make_a_postmortem(
        start_host, diag_dir) -> None:
    # A suggestion from argv with a byte that is not UTF-8 reaches the dump's text, and
    # a NaN loss its stats: neither may cost the file (a lone surrogate is no JSON any
    # reader accepts, and a bare NaN is no JSON at all).
    host = start_host("--stats", json.dumps({"loss": 1.0}), "--suggestion",
                      "shrink the cache \udcff now")
    info = host.wait_ready()
    assert host.ask('record {"loss": NaN}') == "recorded"
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    [path] = diag_dir.glob("*.json")
    dump = _agrees_with_the_schema(path)
    assert dump["collectionComplete"] is True
    assert any("\ufffd" in arg for arg in dump["host"]["argv"]), dump["host"]["argv"]
    assert dump["session"]["loss"] == "NaN"
    assert math.isnan(load(path.read_bytes()).session["loss"])


def test_the_watchdogs_imports_stay_stdlib() -> None:
    # What an idle watchdog loads, and what its postmortem path and its metrics file
    # import late: neither pydantic, nor filelock (only pruning loads it), nor psutil
    # on Linux.
    code = ("import sys\n"
            "import watchdog_core._watchdog, watchdog_core._recovery, "
            "watchdog_core._textfile, watchdog_core._sentry, watchdog_core._sentry_host\n"
            "heavy = {'pydantic', 'filelock', 'psutil', 'typing', 'dataclasses',"
            " 'argparse', 'datetime', 'inspect', 'sentry_sdk', 'urllib.parse'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
