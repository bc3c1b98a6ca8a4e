"""A host that dies gets a postmortem; a host that ends cleanly leaves nothing
(docs/design.md, docs/diagnostics.md)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import segment_exists
from watchdog_core._reader import RingImage

STATS = {"historyEntries": 6401, "estimatedHistoryBytes": 157_000_000,
         "bigCounter": 2**60 + 1, "temperature": 0.25, "flag": True}


def _only_dump(host) -> dict:  # type: ignore[no-untyped-def]
    dumps = host.dumps()
    assert len(dumps) == 1, dumps
    return dumps[0]


def _assert_watchdog_gone(pid: int) -> None:
    """The watchdog has exited and been reaped (by init once the host is gone)."""
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(pid)


def test_sigkill_gets_a_postmortem_with_the_last_stats(start_host, diag_dir: Path) -> None:
    host = start_host("--stats", json.dumps(STATS), "--label", "tool:shell")
    info = host.wait_ready()
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()

    dump = _only_dump(host)
    assert dump["trigger"] == "host-died"
    assert dump["collectionComplete"] is True
    assert dump["host"]["alive"] is False
    assert dump["host"]["exit"]["kind"] == "killed"
    assert dump["host"]["exit"]["signal"] == "SIGKILL"
    assert dump["session"] == {**STATS, "flag": 1}
    assert dump["session"]["bigCounter"] == 2**60 + 1  # exact: stored as int64, not float
    assert dump["lastActivity"] == "tool:shell"
    assert dump["memory"]["rss"] > 0  # the last RSS the watchdog sampled
    ring_file = diag_dir / dump["ring"]["file"]
    assert ring_file.exists()
    image = RingImage(ring_file.read_bytes())
    assert image.newest().values["bigCounter"] == 2**60 + 1
    assert not segment_exists(str(info["shm"]))
    path_lines = [line for line in host.stderr.splitlines() if "postmortem written" in line]
    assert len(path_lines) == 1 and str(diag_dir) in path_lines[0]
    assert oct(diag_dir.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in diag_dir.iterdir()} == {"0o600"}
    assert not list(diag_dir.glob(".tmp-*"))
    _assert_watchdog_gone(int(info["watchdog_pid"]))


def test_stop_leaves_no_postmortem_and_no_segment(start_host) -> None:
    host = start_host("--stats", json.dumps(STATS))
    info = host.wait_ready()
    host.send("stop")
    assert host.finish() == 0
    assert host.dumps() == []
    assert not segment_exists(str(info["shm"]))
    _assert_watchdog_gone(int(info["watchdog_pid"]))


def test_clean_exit_without_stop_is_clean(start_host) -> None:
    host = start_host("--stats", json.dumps(STATS))
    info = host.wait_ready()
    host.send("exit0")
    assert host.finish() == 0
    assert host.dumps() == []
    assert not segment_exists(str(info["shm"]))
    assert "postmortem" not in host.stderr


def test_unhandled_exception_is_named_without_its_message(start_host) -> None:
    host = start_host("--stats", json.dumps(STATS))
    host.wait_ready()
    host.send("raise")
    assert host.finish() == 1
    dump = _only_dump(host)
    assert dump["host"]["exit"]["kind"] == "exited"
    assert dump["host"]["exit"]["exception"] == "ValueError"
    assert "secret message" not in json.dumps(dump)


def test_nonzero_exit_status_is_unclean(start_host) -> None:
    host = start_host()
    host.wait_ready()
    host.send("exit 3")
    assert host.finish() == 3
    dump = _only_dump(host)
    assert dump["host"]["exit"]["kind"] == "exited"
    assert dump["host"]["exit"]["exitCode"] == 3


def test_manual_dump_returns_its_path(start_host, diag_dir: Path) -> None:
    host = start_host("--stats", json.dumps(STATS), "--label", "thinking")
    host.wait_ready()
    line = host.ask("dump")
    assert line.startswith("dumped ")
    path = Path(line[len("dumped ") :])
    assert path.parent == diag_dir and path.exists()
    dump = json.loads(path.read_text())
    assert dump["trigger"] == "manual"
    assert dump["host"]["alive"] is True
    assert dump["session"]["historyEntries"] == 6401
    assert dump["lastActivity"] == "thinking"
    assert dump["collectionComplete"] is True
    host.send("stop")
    assert host.finish() == 0
    assert len(host.dumps()) == 1  # the manual dump only: stop() is clean


def test_forked_child_writes_nothing_into_the_parents_ring(start_host) -> None:
    host = start_host("--stats", json.dumps(STATS), "--label", "parent")
    info = host.wait_ready()
    assert host.ask("fork") == "child 0"  # 3 would mean the same handle
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    dump = _only_dump(host)  # the child's own session stopped cleanly: no dump of its own
    assert dump["session"] == {**STATS, "flag": 1}
    assert dump["lastActivity"] == "parent"
    assert dump["host"]["pid"] == info["pid"]


def test_host_dying_right_after_start_still_gets_a_postmortem(start_host, diag_dir) -> None:
    """A host killed before its watchdog has finished booting (docs/design.md)."""
    host = start_host("--stats", json.dumps({"n": 1}), "--no-wait")
    info = host.wait_ready()  # start_watchdog() returned; the watchdog may still be starting
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    dump = _only_dump(host)
    assert dump["session"] == {"n": 1}
    assert dump["host"]["exit"]["kind"] == "killed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGSEGV])
def test_other_signals_are_named(start_host, sig: signal.Signals) -> None:
    host = start_host()
    info = host.wait_ready()
    os.kill(int(info["pid"]), sig)
    host.finish()
    dump = _only_dump(host)
    assert dump["host"]["exit"]["signal"] == sig.name
    assert dump["host"]["exit"]["kind"] == ("crashed" if sig == signal.SIGSEGV else "killed")


NO_PIDFD = {"WATCHDOG_CORE_NO_PIDFD": "1"}


@pytest.mark.parametrize("parent", ["wnowait", "popen"])
def test_without_pidfd_pipe_eof_still_catches_a_sigkill(start_host, parent: str) -> None:
    """The fallback of macOS and old kernels: EOF on the control pipe
    (docs/fault-matrix.md). With no pidfd there is no exit info either: a parent that
    keeps the zombie lets the status be read; one that reaps at once usually wins the
    race, and the verdict then says it does not know rather than guess."""
    host = start_host("--stats", json.dumps(STATS), "--label", "tool:shell", env=NO_PIDFD,
                      parent=parent)
    info = host.wait_ready()
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    dump = _only_dump(host)
    exit_ = dump["host"]["exit"]
    if parent == "wnowait" or exit_["confidence"] == "certain":
        assert (exit_["kind"], exit_["signal"], exit_["confidence"]) == ("killed", "SIGKILL",
                                                                         "certain")
    else:
        assert (exit_["kind"], exit_["confidence"]) == ("unknown", "unknown"), exit_
    assert dump["session"]["historyEntries"] == 6401
    assert not segment_exists(str(info["shm"]))


@pytest.mark.parametrize("command", ["stop", "exit0"])
def test_without_pidfd_clean_ends_stay_clean(start_host, command: str) -> None:
    host = start_host(env=NO_PIDFD)
    info = host.wait_ready()
    host.send(command)
    assert host.finish() == 0
    assert host.dumps() == []
    assert not segment_exists(str(info["shm"]))


def test_multiprocessing_workers_do_not_disturb_the_hosts_ring(start_host) -> None:
    host = start_host("--stats", json.dumps(STATS), "--label", "parent")
    info = host.wait_ready()
    assert host.ask("pool") == "pool [0, 1, 4, 9]"
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    dump = _only_dump(host)
    assert dump["session"] == {**STATS, "flag": 1}
    assert dump["lastActivity"] == "parent"
