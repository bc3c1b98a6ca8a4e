"""The two kinds of hang a user means, and the waits that are not hangs (docs/hangs.md).

Real hosts: a pure-Python busy loop, a training loop's shape (busy, calling
functions), and a long blocking wait. The C call holding the GIL (gil-held) is in
test_exit_attribution. Stacks come from the
host's own faulthandler through the stack signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _unresponsive(host) -> list[dict]:  # type: ignore[no-untyped-def]
    return [d for d in host.dumps() if d["trigger"] == "unresponsive"]


def test_a_pure_python_busy_loop_is_main_thread_stuck_with_stacks(start_host,
                                                                  diag_dir: Path) -> None:
    host = start_host("--hang-after", "1.0", "--label", "tool:loop")
    host.wait_ready()
    assert host.ask("spin 4") == "spun"
    # Out of the loop, the heartbeat sees a new frame within hang_after / 3 and the
    # watchdog one sample later; the next dump then notes the recovery.
    assert host.ask("block 1") == "woke"
    host.send("dump")
    host.proc.stdout.readline()
    host.send("stop")
    assert host.finish() == 0
    (hang,) = _unresponsive(host)
    r = hang["responsiveness"]
    assert (r["state"], r["reason"]) == ("unresponsive", "main-thread-stuck")
    assert r["mainThreadCpu"] >= 0.5
    assert r["heartbeatAge"] < 1.0  # the heartbeat never stopped: the GIL was free
    assert hang["lastActivity"] == "tool:loop"
    stacks = (diag_dir / hang["extras"]["stacks"]).read_text()
    # The main thread's block, found by the id the dump names, is in spin().
    block = stacks.split(f"hread {r['mainThread']} ", 1)[1].split("\n\n", 1)[0]
    assert 'in spin' in block, stacks
    manual = next(d for d in host.dumps() if d["trigger"] == "manual")
    assert manual["responsiveness"]["state"] == "recovered"
    assert manual["responsiveness"]["reason"] == "main-thread-stuck"


def test_a_busy_loop_that_calls_functions_is_not_stuck(start_host) -> None:
    # A training loop's shape: busy for longer than hang_after, but it leaves its
    # frames at every step. Only its own frame staying innermost makes a hang.
    host = start_host("--hang-after", "1.0")
    host.wait_ready()
    assert host.ask("steps 4") == "stepped"
    host.send("stop")
    assert host.finish() == 0
    assert _unresponsive(host) == []


def test_a_loop_calling_a_function_each_step_is_not_stuck_at_any_hang_after(
        start_host) -> None:
    # Seen once a beat, this loop is in its own frame half the time: at hang_after=0.5
    # a look per beat took it for stuck twice in 6 s. The host looks again, densely,
    # before it believes the main thread never left its frame.
    host = start_host("--hang-after", "0.5")
    host.wait_ready()
    assert host.ask("calls 8") == "called"
    host.send("stop")
    assert host.finish() == 0
    assert _unresponsive(host) == []


def test_hang_dumps_share_the_budget_and_cooldown(start_host) -> None:
    # A host that hangs again and again must not fill the folder (retention would push
    # its postmortem out): one dump per episode, and episodes within the cooldown or
    # past max_dumps_per_session write none.
    host = start_host("--hang-after", "0.5", "--cooldown", "30", "--max-dumps", "3")
    host.wait_ready()
    for _ in range(3):
        assert host.ask("spin 1.5") == "spun"
        assert host.ask("block 0.5") == "woke"
    host.send("stop")
    assert host.finish() == 0
    assert len(_unresponsive(host)) == 1


def test_a_minute_long_blocking_wait_is_not_a_hang(start_host) -> None:
    # An agent waiting a minute for a model's reply: the main thread sits in one frame
    # the whole time, burning no CPU. hang_after must say nothing.
    host = start_host("--hang-after", "1.0")
    host.wait_ready()
    assert host.ask("block 60") == "woke"
    host.send("stop")
    assert host.finish() == 0
    assert _unresponsive(host) == []


def test_a_busy_loop_killed_while_stuck_keeps_its_stuck_dump(start_host,
                                                             diag_dir: Path) -> None:
    host = start_host("--hang-after", "0.5")
    info = host.wait_ready()
    host.send("spin 1000")
    _wait_dump(diag_dir, "unresponsive", timeout=30)
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    (hang,) = _unresponsive(host)
    assert hang["responsiveness"]["reason"] == "main-thread-stuck"
    assert any(d["trigger"] == "host-died" for d in host.dumps())


def test_an_uncaught_exception_names_where_it_was_raised_not_what_it_said(
        start_host) -> None:
    host = start_host()
    host.wait_ready()
    host.send("raise-deep")
    assert host.finish() == 1
    dump = next(d for d in host.dumps() if d["trigger"] == "host-died")
    exit_ = dump["host"]["exit"]
    assert (exit_["kind"], exit_["exception"]) == ("exited", "JSONDecodeError")
    frames = exit_["frames"]
    assert [f["function"] for f in frames[:3]] == ["<module>", "main", "load_settings"]
    ours = frames[2]
    assert ours["file"].endswith("host_program.py") and ours["line"] > 0
    assert frames[-1]["file"].endswith(os.path.join("json", "decoder.py"))
    text = json.dumps(dump)
    assert "secret" not in text and "token" not in text


def test_a_deep_recursion_keeps_its_innermost_frames_and_counts_the_rest(start_host) -> None:
    host = start_host()
    host.wait_ready()
    host.send("recurse")
    assert host.finish() == 1
    exit_ = next(d for d in host.dumps() if d["trigger"] == "host-died")["host"]["exit"]
    assert exit_["exception"] == "RecursionError"
    assert len(exit_["frames"]) == 64
    assert {f["function"] for f in exit_["frames"]} == {"recurse"}
    assert exit_["framesOmitted"] > 900


def test_an_exception_the_repl_survived_is_not_how_it_died(tmp_path: Path) -> None:
    # `python -i`: the exception is printed and the prompt returns; a SIGKILL later is
    # the death, and the postmortem must not blame the exception.
    code = ("import os, signal, watchdog_core\n"
            f"wd = watchdog_core.start_watchdog(diagnostics_dir={str(tmp_path)!r})\n"
            "def f(): raise ValueError('x')\n\n"
            "f()\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-i", "-q"], input=code, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == -signal.SIGKILL
    dump = _wait_dump(tmp_path, "host-died", timeout=30)
    exit_ = dump["host"]["exit"]
    assert (exit_["kind"], exit_["signal"], exit_["exception"]) == ("killed", "SIGKILL", None)
    assert exit_["frames"] == []


def test_an_exception_a_repl_survives_leaves_no_file_behind(tmp_path: Path) -> None:
    # The interactive interpreter calls sys.excepthook and goes on: the frames file it
    # wrote is removed by stop().
    code = ("import sys, watchdog_core\n"
            f"wd = watchdog_core.start_watchdog(diagnostics_dir={str(tmp_path)!r})\n"
            "1/0\n"
            "wd.stop()\n"
            "import os\n"
            f"print(sorted(os.listdir({str(tmp_path)!r})))\n")
    out = subprocess.run([sys.executable, "-i"], input=code, capture_output=True,
                         text=True, timeout=60, check=False)
    assert "ZeroDivisionError" in out.stderr
    listing = out.stdout.strip().splitlines()[-1]
    assert ".exception-" not in listing, listing


@pytest.mark.parametrize("code", ["while True: pass"])
def test_main_thread_stuck_at_module_level(tmp_path: Path, code: str) -> None:
    # The issue's own words: `while True: pass` in a script, hang_after=2.
    script = tmp_path / "agent.py"
    script.write_text(
        "import watchdog_core\n"
        f"wd = watchdog_core.start_watchdog(diagnostics_dir={str(tmp_path / 'd')!r}, "
        "hang_after=2)\n"
        f"{code}\n")
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        dump = _wait_dump(tmp_path / "d", "unresponsive", timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert dump["responsiveness"]["reason"] == "main-thread-stuck"


def _wait_dump(folder: Path, trigger: str, timeout: float) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(folder.glob("memory-*.json")) if folder.is_dir() else []:
            try:
                dump = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if dump["trigger"] == trigger:
                return dump
        time.sleep(0.05)
    raise AssertionError(f"no {trigger} dump in {folder} within {timeout} s")
