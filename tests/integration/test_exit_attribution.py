"""Every way a host dies is named, each proven with a real process dying that way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import ROOT, host_env, segment_exists
from watchdog_core import _ring


def _postmortem(host) -> dict:  # type: ignore[no-untyped-def]
    dumps = [d for d in host.dumps() if d["trigger"] == "host-died"]
    assert len(dumps) == 1, host.dumps()
    return dumps[0]


def _killed_by_the_oom_killer(pid: int) -> bool:
    """Does the kernel's log say the OOM killer took ``pid``? (root only)"""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False
            except BrokenPipeError:
                continue
            if f"Killed process {pid} ".encode() in record:
                return True
    finally:
        os.close(fd)


def _oom_postmortem(host) -> dict:  # type: ignore[no-untyped-def]
    """The postmortem of a host whose cgroup ran out of memory.

    Its watchdog lives in the same cgroup and, without CAP_SYS_RESOURCE (as in most
    containers, and on this machine), cannot lower its OOM score: in the milliseconds
    after the kernel took the host, before its memory is uncharged, an allocation of
    the watchdog's can make the kernel take it too (about 1 run in 100 here;
    docs/design.md). Then the ring must still be there, and gc must write its
    postmortem; the exact verdict this test is about cannot be had, so it skips.
    """
    dumps = [d for d in host.dumps() if d["trigger"] == "host-died"]
    if dumps:
        return dumps[0]
    watchdog = int(host.info["watchdog_pid"])
    assert _killed_by_the_oom_killer(watchdog), f"no postmortem: {host.dumps()} {host.stderr}"
    assert segment_exists(str(host.info["shm"])), "the ring was lost with the watchdog"
    done = subprocess.run([sys.executable, "-m", "watchdog_core", "gc", "--json"],
                          capture_output=True, text=True, check=False, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    outcomes = {o["segment"]: o for o in json.loads(done.stdout)["orphans"]}
    assert outcomes[str(host.info["shm"])]["outcome"] == "written", done.stdout
    recovered = [d for d in host.dumps() if d["trigger"] == "recovered"]
    assert len(recovered) == 1 and recovered[0]["session"] is not None
    pytest.skip(f"the kernel OOM-killed the watchdog {watchdog} too (it shares the host's "
                "cgroup and cannot lower its OOM score here); gc recovered the ring")


def test_a_real_cgroup_oom_kill(start_host, memory_cgroup) -> None:
    host = start_host("--interval", "0.05", cgroup=memory_cgroup)
    info = host.wait_ready()
    host.send("balloon")
    host.finish()
    assert host.returncode == -signal.SIGKILL
    dump = _oom_postmortem(host)
    triggers = [d["trigger"] for d in host.dumps()]
    assert "critical" in triggers, triggers  # written while the host was still alive
    assert triggers.index("critical") < triggers.index("host-died")
    critical = next(d for d in host.dumps() if d["trigger"] == "critical")
    assert critical["memory"]["limitSource"].startswith("cgroup-")
    assert critical["memory"]["heapLimit"] == 200 * 1024 * 1024
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
    assert "Fatal Python error: Segmentation fault" in host.stderr  # its own faulthandler spoke


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
    assert hang["responsiveness"]["reason"] == "gil-held"
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


NO_KMSG = {"WATCHDOG_CORE_NO_KMSG": "1"}  # a watchdog without root: /dev/kmsg unreadable


@pytest.mark.parametrize("kmsg", [True, False], ids=["kmsg", "no-kmsg"])
def test_a_real_oom_kill_is_certain_with_or_without_kmsg(start_host, memory_cgroup,
                                                         kmsg: bool) -> None:
    """kmsg names the pid; without it, the cgroup held the host (and its watchdog)
    alone, so the kill it counted can only have been the host's."""
    host = start_host("--interval", "0.05", cgroup=memory_cgroup, env=None if kmsg else NO_KMSG)
    host.wait_ready()
    host.send("balloon")
    assert host.finish() == -signal.SIGKILL
    exit_ = _oom_postmortem(host)["host"]["exit"]
    assert (exit_["kind"], exit_["signal"], exit_["confidence"]) == ("oom-killed", "SIGKILL",
                                                                     "certain"), exit_
    assert any(e.startswith("kernel: ") for e in exit_["evidence"]) is kmsg


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
@pytest.mark.parametrize("kmsg", [True, False], ids=["kmsg", "no-kmsg"])
def test_a_workers_oom_kill_is_not_the_hosts(start_host, memory_cgroup, sig: int,
                                             kmsg: bool) -> None:
    """The host's worker is OOM-killed in the shared cgroup, then a supervisor ends the
    host: the counter rose while the host lived, so that kill was not its own; the wait
    status and kmsg say what happened."""
    host = start_host("--interval", "0.05", cgroup=memory_cgroup, env=None if kmsg else NO_KMSG)
    host.wait_ready()
    assert host.ask("worker-oom") == "worker -9"
    if _killed_by_the_oom_killer(int(host.info["watchdog_pid"])):
        pytest.skip("the kernel OOM-killed the watchdog with the worker (it shares the "
                    "cgroup and cannot lower its OOM score here): a new one knows nothing "
                    "of the earlier kill")
    _two_more_samples(host)  # the watchdog has seen the count rise while the host lived
    os.kill(host.pid, sig)
    host.finish()
    exit_ = _postmortem(host)["host"]["exit"]
    expected = ("killed", signal.Signals(sig).name, "certain")
    assert (exit_["kind"], exit_["signal"], exit_["confidence"]) == expected, exit_
    assert any("while the host lived, so not its own" in e for e in exit_["evidence"]), exit_
    if kmsg:
        assert any("the OOM killer chose pid" in e for e in exit_["evidence"])


@pytest.mark.parametrize("kmsg", [True, False], ids=["kmsg", "no-kmsg"])
def test_an_oom_kill_in_a_shared_cgroup_without_kmsg_is_only_likely(
        start_host, memory_cgroup, kmsg: bool) -> None:
    """The host shares its cgroup with a process of its own and is OOM-killed: only kmsg
    names the victim; without it the shared counter makes the verdict 'likely', and the
    suggestion says the evidence is circumstantial."""
    host = start_host("--interval", "0.05", cgroup=memory_cgroup, env=None if kmsg else NO_KMSG)
    host.wait_ready()
    sleeper = int(host.ask("sleeper").split()[1])
    try:
        host.send("balloon")
        assert host.finish() == -signal.SIGKILL
    finally:
        os.kill(sleeper, signal.SIGKILL)
    dump = _oom_postmortem(host)
    exit_ = dump["host"]["exit"]
    expected = ("oom-killed", "SIGKILL", "certain" if kmsg else "likely")
    assert (exit_["kind"], exit_["signal"], exit_["confidence"]) == expected, exit_
    if not kmsg:
        assert dump["suggestion"].startswith("The host was probably killed")


def test_a_host_that_execs_is_never_signalled_and_its_session_ends(start_host) -> None:
    """After an exec the host runs another program: the stack signal would kill it (the
    new program has no handler). The watchdog sees the host's lock dropped and ends
    the session, as after stop()."""
    host = start_host("--hang-after", "1.0", "--label", "launcher")
    info = host.wait_ready()
    host.send("exec 3")
    assert host.finish() == 0, host.stderr
    assert "the new program survived" in host.stdout
    assert host.dumps() == []
    assert not segment_exists(str(info["shm"]))
    assert not [p for p in host.directory.iterdir() if p.name.startswith(".")
                and not p.name.endswith(".lock")]


@pytest.mark.parametrize(("command", "missing"), [
    ("own-usr2", "the host installed its own handler for the stack signal"),
    ("default-usr2", "the host no longer catches the stack signal"),
])
def test_a_hang_after_the_host_took_the_stack_signal_back_sends_nothing(
        start_host, command: str, missing: str) -> None:
    """The host took SIGUSR2 after start (its own handler, or the default back): the
    watchdog must not send it when the host hangs; the dump says why there are no
    stacks, and the host neither dies nor sees a signal it did not ask for."""
    host = start_host("--hang-after", "1.0", "--interval", "0.05")
    info = host.wait_ready()
    assert host.ask(command) in ("installed", "default")
    if command == "own-usr2":  # the host's heartbeat notices within hang_after / 3
        _wait_for_flag(str(info["shm"]), _ring.FLAG_STACK_SIGNAL_LOST)
    assert host.ask("hang 3") == "woke"
    if command == "own-usr2":  # the host's own handler ran only for its own signal
        assert host.ask("usr2-self") == "usr2 1"
    host.send("stop")
    assert host.finish() == 0, host.stderr
    (hang,) = [d for d in host.dumps() if d["trigger"] == "unresponsive"]
    assert "stacks" not in hang["extras"]
    assert hang["responsiveness"]["stacksMissing"] == missing


def _wait_for_flag(shm: str, flag: int) -> None:
    from watchdog_core import _reader, _shm

    mapping = _shm.open_segment(shm)
    try:
        for _ in range(10_000):  # a guard against hanging, not a timing claim
            with _reader.RingImage(mapping) as image:
                if image.flags & flag:
                    return
            time.sleep(0.001)
        pytest.fail(f"flag {flag} never set in {shm}")
    finally:
        mapping.close()


def _two_more_samples(host) -> None:  # type: ignore[no-untyped-def]
    first = json.loads(host.ask("status").split(" ", 1)[1])["samples"]
    for _ in range(10_000):  # a guard against hanging, not a timing claim
        if json.loads(host.ask("status").split(" ", 1)[1])["samples"] >= first + 2:
            return
        time.sleep(0.005)
    pytest.fail("the watchdog stopped sampling")


FORKING_DURING_START = """
import os, sys, threading, time
go, kids = True, []
def forker():  # another thread forks all the while start_watchdog() runs
    while go:
        pid = os.fork()
        if pid == 0:
            os.close(1), os.close(2)
            time.sleep(3)
            os._exit(0)
        kids.append(pid)
        time.sleep(0.0005)
threading.Thread(target=forker, daemon=True).start()
time.sleep(0.05)
from watchdog_core import start_watchdog
wd = start_watchdog(diagnostics_dir=sys.argv[1], interval=0.05, hang_after=1)
go = False
time.sleep(0.3)
print(len(kids), wd.shm_name, flush=True)
os.execv("/bin/sh", ["sh", "-c", "sleep 2; exit 7"])
"""


def test_children_forked_while_the_session_starts_keep_no_lock(tmp_path) -> None:
    """A thread forks while start_watchdog() runs: no child may keep the host's lock (it
    would make an exec look like the host living on, and a dead host look alive)."""
    import subprocess
    import sys

    from tests.conftest import REAPER, ROOT

    directory = tmp_path / "diag"
    done = subprocess.run([sys.executable, str(REAPER), sys.executable, "-c",
                           FORKING_DURING_START, str(directory)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120,
                          check=False)
    assert done.returncode == 7, done.stderr
    kids, shm = done.stdout.split()
    assert int(kids) > 10  # the race was met
    assert not list(directory.glob("memory-*")), "the exec'd program was watched"
    assert not segment_exists(shm)


def test_a_host_whose_name_is_not_utf8_is_watched(tmp_path) -> None:
    """/proc/<pid>/status carries the comm raw: a name set by prctl or setproctitle may
    be any bytes, and reading it as text once cost the whole session."""
    code = ("import os, sys, time, watchdog_core\n"
            "open('/proc/self/comm', 'wb').write(b'\\xff\\xfe-worker')\n"
            "wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], interval=0.05)\n"
            "while wd.status() is None:\n"
            "    time.sleep(0.01)\n"
            "os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=host_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "cannot attach" not in done.stderr
    (path,) = tmp_path.glob("*.json")
    end = json.loads(path.read_text())["host"]["exit"]
    assert (end["kind"], end["signal"]) == ("killed", "SIGKILL")
