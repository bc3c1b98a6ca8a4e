"""`watchdog-core dump SESSION`: a dump asked for from outside the host, answered by its
watchdog at once (woken by a signal, not at its next sample), with real hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, run_cli

# A sampling interval far longer than the answer may take: an answer within the
# requester's timeout proves the watchdog was woken, not that it sampled again.
SLOW = ("--interval", "30")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=60)


def _dumped(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    return json.loads(path.read_text())


def test_a_dump_by_session_id_pid_and_segment_name(start_host) -> None:
    host = start_host(*SLOW, "--stats", json.dumps({"turns": 7}), "--label", "tool:x")
    info = host.wait_ready()
    for target in (str(info["session"]), str(info["pid"]), str(info["shm"])):
        dump = _dumped(cli("dump", target, "--timeout", "10"))
        assert dump["trigger"] == "manual" and dump["reason"] == "asked for by watchdog-core dump"
        assert dump["session"] == {"turns": 7} and dump["lastActivity"] == "tool:x"
        assert dump["host"]["alive"] is True
    as_json = json.loads(cli("dump", str(info["session"]), "--json").stdout)
    assert Path(as_json["path"]).exists() and as_json["segment"] == info["shm"]
    host.send("stop")
    assert host.finish() == 0


def test_a_host_stuck_holding_the_gil_is_still_dumped(start_host) -> None:
    # The watchdog answers, not the host: a host that cannot run Python is dumped too.
    host = start_host(*SLOW)
    info = host.wait_ready()
    host.send("hang 4")
    dump = _dumped(cli("dump", str(info["session"]), "--timeout", "10"))
    assert dump["host"]["alive"] is True
    assert host.proc.stdout is not None and host.proc.stdout.readline().strip() == "woke"
    host.send("stop")
    assert host.finish() == 0


def test_requesters_at_once_all_get_an_answer(start_host) -> None:
    host = start_host(*SLOW)
    info = host.wait_ready()
    procs = [subprocess.Popen([sys.executable, "-m", "watchdog_core", "dump",
                               str(info["session"]), "--timeout", "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT))) for _ in range(8)]
    answers = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, answers
    assert all(Path(out.strip()).exists() for out, _ in answers)
    host.send("stop")
    assert host.finish() == 0


def test_no_such_session_is_1_and_a_bad_one_is_2() -> None:
    gone = cli("dump", "no-such-session-here")
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1
    assert "no live session" in gone.stderr
    for bad in ("../x", "-x", "watchdog_core-..-1"):
        result = cli("dump", "--", bad) if bad.startswith("-") else cli("dump", bad)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert cli("dump", "x", "--timeout", "-1").returncode == 2


def test_a_session_after_stop_is_not_live(start_host) -> None:
    host = start_host(*SLOW)
    info = host.wait_ready()
    host.send("stop")
    assert host.finish() == 0
    result = cli("dump", str(info["session"]))
    assert result.returncode == 1 and "no live session" in result.stderr


def test_a_process_that_does_not_catch_the_wake_signal_is_never_sent_it(start_host) -> None:
    """A watchdog of an older version has the same command line but no handler: the
    signal's default would kill it. Played by a process that looks like one; the real
    watchdog answers at its next sample instead."""
    import signal
    import time

    from watchdog_core import _ring, _shm

    host = start_host("--interval", "1")
    info = host.wait_ready()
    shm = str(info["shm"])
    lookalike = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                  "-m", "watchdog_core._watchdog", "--shm", shm])
    try:
        time.sleep(0.3)  # the look-alike's cmdline is in place
        fd = _shm._shm_open(shm, os.O_RDWR)
        import mmap

        with mmap.mmap(fd, _ring.HEADER_SIZE) as mapping:
            words = memoryview(mapping).cast("Q")
            real, words[_ring.W_WATCHDOG_PID] = words[_ring.W_WATCHDOG_PID], lookalike.pid
            try:
                result = cli("dump", str(info["session"]), "--timeout", "10")
            finally:
                words[_ring.W_WATCHDOG_PID] = real
            words.release()
        os.close(fd)
        assert result.returncode == 0, result.stderr  # answered at the next sample
        assert lookalike.poll() is None  # never signalled: alive
    finally:
        lookalike.send_signal(signal.SIGKILL)
        lookalike.wait()
    host.send("stop")
    assert host.finish() == 0


def test_a_requester_stops_waiting_when_the_watchdog_is_gone(start_host) -> None:
    import signal

    host = start_host(*SLOW, "--no-restart")
    info = host.wait_ready()
    watchdog = int(info["watchdog_pid"])
    os.kill(watchdog, signal.SIGSTOP)  # it cannot answer
    waiting = subprocess.Popen([sys.executable, "-m", "watchdog_core", "dump",
                                str(info["session"]), "--timeout", "50"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
    import time

    time.sleep(0.5)
    os.kill(watchdog, signal.SIGKILL)
    _, err = waiting.communicate(timeout=40)  # well before its own 50 s timeout
    assert waiting.returncode == 1 and "is gone" in err, err
    host.send("stop")
    host.finish()
