"""Extras at critical (docs/design.md, "Telling the host"): the first critical dump is on
disk first, then the host is asked for every thread's stack and tracemalloc's top
allocation sites, which land beside it and are named in it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import HOST_PROGRAM, ROOT, segment_exists
from watchdog_core import _ring, start_watchdog
from watchdog_core._extras import LATE, PENDING

SECRET = "a private conversation that must never reach a file"
EXTRAS = ("--limit", "160MiB", "--extras", "stacks,tracemalloc", "--tracemalloc-frames", "5")


def _ramp_line() -> int:
    """The line of host_program.py's `pressure` that allocates the ramp."""
    lines = HOST_PROGRAM.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("def pressure(")))
    return next(n for n, line in enumerate(lines[start:], start + 1)
                if "hold.append(bytearray" in line)


def _criticals(host) -> list[dict]:  # type: ignore[no-untyped-def]
    return [d for d in host.dumps() if d["trigger"] == "critical"]


def _wait_for(predicate, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout  # a guard against hanging, not a timing claim
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def _first_critical_where(host, test):  # type: ignore[no-untyped-def]
    def look() -> dict | None:
        found = _criticals(host)
        return found[0] if found and test(found[0]) else None
    return look


def _stem(host, dump: dict) -> str:  # type: ignore[no-untyped-def]
    [path] = [p for p in host.directory.glob("*.json")
              if json.loads(p.read_text())["timestamp"] == dump["timestamp"]]
    return path.name[: -len(".json")]


def test_the_extras_follow_the_first_critical_dump_once(start_host) -> None:
    host = start_host(*EXTRAS, "--cooldown", "0", "--max-dumps", "5",
                      env={"HOST_PRIVATE_HISTORY": SECRET})
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    first = _wait_for(_first_critical_where(host, lambda d: len(d["extras"]) == 2),
                      "the first critical dump naming its extras")
    # A second rise to critical, once the host is back to normal.
    assert host.ask("free") == "freed"

    def level() -> str:
        return str(json.loads(host.ask("status")[len("status "):])["level"])

    _wait_for(lambda: level() == "normal", "the fall back to normal")
    assert host.ask("pressure 1") == "level critical"
    _wait_for(lambda: len(_criticals(host)) == 2, "the second critical dump")
    host.send("stop")
    assert host.finish() == 0
    assert not segment_exists(str(host.info["shm"]))

    critical, second = _criticals(host)
    assert critical == first
    assert critical["collectionComplete"] is True and critical["extrasMissing"] == {}
    stem = _stem(host, critical)
    assert critical["extras"] == {"stacks": f"{stem}.stacks.txt",
                                  "tracemalloc": f"{stem}.tracemalloc.txt"}
    for name in critical["extras"].values():
        path = host.directory / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert SECRET not in path.read_text()
    stacks = (host.directory / critical["extras"]["stacks"]).read_text()
    # faulthandler's format, the main thread first: it waits for our next command.
    assert stacks.splitlines()[1].startswith("Thread 0x")
    assert f'File "{HOST_PROGRAM}", line ' in stacks.split("\n\n")[0]
    sites = (host.directory / critical["extras"]["tracemalloc"]).read_text().splitlines()
    top = [line for line in sites if not line.startswith("#")]
    assert 0 < len(top) <= 50
    assert top[0].rsplit(" ", 2)[0] == f"{HOST_PROGRAM}:{_ramp_line()}"  # the ramp's bytes
    assert int(top[0].rsplit(" ", 2)[1]) > 100 << 20

    # Once per session: the second rise to critical is dumped, with nothing more.
    assert second["extras"] == {} and second["extrasMissing"] == {}
    assert sorted(p.name for p in host.directory.glob("memory-*.txt")) == sorted(
        critical["extras"].values())
    assert not list(host.directory.glob(".tmp-*"))


def test_a_host_that_does_not_answer_is_said_and_a_late_answer_still_counts(
        start_host) -> None:
    host = start_host(*EXTRAS, "--stall-extras")
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    # The dump is on disk, complete, before any extra: only a note says they were asked.
    asked = _wait_for(_first_critical_where(host, lambda d: d["extrasMissing"]),
                      "the note that the extras were asked for")
    assert asked["collectionComplete"] is True and asked["extras"] == {}
    assert asked["extrasMissing"] in ({"stacks": PENDING, "tracemalloc": PENDING},
                                      {"stacks": LATE, "tracemalloc": LATE})
    assert not list(host.directory.glob("memory-*.txt"))
    _wait_for(_first_critical_where(host, lambda d: d["extrasMissing"].get("stacks") == LATE),
              "the note that the host did not answer")
    assert host.ask("unstall") == "unstalled"
    done = _wait_for(_first_critical_where(host, lambda d: len(d["extras"]) == 2),
                     "the late answer named in the dump")
    assert done["extrasMissing"] == {} and done["collectionComplete"] is True
    host.send("stop")
    assert host.finish() == 0


def test_a_host_that_dies_before_it_answers_gets_its_postmortem_at_once(start_host) -> None:
    """The watchdog never waits for the extras: had it waited for an answer, the
    critical dump would say the host did not answer before the postmortem was written."""
    host = start_host(*EXTRAS, "--stall-extras")
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    _wait_for(_first_critical_where(host, lambda d: d["extrasMissing"]),
              "the note that the extras were asked for")
    host.send("kill")
    assert host.finish() == -9
    died = [d for d in host.dumps() if d["trigger"] == "host-died"]
    assert len(died) == 1 and died[0]["collectionComplete"] is True
    assert died[0]["host"]["alive"] is False
    [critical] = _criticals(host)
    assert critical["extrasMissing"] == {"stacks": PENDING, "tracemalloc": PENDING}
    assert critical["extras"] == {}
    assert not segment_exists(str(host.info["shm"]))


def test_an_answer_just_before_death_is_still_named(start_host) -> None:
    """The host answers and dies before the watchdog's next sample: the watchdog looks
    at the answer once more at the death, so the files it wrote are not orphans."""
    host = start_host(*EXTRAS, "--die-after-extras", "--interval", "1")
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    _wait_for(lambda: host.proc.poll() is not None, "the host's death after its answer")
    assert host.finish() == -9
    [critical] = _criticals(host)
    # Each extra is named, or says why not (headroom, say): none is still "asked for".
    assert "stacks" in critical["extras"]
    assert set(critical["extras"]) | set(critical["extrasMissing"]) == {"stacks",
                                                                         "tracemalloc"}
    assert PENDING not in critical["extrasMissing"].values(), critical["extrasMissing"]
    assert all((host.directory / name).exists() for name in critical["extras"].values())
    assert [d["trigger"] for d in host.dumps()].count("host-died") == 1


def test_the_snapshot_is_skipped_without_headroom(start_host) -> None:
    """Critical at 98 %: 3 MiB left under the limit, and a tracemalloc holding 300,000
    traces; a snapshot costing several times that would push the host over."""
    host = start_host(*EXTRAS, env={"WATCHDOG_CORE_SOFT": "0.9", "WATCHDOG_CORE_HARD": "0.95",
                                    "WATCHDOG_CORE_CRITICAL": "0.98"})
    host.wait_ready()
    assert host.ask("litter 300000") == "littered"
    assert host.ask("pressure 1") == "level critical"
    critical = _wait_for(_first_critical_where(
        host, lambda d: "stacks" in d["extras"] and "tracemalloc" in d["extrasMissing"]),
        "the stacks and the skipped snapshot")
    why = critical["extrasMissing"]["tracemalloc"]
    assert why.startswith("skipped: a snapshot needs about "), why
    need, headroom = (int(word) for word in why.split() if word.isdigit())
    assert need > headroom
    assert "tracemalloc" not in critical["extras"]
    assert not list(host.directory.glob("memory-*.tracemalloc.txt"))
    host.send("stop")
    assert host.finish() == 0


def test_a_host_not_tracing_says_so(start_host) -> None:
    host = start_host("--limit", "160MiB", "--extras", "tracemalloc")
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    critical = _wait_for(_first_critical_where(
        host, lambda d: d["extrasMissing"].get("tracemalloc", PENDING) != PENDING),
        "the host's answer")
    assert critical["extras"] == {}
    assert critical["extrasMissing"]["tracemalloc"].startswith("the host was not tracing")
    host.send("stop")
    assert host.finish() == 0
    assert not list(host.directory.glob("memory-*.txt"))


def test_no_extras_unless_asked_for(start_host) -> None:
    host = start_host("--limit", "160MiB")
    host.wait_ready()
    assert host.ask("pressure 1") == "level critical"
    _wait_for(lambda: _criticals(host), "the critical dump")
    words = Path("/dev/shm", str(host.info["shm"])).read_bytes()[: _ring.HEADER_SIZE]
    assert words[_ring.W_EXTRAS_REQUEST * 8 : (_ring.W_EXTRAS_DONE + 1) * 8] == bytes(16)
    host.send("stop")
    assert host.finish() == 0
    [critical] = _criticals(host)
    assert critical["extras"] == {} and critical["extrasMissing"] == {}
    assert sorted(p.suffix for p in host.directory.iterdir()
                  if not p.name.startswith(".")) == [".json", ".json"]


@pytest.mark.parametrize(("argument", "value"), [
    ("extras", "stacks"), ("extras", ("stacks", "heap")), ("extras", None),
    ("tracemalloc_frames", 101), ("tracemalloc_frames", -1), ("tracemalloc_frames", True),
    ("tracemalloc_frames", 2.0)])
def test_bad_arguments_raise(tmp_path: Path, argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=argument):
        start_watchdog(diagnostics_dir=tmp_path / "d", **{argument: value})  # type: ignore[arg-type]


def test_tracemalloc_frames_starts_tracing_only_when_it_is_off(tmp_path: Path) -> None:
    import tracemalloc

    assert not tracemalloc.is_tracing()
    wd = start_watchdog(diagnostics_dir=tmp_path / "d", tracemalloc_frames=3)
    try:
        assert tracemalloc.is_tracing() and tracemalloc.get_traceback_limit() == 3
    finally:
        wd.stop()
        tracemalloc.stop()
    tracemalloc.start(7)  # the host's own: its limit stays
    try:
        wd = start_watchdog(diagnostics_dir=tmp_path / "d", tracemalloc_frames=3)
        wd.stop()
        assert tracemalloc.get_traceback_limit() == 7
    finally:
        tracemalloc.stop()


IMPORT_PROBE = """
import sys, watchdog_core
before = set(sys.modules)
wd = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[1], extras=("stacks", "tracemalloc"),
                                  tracemalloc_frames=5)
after = sorted(set(sys.modules) - before)
wd.stop()
print(" ".join(after))
"""


def test_asking_for_extras_costs_the_host_no_heavy_import(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(tmp_path / "d")],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    loaded = set(out.stdout.split())
    assert "watchdog_core._extras" in loaded and "_tracemalloc" in loaded
    assert not loaded & {"tracemalloc", "traceback", "linecache", "pickle", "re", "enum",
                         "pydantic", "threading", "logging"}, loaded


def test_the_stacks_hold_code_positions_never_values() -> None:
    import threading

    from watchdog_core._extras import stacks_text

    ready, done = threading.Event(), threading.Event()

    def holding_a_secret(secret: str) -> None:
        ready.set()
        done.wait(30)
        assert secret

    worker = threading.Thread(target=holding_a_secret, args=(SECRET,))
    worker.start()
    try:
        assert ready.wait(30)
        text = stacks_text(skip=threading.get_ident())
    finally:
        done.set()
        worker.join()
    assert SECRET not in text
    assert not [line for line in text.splitlines()  # the thread writing it is left out
                if line.endswith(" in test_the_stacks_hold_code_positions_never_values")]
    assert f"Thread 0x{worker.ident:016x} (most recent call first):" in text
    assert "holding_a_secret" in text


def test_an_extra_is_never_written_over_a_file_already_there(tmp_path: Path) -> None:
    from watchdog_core._extras import FAILED, WRITTEN, _write

    target = tmp_path / "elsewhere"
    target.write_text("theirs")
    (tmp_path / "memory-s-1.stacks.txt").symlink_to(target)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _write(dir_fd, "memory-s-1.stacks.txt", "ours") == FAILED
        assert _write(dir_fd, "memory-s-2.stacks.txt", "ours") == WRITTEN
    finally:
        os.close(dir_fd)
    assert target.read_text() == "theirs"
    written = tmp_path / "memory-s-2.stacks.txt"
    assert written.read_text() == "ours" and stat.S_IMODE(written.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".tmp-*"))
