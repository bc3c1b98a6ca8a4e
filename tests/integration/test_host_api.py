"""The host API against a real watchdog (README, docs/design.md): start, level, stop,
idempotency, imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, segment_exists
from watchdog_core import PressureLevel, start_watchdog


@pytest.mark.parametrize(("argument", "value"), [
    ("memory_limit", "1KiB"), ("session_id", "../x"), ("hang_after", -1),
    ("diagnostics_dir", 123)])
def test_a_repeat_start_still_refuses_a_bad_argument(tmp_path: Path, argument: str,
                                                     value: object) -> None:
    wd = start_watchdog(diagnostics_dir=tmp_path / "d")
    try:
        with pytest.raises(ValueError, match=argument):
            start_watchdog(**{argument: value})  # type: ignore[arg-type]
    finally:
        wd.stop()


def test_start_is_idempotent_and_stop_is_too(tmp_path: Path) -> None:
    wd = start_watchdog(diagnostics_dir=tmp_path / "d")
    try:
        with pytest.warns(RuntimeWarning, match="diagnostics_dir"):  # ignored: said once
            assert start_watchdog(diagnostics_dir=tmp_path / "other") is wd
        assert start_watchdog(diagnostics_dir=tmp_path / "d") is wd  # the same: quiet
        assert wd.watchdog_alive
        assert segment_exists(str(wd.shm_name))
    finally:
        wd.stop()
    wd.stop()
    assert not segment_exists(str(wd.shm_name))
    assert not wd.watchdog_alive
    wd.record(after=1)  # never raises once stopped
    wd.mark("after")
    assert wd.dump() is None
    again = start_watchdog(diagnostics_dir=tmp_path / "d")
    assert again is not wd
    again.stop()


def test_stop_without_time_to_wait_leaves_no_zombie(tmp_path: Path) -> None:
    """stop(timeout=0) cannot wait for the watchdog to finish: it is reaped later,
    never left a zombie for the host's life."""
    pids = []
    for _ in range(3):
        wd = start_watchdog(diagnostics_dir=tmp_path / "d")
        assert wd._process is not None
        pids.append(wd._process.pid)
        wd.stop(timeout=0)
    for pid in pids:
        deadline = time.monotonic() + 60  # a guard against hanging, not a timing claim
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, f"watchdog {pid} never reaped"
            time.sleep(0.01)


def test_context_manager_stops(tmp_path: Path) -> None:
    with start_watchdog(diagnostics_dir=tmp_path / "d") as wd:
        wd.record(a=1)
        name = wd.shm_name
    assert not segment_exists(str(name))
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").glob("*.json"))


def test_level_and_status_come_from_the_watchdog(tmp_path: Path) -> None:
    wd = start_watchdog(diagnostics_dir=tmp_path / "d", interval=0.02)
    try:
        deadline = time.monotonic() + 60  # a guard against hanging, not a timing claim
        while wd.status() is None:  # the watchdog's first sample
            assert wd.watchdog_alive and time.monotonic() < deadline
        status = wd.status()
        assert status is not None
        assert status["rss"] > 0 and status["limitSource"] != "none"
        assert wd.level is PressureLevel.NORMAL
    finally:
        wd.stop()


def test_disable_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_CORE_DISABLE", "1")
    wd = start_watchdog(diagnostics_dir=tmp_path / "d")
    assert not wd.enabled and wd.shm_name is None
    wd.record(a=1)
    wd.recorder("b")(2)
    assert wd.dump() is None
    wd.stop()


def test_bad_arguments_raise_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="session_id"):
        start_watchdog(session_id="../etc")
    with pytest.raises(ValueError, match="hard"):
        start_watchdog(hard=2.0)


IMPORT_PROBE = """
import sys
before = set(sys.modules)
import watchdog_core
after_import = set(sys.modules) - before
wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1])
wd.record(a=1); wd.recorder("b")(2); wd.mark("x")
after_start = set(sys.modules) - before
wd.stop()
import json
print(json.dumps({"import": sorted(after_import), "start": sorted(after_start)}))
"""

HEAVY = {"psutil", "pydantic", "filelock", "multiprocessing", "subprocess", "uuid", "logging",
         "dataclasses", "json", "typing", "pathlib", "argparse", "re", "enum"}


def test_the_host_never_imports_heavy_modules(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(tmp_path / "d")],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    loaded = json.loads(out.stdout)
    assert not HEAVY & set(loaded["import"]), loaded["import"]
    assert not HEAVY & set(loaded["start"]), loaded["start"]
    assert [m for m in loaded["import"] if m.startswith("watchdog_core")] == ["watchdog_core"]
