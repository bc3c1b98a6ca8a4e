"""Every way a host dies is named, each proven with a real process dying that way (issue 4)."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from tests.conftest import segment_exists


def _postmortem(host) -> dict:  # type: ignore[no-untyped-def]
    dumps = [d for d in host.dumps() if d["trigger"] == "host-died"]
    assert len(dumps) == 1, host.dumps()
    return dumps[0]


def test_a_real_cgroup_oom_kill(start_host, memory_cgroup) -> None:
    host = start_host("--interval", "0.05", cgroup=memory_cgroup)
    info = host.wait_ready()
    host.send("balloon")
    host.finish()
    assert host.proc.returncode == -signal.SIGKILL
    triggers = [d["trigger"] for d in host.dumps()]
    assert "critical" in triggers, triggers  # written while the host was still alive
    assert triggers.index("critical") < triggers.index("host-died")
    critical = next(d for d in host.dumps() if d["trigger"] == "critical")
    assert critical["memory"]["limitSource"].startswith("cgroup-")
    assert critical["memory"]["heapLimit"] == 200 * 1024 * 1024
    dump = _postmortem(host)
    exit_ = dump["host"]["exit"]
    assert exit_["kind"] == "oom-killed", exit_
    assert exit_["signal"] == "SIGKILL"
    assert any(e.startswith("cgroup-") and "oom_kill" in e for e in exit_["evidence"])
    assert "cgroup-v" in dump["suggestion"] and "200 MiB" in dump["suggestion"]
    assert dump["session"]["historyEntries"] > 0
    assert not segment_exists(str(info["shm"]))


@pytest.mark.parametrize(("command", "sig", "fault"), [
    ("segv", "SIGSEGV", "Segmentation fault"),
    ("abort", "SIGABRT", "Aborted"),
])
def test_native_crashes_carry_every_threads_traceback(start_host, diag_dir, command: str,
                                                      sig: str, fault: str) -> None:
    host = start_host("--stats", json.dumps({"turns": 3}), "--label", "tool:native")
    host.wait_ready()
    host.send(command)
    host.finish()
    dump = _postmortem(host)
    exit_ = dump["host"]["exit"]
    assert (exit_["kind"], exit_["signal"]) == ("crashed", sig)
    assert f"Fatal Python error: {fault}" in dump["crashTraceback"]
    assert "host_program.py" in dump["crashTraceback"]  # the Python stack, not just a signal
    assert dump["lastActivity"] == "tool:native"
    assert not list(diag_dir.glob(".crash-*")), "the crash file is folded into the dump"


def test_a_host_with_its_own_faulthandler_is_left_alone(start_host) -> None:
    host = start_host("--own-faulthandler")
    host.wait_ready()
    host.send("segv")
    host.finish()
    dump = _postmortem(host)
    assert dump["host"]["exit"]["kind"] == "crashed"
    assert dump["crashTraceback"] is None
    assert any("enabled by the host" in e for e in dump["host"]["exit"]["evidence"])
    assert "Segmentation fault" in host.stderr  # the host's own faulthandler still spoke


def test_sigterm_with_catch_sigterm_is_named_and_still_kills(start_host) -> None:
    host = start_host("--catch-sigterm")
    info = host.wait_ready()
    os.kill(int(info["pid"]), signal.SIGTERM)
    assert host.finish() == -signal.SIGTERM  # the handler re-raises: the host still dies of it
    exit_ = _postmortem(host)["host"]["exit"]
    assert (exit_["kind"], exit_["signal"]) == ("killed", "SIGTERM")
    assert "ring: SIGTERM received (catch_sigterm)" in exit_["evidence"]


def test_a_gil_holding_hang_gets_one_unresponsive_dump_with_stacks(start_host,
                                                                   diag_dir) -> None:
    host = start_host("--hang-after", "1.0", "--label", "tool:c-call")
    host.wait_ready()
    assert host.ask("hang 4") == "woke"
    host.send("dump")  # after recovery: the next dump notes it
    host.proc.stdout.readline()
    host.send("stop")
    assert host.finish() == 0
    dumps = host.dumps()
    unresponsive = [d for d in dumps if d["trigger"] == "unresponsive"]
    assert len(unresponsive) == 1, [d["trigger"] for d in dumps]
    hang = unresponsive[0]
    assert hang["responsiveness"]["state"] == "unresponsive"
    assert hang["responsiveness"]["reason"] == "heartbeat"
    assert hang["responsiveness"]["heartbeatAge"] > 1.0
    assert hang["lastActivity"] == "tool:c-call"
    stacks = (diag_dir / hang["extras"]["stacks"]).read_text()
    assert "host_program.py" in stacks and "main" in stacks
    manual = next(d for d in dumps if d["trigger"] == "manual")
    assert manual["responsiveness"]["state"] == "recovered"
    assert manual["responsiveness"]["unresponsiveFor"] > 0


def test_idle_after_catches_a_quiet_main_thread(start_host) -> None:
    host = start_host("--idle-after", "1.0")
    host.wait_ready()
    assert host.ask("block 3") == "woke"
    host.send("stop")
    host.finish()
    (hang,) = [d for d in host.dumps() if d["trigger"] == "unresponsive"]
    assert hang["responsiveness"]["reason"] == "idle"


def test_a_killed_watchdog_is_restarted_and_the_host_never_notices(start_host) -> None:
    host = start_host("--stats", json.dumps({"turns": 1}), "--label", "before")
    info = host.wait_ready()
    line = host.ask("killwd")
    old, new = line.split()[1], line.split()[3]
    assert old != new and line.endswith("alive=True"), line
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    dump = _postmortem(host)  # written by the second watchdog
    assert dump["watchdog"]["pid"] == int(new)
    assert dump["session"]["historyEntries"] == 1
    assert dump["lastActivity"] == "before"


def test_without_restart_the_host_just_loses_its_watchdog(start_host) -> None:
    host = start_host("--no-restart")
    info = host.wait_ready()
    watchdog = psutil.Process(int(info["watchdog_pid"]))
    watchdog.kill()
    watchdog.wait(10)
    assert host.ask("record " + json.dumps({"after": 1})) == "recorded"
    host.send("stop")
    assert host.finish() == 0


def test_both_processes_killed_leaves_an_orphan_the_next_session_recovers(start_host,
                                                                           tmp_path) -> None:
    first_dir = tmp_path / "first"
    first = start_host("--stats", json.dumps({"turns": 42}), "--label", "doomed",
                       "--no-restart", directory=first_dir)
    info = first.wait_ready()
    first.kill_both()
    assert segment_exists(str(info["shm"]))
    assert first.dumps() == []
    second = start_host(directory=tmp_path / "second")  # a new session anywhere on the machine
    second.wait_ready()
    deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
    while segment_exists(str(info["shm"])):
        assert time.monotonic() < deadline, "the orphan was never recovered"
        time.sleep(0.05)
    second.send("stop")
    second.finish()
    (dump,) = first.dumps()  # into the orphan's own directory, named in its ring
    assert dump["trigger"] == "recovered"
    assert dump["host"]["alive"] is False
    assert dump["session"] == {"turns": 42}
    assert dump["lastActivity"] == "doomed"
    assert (first_dir / dump["ring"]["file"]).exists()


def test_a_threads_uncaught_exception_is_evidence_not_a_verdict(start_host) -> None:
    host = start_host()
    info = host.wait_ready()
    assert host.ask("thread-raise") == "thread died"
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    exit_ = _postmortem(host)["host"]["exit"]
    assert exit_["kind"] == "killed"
    assert "ring: a thread died of KeyError" in exit_["evidence"]
    assert "secret key name" not in json.dumps(host.dumps())


def test_a_host_owning_the_stack_signal_keeps_it(start_host) -> None:
    host = start_host("--own-usr2", "--hang-after", "1.0")
    info = host.wait_ready()
    assert host.ask("hang 3") == "woke"  # our SIGUSR2 never cut it short
    host.send("stop")
    assert host.finish() == 0
    (hang,) = [d for d in host.dumps() if d["trigger"] == "unresponsive"]
    assert "stacks" not in hang["extras"]
    assert hang["responsiveness"]["stacksMissing"] == "the host handles the stack signal itself"
    assert info["watchdog_pid"]
