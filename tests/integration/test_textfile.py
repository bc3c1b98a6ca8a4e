"""The session's metrics file in a textfile folder: real hosts and watchdogs, real
deaths, every file parsed by prometheus_client's own parser."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from watchdog_core import _reader, _ring, _textfile

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families as parse  # noqa: E402

LIVE = {"watchdog_core_rss_bytes": "gauge", "watchdog_core_limit_bytes": "gauge",
        "watchdog_core_limit_used_ratio": "gauge", "watchdog_core_level": "gauge",
        "watchdog_core_growth_bytes_per_second": "gauge",
        "watchdog_core_time_to_limit_seconds": "gauge",
        "watchdog_core_samples": "counter", "watchdog_core_dumps": "counter"}
SECRET = "--api-token=hunter2-s3cr3t"


@pytest.fixture
def textfile_dir(tmp_path: Path) -> Path:
    """A folder as node_exporter's usually is: group-writable."""
    folder = tmp_path / "textfile"
    folder.mkdir()
    folder.chmod(0o775)
    return folder


def _families(path: Path) -> dict[str, Any]:
    return {f.name: f for f in parse(path.read_text())}


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_live_file_then_the_hosts_death(start_host, textfile_dir: Path) -> None:
    host = start_host("--session", "tf-kill", "--limit", "1GiB", SECRET,
                      env={"WATCHDOG_CORE_PROMETHEUS_DIR": str(textfile_dir)})
    info = host.wait_ready()
    live = textfile_dir / "watchdog-core+tf-kill.prom"
    _wait_for(live.exists)
    assert stat.S_IMODE(live.stat().st_mode) == 0o644  # node_exporter is another user
    text = live.read_text()
    assert "hunter2" not in text and "api-token" not in text
    families = _families(live)
    assert {name: f.type for name, f in families.items()} == LIVE
    for name, family in families.items():
        for sample in family.samples:
            extra = {"trigger"} if name == "watchdog_core_dumps" else set()
            assert set(sample.labels) == {"session", "program", "limit_source"} | extra
            assert sample.labels["session"] == "tf-kill"
            assert sample.labels["program"] == Path(f"/proc/{info['pid']}/comm").read_text(
                ).strip()
    (limit,) = families["watchdog_core_limit_bytes"].samples
    assert limit.value == 1 << 30 and limit.labels["limit_source"] == "configured"
    assert families["watchdog_core_samples"].samples[0].value >= 1
    host.send("kill")
    host.finish()
    exit_file = textfile_dir / "watchdog-core+tf-kill+exit.prom"
    assert _ours(textfile_dir) == [exit_file.name]  # the live file went, no temp file left
    assert stat.S_IMODE(exit_file.stat().st_mode) == 0o644
    families = _families(exit_file)
    assert set(families) == {"watchdog_core_host_exit", "watchdog_core_host_exit_time_seconds"}
    (sample,) = families["watchdog_core_host_exit"].samples
    assert sample.value == 1
    assert sample.labels == {"session": "tf-kill", "program": limit.labels["program"],
                             "kind": "killed", "signal": "SIGKILL", "confidence": "certain"}
    (when,) = families["watchdog_core_host_exit_time_seconds"].samples
    assert abs(when.value - time.time()) < 600


@pytest.mark.parametrize("end", ["exit0", "stop"])
def test_a_clean_end_leaves_no_file(start_host, textfile_dir: Path, end: str) -> None:
    host = start_host("--session", f"tf-{end}",
                      env={"WATCHDOG_CORE_PROMETHEUS_DIR": str(textfile_dir)})
    host.wait_ready()
    _wait_for((textfile_dir / f"watchdog-core+tf-{end}.prom").exists)
    host.send(end)
    assert host.finish() == 0
    assert _ours(textfile_dir) == []


def test_a_real_oom_kill_is_told(start_host, textfile_dir: Path, memory_cgroup) -> None:
    host = start_host("--session", "tf-oom", cgroup=memory_cgroup,
                      env={"WATCHDOG_CORE_PROMETHEUS_DIR": str(textfile_dir)})
    host.wait_ready()
    live = textfile_dir / "watchdog-core+tf-oom.prom"
    _wait_for(live.exists)
    (limit,) = _families(live)["watchdog_core_limit_bytes"].samples
    assert limit.value == 200 << 20 and limit.labels["limit_source"].startswith("cgroup-")
    host.send("balloon")
    assert host.finish() == -signal.SIGKILL
    (sample,) = _families(textfile_dir / "watchdog-core+tf-oom+exit.prom")[
        "watchdog_core_host_exit"].samples
    assert (sample.labels["kind"], sample.labels["signal"]) == ("oom-killed", "SIGKILL")
    assert not live.exists()


def test_dumps_are_counted_by_trigger(start_host) -> None:
    """The counts the file and export print, from the ring's words: a rise to hard then
    critical, and two manual dumps."""
    host = start_host("--session", "tf-count", "--limit", "160MiB")
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    assert host.ask("dump").startswith("dumped /")
    assert host.ask("dump").startswith("dumped /")
    done = run_cli("export", "--prometheus")
    host.send("stop")
    host.finish()
    assert done.returncode == 0, done.stderr
    (family,) = [f for f in parse(done.stdout) if f.name == "watchdog_core_dumps"]
    counts = {s.labels["trigger"]: s.value for s in family.samples
              if s.labels["session"] == "tf-count"}
    assert counts == {"hard": 1, "critical": 1, "unresponsive": 0, "manual": 2,
                      "descendant-died": 0}


def test_an_unusable_folder_costs_the_host_nothing(start_host, tmp_path: Path,
                                                  textfile_dir: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(textfile_dir)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    for folder, why in ((link, "is a symlink"), (open_to_all, "writable by every user"),
                        (tmp_path / "missing", "No such file")):
        host = start_host("--session", "tf-bad", env={
            "WATCHDOG_CORE_PROMETHEUS_DIR": str(folder)})
        host.wait_ready()
        assert host.ask("dump").startswith("dumped /")
        host.send("exit0")
        assert host.finish() == 0
        lines = [line for line in host.stderr.splitlines() if "metrics file" in line]
        assert len(lines) == 1 and why in lines[0], host.stderr
        assert _ours(textfile_dir) == []
        assert not open_to_all.exists() or _ours(open_to_all) == []


def test_old_files_expire(start_host, textfile_dir: Path) -> None:
    """A later watchdog removes our old exit files, live files nobody refreshed, and
    temp files left by a crash; fresh ones, others' and foreign names stay."""
    old = time.time() - 2 * 3600
    names = {"watchdog-core+gone+exit.prom": old, "watchdog-core+stale.prom": old,
             ".watchdog-core+stale.prom.77.tmp": old, "watchdog-core+fresh+exit.prom": None,
             "node_cpu.prom": old, "watchdog-core+theirs+exit.prom": old}
    for name, mtime in names.items():
        path = textfile_dir / name
        path.write_text("# nothing\n")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
    os.chown(textfile_dir / "watchdog-core+theirs+exit.prom", 65534, 65534)
    host = start_host("--session", "tf-exp",
                      env={"WATCHDOG_CORE_PROMETHEUS_DIR": str(textfile_dir)})
    host.wait_ready()
    _wait_for((textfile_dir / "watchdog-core+tf-exp.prom").exists)
    host.send("stop")
    host.finish()
    assert _ours(textfile_dir) == ["node_cpu.prom", "watchdog-core+fresh+exit.prom",
                                   "watchdog-core+theirs+exit.prom"]


def test_gc_expires_with_its_own_age(textfile_dir: Path) -> None:
    path = textfile_dir / "watchdog-core+gone+exit.prom"
    path.write_text("")
    hour_ago = time.time() - 3600 - 60
    os.utime(path, (hour_ago, hour_ago))
    fresh = textfile_dir / "watchdog-core+recent+exit.prom"
    fresh.write_text("")
    ten_minutes_ago = time.time() - 600
    os.utime(fresh, (ten_minutes_ago, ten_minutes_ago))
    done = run_cli("gc", "--prometheus-textfile", str(textfile_dir), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"would remove {path}: an old metrics file" in done.stdout
    assert path.exists()
    done = run_cli("gc", "--prometheus-textfile", str(textfile_dir),
                   "--prometheus-expire", "300")
    assert done.returncode == 0, done.stderr
    assert _ours(textfile_dir) == []
    done = run_cli("gc", "--prometheus-textfile", str(textfile_dir),
                   "--prometheus-expire", "soon")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "--prometheus-expire" in done.stderr


def test_run_keeps_a_file_for_its_child(tmp_path: Path, textfile_dir: Path) -> None:
    done = run_cli("run", "--dir", str(tmp_path / "d"), "--session-id", "tf-run",
                   "--prometheus-textfile", str(textfile_dir), "--",
                   "sh", "-c", "sleep 0.5; kill -9 $$")
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    (sample,) = _families(textfile_dir / "watchdog-core+tf-run+exit.prom")[
        "watchdog_core_host_exit"].samples
    assert (sample.labels["kind"], sample.labels["program"]) == ("killed", "sh")
    assert _ours(textfile_dir) == ["watchdog-core+tf-run+exit.prom"]


def test_run_refuses_a_folder_it_cannot_use(tmp_path: Path) -> None:
    done = run_cli("run", "--prometheus-textfile", str(tmp_path / "missing"), "--", "true")
    assert done.returncode != 0 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "--prometheus-textfile" in done.stderr and "Traceback" not in done.stderr


def test_cadence(tmp_path: Path, textfile_dir: Path) -> None:
    """Written at the first sample, on change at most every MIN_GAP, unchanged every
    REFRESH; the samples counter alone is no change. Time is given, files are real."""
    written: list[str] = []
    said: list[str] = []
    session = _textfile.SessionFile(str(textfile_dir), "tf-cadence", os.getpid(), 0,
                                    3600.0, said.append)
    path = textfile_dir / "watchdog-core+tf-cadence.prom"

    def update(now: float, rss: int, samples: int) -> None:
        raw = _ring.encode_status(0, 0.1, rss, rss, 1 << 30, 0.0, None, "configured",
                                  time.time_ns(), samples)
        before = path.stat().st_ino if path.exists() else None
        session.update(_reader.Status(raw), dict.fromkeys(_ring.DUMP_TRIGGERS, 0), now)
        if path.exists() and path.stat().st_ino != before:
            written.append(f"{now:g}")

    update(1000.0, 10 << 20, 1)  # the first sample
    update(1001.0, 10 << 20, 2)  # the counter alone
    update(1005.0, 20 << 20, 3)  # a change, too soon
    update(1015.0, 20 << 20, 4)  # a change, MIN_GAP after the first
    update(1031.0, 20 << 20, 5)  # nothing new
    update(1315.0, 20 << 20, 6)  # REFRESH after the last write
    assert written == ["1000", "1015", "1315"]
    (rss,) = _families(path)["watchdog_core_rss_bytes"].samples
    assert rss.value == 20 << 20
    session.host_ended()
    assert _ours(textfile_dir) == [] and said == []


def test_a_replaced_or_removed_file_is_written_again(textfile_dir: Path) -> None:
    """Two live hosts of one session id share the file: when the other replaced it (or
    removed it at its death), ours is back at the next write allowed, changes or not."""
    session = _textfile.SessionFile(str(textfile_dir), "tf-twin", os.getpid(), 0, 3600.0,
                                    lambda line: None)
    path = textfile_dir / "watchdog-core+tf-twin.prom"
    raw = _ring.encode_status(0, 0.1, 1 << 20, 1 << 20, 1 << 30, 0.0, None, "configured",
                              time.time_ns(), 1)
    counts = dict.fromkeys(_ring.DUMP_TRIGGERS, 0)
    session.update(_reader.Status(raw), counts, 1000.0)
    path.unlink()  # the other host of the id died and took the file with it
    session.update(_reader.Status(raw), counts, 1005.0)  # too soon
    assert not path.exists()
    session.update(_reader.Status(raw), counts, 1015.0)
    assert path.exists()
    other = textfile_dir / "other"
    other.write_text("# the other host's\n")
    other.replace(path)  # replaced by the other host's
    session.update(_reader.Status(raw), counts, 1030.0)
    assert "watchdog_core_rss_bytes" in path.read_text()
    session.host_ended()
    assert not path.exists()


def test_gc_refuses_a_folder_it_cannot_use(tmp_path: Path) -> None:
    done = run_cli("gc", "--prometheus-textfile", str(tmp_path / "missing"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "--prometheus-textfile" in done.stderr
