"""Pressure dumps: one per escalation to hard/critical, within the budget (docs/pressure.md)."""

from __future__ import annotations

import json

import pytest


def _pressure_dumps(host) -> list[dict]:  # type: ignore[no-untyped-def]
    return [d for d in host.dumps() if d["trigger"] in ("hard", "critical")]


def test_crossing_hard_then_critical_writes_one_dump_each(start_host) -> None:
    host = start_host("--limit", "160MiB", "--stats", json.dumps({"historyEntries": 0}))
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    host.send("stop")
    assert host.finish() == 0
    dumps = _pressure_dumps(host)
    assert [d["trigger"] for d in dumps] == ["hard", "critical"]
    hard, critical = dumps
    assert hard["level"] == "hard" and hard["memory"]["ratio"] >= 0.65
    assert critical["memory"]["ratio"] >= 0.80
    assert critical["memory"]["limitSource"] == "configured"
    assert critical["memory"]["heapLimit"] == 160 * 1024 * 1024
    assert critical["session"]["historyEntries"] > 0
    assert critical["lastActivity"] == "pressure:0"
    assert critical["host"]["alive"] is True
    assert critical["collectionComplete"] is True
    assert "heap_used_ratio_high" in critical["risks"]
    assert critical["suggestion"]
    assert critical["timeline"] and critical["timeline"][-1]["t"] <= 0
    assert len(host.dumps()) == 2  # stop() added no postmortem


@pytest.mark.parametrize("max_dumps", [1, 2, 3])
def test_repeated_escalations_respect_the_budget(start_host, max_dumps: int) -> None:
    """Three escalations with no cooldown: at most max_dumps pressure dumps, except that
    the first escalation to critical is always written."""
    host = start_host("--limit", "160MiB", "--max-dumps", str(max_dumps), "--cooldown", "0")
    host.wait_ready()
    assert host.ask("pressure 3") == "level critical"
    host.send("stop")
    assert host.finish() == 0
    triggers = [d["trigger"] for d in _pressure_dumps(host)]
    # Round 1 writes hard (budget) and critical (always the first critical).
    assert triggers[:2] == ["hard", "critical"]
    assert len(triggers) == max(max_dumps, 2)


def test_cooldown_suppresses_dumps_inside_it(start_host) -> None:
    host = start_host("--limit", "160MiB", "--max-dumps", "5", "--cooldown", "3600")
    host.wait_ready()
    assert host.ask("pressure 3") == "level critical"
    host.send("stop")
    host.finish()
    assert [d["trigger"] for d in _pressure_dumps(host)] == ["hard", "critical"]


def test_the_host_can_override_the_suggestion(start_host) -> None:
    text = "Run /compact in this agent before it is killed."
    host = start_host("--limit", "160MiB", "--suggestion", text)
    host.wait_ready()
    host.send("pressure 1")
    assert host.proc.stdout is not None
    host.proc.stdout.readline()
    host.send("stop")
    host.finish()
    assert [d["suggestion"] for d in _pressure_dumps(host)] == [text, text]


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout  # a guard against hanging, not a timing claim
    while not predicate():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


def test_on_pressure_is_called_with_each_new_level(tmp_path) -> None:
    import threading

    from watchdog_core import PressureLevel, start_watchdog

    seen: list[PressureLevel] = []
    changed = threading.Event()

    def on_pressure(level: PressureLevel) -> None:
        seen.append(level)
        changed.set()

    # A limit that puts this very process (the test runner) at ~57 %: soft.
    wd = start_watchdog(diagnostics_dir=tmp_path / "d", memory_limit=int(_rss() / 0.57),
                        interval=0.02, on_pressure=on_pressure)
    try:
        assert changed.wait(60)
        assert seen[0] is PressureLevel.SOFT
    finally:
        wd.stop()


def test_include_children_counts_the_workers_memory(tmp_path) -> None:
    import subprocess
    import sys

    from watchdog_core import start_watchdog

    wd = start_watchdog(diagnostics_dir=tmp_path / "d", include_children=True, interval=0.02)
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; x = bytearray(b'x') * (200 << 20); "
                              "print('ok', flush=True); sys.stdin.readline()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ok"
        own = _rss()

        def counted() -> bool:
            status = wd.status()
            return status is not None and int(status["rss"]) > own + (150 << 20)  # type: ignore[call-overload]

        _wait_for(counted, "the child's 200 MiB in the host's RSS")
    finally:
        child.communicate("\n", timeout=30)
        wd.stop()


def test_a_manual_dump_does_not_hide_an_escalation(start_host) -> None:
    """The sample taken for a manual dump sees the rise first; the next regular check
    must still write the pressure dump."""
    import time

    host = start_host("--limit", "160MiB", "--interval", "2.0")
    host.wait_ready()  # right after the first regular sample: the next is ~2 s away
    assert host.ask("grow 120") == "grown"
    assert host.ask("dump").endswith(".json")
    deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
    while not _pressure_dumps(host):
        assert time.monotonic() < deadline, [d["trigger"] for d in host.dumps()]
        time.sleep(0.05)
    host.send("stop")
    host.finish()
    assert [d["trigger"] for d in _pressure_dumps(host)] == ["critical"]


def test_the_status_line_follows_the_level(start_host) -> None:
    """Empty at normal (a status bar shows nothing), then the memory against the limit
    once the watchdog has graded the host above it."""
    import json
    import time

    host = start_host("--limit", "160MiB")
    host.wait_ready()
    quiet, always = json.loads(host.ask("status-line")[len("line "):])
    assert quiet == "" and always.startswith("mem ") and "/ 160 MiB (" in always
    assert host.ask("grow 120") == "grown"
    deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
    while True:
        quiet, _ = json.loads(host.ask("status-line")[len("line "):])
        if quiet:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert quiet.startswith("mem ") and "/ 160 MiB (" in quiet
    host.send("stop")
    host.finish()


def test_a_rise_is_announced_with_its_dump_and_a_fall_is_logged(start_host) -> None:
    """on_pressure(level, info) and the `watchdog_core` logger on a real ramp: the rise
    is told after its pressure dump is on disk, with its path; the fall back to normal
    is told too, at INFO."""
    import json
    import time
    from pathlib import Path

    host = start_host("--limit", "200MiB", "--announce")
    host.wait_ready()
    assert host.proc.stdout is not None
    lines: list[str] = []

    def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
        while not any(predicate(line) for line in lines):
            assert time.monotonic() < deadline, (what, lines)
            lines.append(host.proc.stdout.readline().strip())

    host.send("grow 160")
    until(lambda line: line.startswith("announce ") and json.loads(line[9:])[0] == "critical",
          "critical")
    level, info = json.loads(lines[-1][9:])
    assert level == "critical" and info["level"] == "critical"
    assert info["limit"] == 200 << 20 and info["limitSource"] == "configured"
    assert 0.8 <= info["ratio"] < 2 and info["rss"] > 160 << 20
    dump = json.loads(Path(info["dump"]).read_text())  # on disk before the announcement
    assert dump["trigger"] == "critical"
    until(lambda line: line.startswith("log") and "WARNING" in line, "the warning")
    (warning,) = [json.loads(line[4:])[1] for line in lines
                  if line.startswith("log") and "WARNING" in line and "critical" in line]
    assert warning.startswith("memory pressure critical: mem ") and info["dump"] in warning
    host.send("free")
    until(lambda line: line.startswith("log") and '"INFO"' in line, "the fall, logged")
    def fell(line: str) -> bool:
        return line.startswith("announce ") and json.loads(line[9:])[0] == "normal"

    until(fell, "the fall")
    fall = json.loads([line for line in lines if fell(line)][-1][9:])[1]
    assert fall["dump"] is None and fall["previous"] in ("soft", "hard", "critical")
    host.send("stop")
    assert host.finish() == 0


def test_a_callback_that_raises_is_said_once_and_still_called(start_host) -> None:
    import time

    host = start_host("--limit", "200MiB", "--announce", "--announce-raise")
    host.wait_ready()
    host.send("grow 160")
    assert host.proc.stdout is not None
    # The announcements may come before the host says it has grown: a glance of the
    # watchdog can see the growth while the host is still filling its pages.
    seen: list[str] = [host.proc.stdout.readline()]
    deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
    while "grown\n" not in seen:
        assert time.monotonic() < deadline, seen
        seen.append(host.proc.stdout.readline())
    while not any('"critical"' in line for line in seen):
        assert time.monotonic() < deadline, seen
        seen.append(host.proc.stdout.readline())
    host.send("free")
    while not any(line.startswith('announce ["normal"') for line in seen):
        assert time.monotonic() < deadline, seen
        seen.append(host.proc.stdout.readline())
    host.send("stop")
    assert host.finish() == 0
    assert host.stderr.count("on_pressure raised KeyError") == 1, host.stderr


def test_without_a_callback_the_warning_still_names_its_dump(start_host) -> None:
    """No callback: the heartbeat sees the change up to a second late, samples later;
    the dump for the rise is still found and named (it was lost at interval 0.1)."""
    import json
    import time
    from pathlib import Path

    host = start_host("--limit", "200MiB", "--interval", "0.1", "--announce", "--log-only")
    host.wait_ready()
    assert host.ask("grow 160") == "grown"
    assert host.proc.stdout is not None
    deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
    while True:
        line = host.proc.stdout.readline()
        assert time.monotonic() < deadline, line
        if line.startswith("log ") and "WARNING" in line:
            break
    message = json.loads(line[4:])[1]
    assert message.startswith("memory pressure critical: mem ")
    path = message.split("; dump ", 1)[1].split(". ", 1)[0]
    assert json.loads(Path(path).read_text())["trigger"] == "critical"
    host.send("stop")
    assert host.finish() == 0


def test_a_host_that_never_imported_threading_still_exits(tmp_path) -> None:
    """logging imports threading; imported first in the announcer's thread, threading
    took that thread for the main one and the interpreter waited for it at exit, for
    ever. A plain script that rises to critical and ends without stop() must exit, and
    nothing of ours imports logging for a host that never did."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = tmp_path / "agent.py"
    script.write_text(
        "import sys, time\n"
        "assert 'threading' not in sys.modules, 'the test needs a host without threading'\n"
        "import watchdog_core\n"
        f"wd = watchdog_core.start_watchdog(diagnostics_dir={str(tmp_path / 'd')!r}, "
        "memory_limit='200MiB', interval=0.1)\n"
        "b = bytearray(b'x') * (170 << 20)\n"
        "deadline = time.monotonic() + 20\n"
        "while wd.level < 3 and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "time.sleep(1.5)  # the announcer has spoken\n"
        "print('exiting', 'logging' in sys.modules, 'threading' in sys.modules)\n")
    probe = subprocess.run([sys.executable, "-c", "import sys; print('threading' in "
                            "sys.modules)"], capture_output=True, text=True, check=True)
    if probe.stdout.strip() != "False":
        import pytest

        pytest.skip("this interpreter imports threading at start-up")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False, env={**__import__("os").environ,
                                                        "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    # Nothing of ours imported logging (no one configured it) nor, through it, threading.
    assert "exiting False False" in done.stdout, done.stdout
