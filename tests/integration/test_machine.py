"""Many sessions, one machine: ls, gc, and 64 hosts dying at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import Host, run_cli, segment_exists


def cli(*argv: str, directory: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*argv, env=None if directory is None
                   else {"WATCHDOG_CORE_DIR": str(directory)})


def test_ls_lists_live_sessions_and_says_trouble_with_exit_1(start_host, diag_dir) -> None:
    calm = start_host("--session", "calm-one")
    calm.wait_ready()
    busy = start_host("--session", "busy-one", "--limit", "160MiB")
    busy.wait_ready()
    listed = cli("ls", "--json", directory=diag_dir)
    assert listed.returncode == 0, listed.stderr
    # Other sessions of this machine may be listed too, some of them mid-creation.
    rows = {r["sessionId"]: r for r in json.loads(listed.stdout)["sessions"] if "sessionId" in r}
    assert rows["calm-one"]["alive"] and rows["calm-one"]["watchdogAlive"]
    assert rows["calm-one"]["level"] == "normal" and rows["calm-one"]["rss"] > 0
    assert busy.ask("pressure 1") == "level critical"
    listed = cli("ls", directory=diag_dir)
    assert listed.returncode == 1
    assert "busy-one" in listed.stdout and "critical" in listed.stdout
    assert "memory-busy-one-" in listed.stdout  # its dumps, under recent dumps
    for host in (calm, busy):
        host.send("stop")
        host.finish()


def test_gc_recovers_orphans_and_prunes(start_host, tmp_path) -> None:
    orphan_dir = tmp_path / "orphaned"
    host = start_host("--no-restart", "--stats", json.dumps({"turns": 9}),
                      directory=orphan_dir)
    info = host.wait_ready()
    host.kill_both()
    assert segment_exists(str(info["shm"]))
    dry = cli("gc", "--dry-run", "--json", directory=tmp_path / "elsewhere")
    assert dry.returncode == 0, dry.stderr
    # Other orphans of this machine (another test run's, a killed session's) may be
    # listed too: this one must be.
    assert info["shm"] in [o["segment"] for o in json.loads(dry.stdout)["orphans"]]
    assert segment_exists(str(info["shm"]))  # a dry run touches nothing
    done = cli("gc", directory=tmp_path / "elsewhere")
    assert done.returncode == 0 and f"recovered {info['shm']}" in done.stdout
    assert not segment_exists(str(info["shm"]))
    (dump,) = [json.loads(p.read_text()) for p in orphan_dir.glob("*.json")]
    assert dump["trigger"] == "recovered" and dump["session"] == {"turns": 9}
    # Retention: keep two dump sets of five, the newest, each with its siblings.
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    for i in range(5):
        stem = f"memory-s-2026112{i}T000000.000000Z"
        (store / f"{stem}.json").write_text("{}")
        (store / f"{stem}.ring").write_text("ring")
        os.utime(store / f"{stem}.json", (1000 + i, 1000 + i))
    pruned = cli("gc", "--max-files", "2", "--json", "--dir", str(store))
    assert sorted(json.loads(pruned.stdout)["pruned"]) == sorted(
        f"memory-s-2026112{i}T000000.000000Z.{ext}" for i in range(3) for ext in ("json", "ring"))
    assert sorted(p.name for p in store.iterdir() if p.name.endswith(".json")) == [
        "memory-s-20261123T000000.000000Z.json", "memory-s-20261124T000000.000000Z.json"]
    assert cli("gc", "--max-files", "0").returncode == 2
    assert cli("gc", "--dir", "").returncode == 2
    assert cli("gc", "--dir", str(store / "memory-s-20261124T000000.000000Z.json")).returncode == 2
    assert cli("gc", "--max-bytes", "lots").returncode == 2


def test_64_hosts_dying_at_once_leave_64_whole_postmortems(tmp_path) -> None:
    """Half of them share one session id: names must still never collide."""
    directory = tmp_path / "shared"
    hosts = [Host(directory, "--session", "shared" if i % 2 else f"solo-{i}",
                  "--stats", json.dumps({"host": i}), "--interval", "0.5")
             for i in range(64)]
    try:
        infos = [h.wait_ready(timeout=120) for h in hosts]
        for info in infos:  # as close to "the same moment" as a loop of kill(2) gets
            os.kill(int(info["pid"]), signal.SIGKILL)
        for h in hosts:
            h.finish(timeout=180)
    finally:
        for h in hosts:
            if h.proc.poll() is None:
                h.proc.kill()
    names = sorted(p.name for p in directory.iterdir())
    assert not [n for n in names if n.startswith(".tmp")]
    jsons = [n for n in names if n.endswith(".json")]
    assert len(jsons) == 64 and len(set(jsons)) == 64
    assert len([n for n in names if n.endswith(".ring")]) == 64
    docs = [json.loads((directory / n).read_text()) for n in jsons]
    assert all(d["collectionComplete"] and d["trigger"] == "host-died" for d in docs)
    assert sorted(d["session"]["host"] for d in docs) == list(range(64))  # none lost
    assert sum(d["sessionId"] == "shared" for d in docs) == 32
    for info in infos:
        assert not segment_exists(str(info["shm"]))
