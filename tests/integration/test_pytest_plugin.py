"""`pytest --watchdog` (docs/pytest.md): real pytest runs in child processes.

Each run copies a case file from tests/integration/pytest_plugin/ (named case_*.py so
this suite never collects it) into a project folder of its own, with an empty
pytest.ini and --rootdir, so neither this repo's settings nor its conftest apply; the
project's folder name is unique, so every session, segment and watchdog of a run can be
found by it and cleaned up after.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from watchdog_core import _ring

CASES = Path(__file__).resolve().parent / "pytest_plugin"
TIMEOUT = 60


class PytestRun:
    """A project folder with one case file; ``run()`` starts pytest in it."""

    def __init__(self, tmp_path: Path, case: str) -> None:
        self.project = tmp_path / f"proj{os.urandom(4).hex()}"
        self.project.mkdir()
        shutil.copy(CASES / case, self.project / case)
        (self.project / "pytest.ini").write_text("[pytest]\n")
        self.case = case
        self.diag = tmp_path / "diag"

    def run(self, *args: str, cgroup: Path | None = None, watchdog: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                "--rootdir", str(self.project)]
        if watchdog:
            argv += ["--watchdog", "--watchdog-dir", str(self.diag)]
        argv += [*args, self.case]
        if cgroup is not None:
            # Join the cgroup before Python starts: pytest, its watchdog and its workers
            # are all in it.
            argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh",
                    *argv]
        full_env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("PYTEST_", "WATCHDOG_CORE_"))}
        full_env["PYTHONPATH"] = str(ROOT)
        full_env.update(env or {})
        return subprocess.run(argv, cwd=self.project, capture_output=True, text=True,
                              timeout=TIMEOUT, env=full_env, check=False)

    @property
    def sessions(self) -> str:
        """What every session id of this run starts with."""
        return self.project.name

    def postmortems(self) -> list[tuple[Path, dict[str, object]]]:
        """The host-died dumps, waiting for their watchdogs to finish writing them."""
        deadline = time.monotonic() + 15
        while True:
            found = [(path, json.loads(path.read_text()))
                     for path in sorted(self.diag.glob("memory-*.json"))]
            died = [(p, d) for p, d in found if d["trigger"] == "host-died"]
            if (died and all(d["collectionComplete"] for _, d in died)
                    and not self.watchdogs()) or time.monotonic() > deadline:
                return died
            time.sleep(0.05)

    def watchdogs(self) -> list[int]:
        """Pids of this run's watchdogs still alive: their argv names the segment."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if b"watchdog_core._watchdog" in cmdline and self.sessions.encode() in cmdline:
                pids.append(int(entry))
        return pids

    def segments(self) -> list[str]:
        return [name for name in os.listdir("/dev/shm") if self.sessions in name]

    def cleanup(self) -> None:
        for pid in self.watchdogs():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in self.segments():
            Path("/dev/shm", name).unlink(missing_ok=True)


@pytest.fixture
def pytest_run(tmp_path: Path):  # type: ignore[no-untyped-def]
    runs: list[PytestRun] = []

    def make(case: str) -> PytestRun:
        run = PytestRun(tmp_path, case)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.cleanup()


def ring_slots(ring: Path) -> list[dict[str, object]]:
    result = run_cli("read-ring", str(ring), "--json", "--last", "4096")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["slots"])


def marks(ring: Path) -> list[str]:
    return [str(slot["label"]) for slot in ring_slots(ring) if slot["kind"] == "mark"]


def assert_no_file_holds(directory: Path, secret: bytes) -> None:
    files = [path for path in directory.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert secret not in path.read_bytes(), path


# -- deaths --------------------------------------------------------------------------


@pytest.mark.cgroup
def test_an_oom_killed_run_names_the_test_that_was_running(
        memory_cgroup: Path, pytest_run) -> None:  # type: ignore[no-untyped-def]
    run = pytest_run("case_oom.py")
    began = time.time()
    result = run.run("-q", cgroup=memory_cgroup)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    [(path, doc)] = run.postmortems()
    assert doc["sessionId"].startswith(f"{run.sessions}-")
    exit_ = doc["host"]["exit"]
    assert (exit_["kind"], exit_["signal"]) == ("oom-killed", "SIGKILL")
    assert doc["lastActivity"] == "case_oom.py::test_balloon"
    # When it started, the RSS then, and where it stands in the run, as numbers.
    stats = doc["session"]
    assert (stats["testsStarted"], stats["testsFinished"], stats["testIndex"]) == (3, 2, 2)
    assert 10 << 20 < stats["testRssAtStart"] < 100 << 20
    assert began < stats["testStartedAt"] < time.time()
    # The tests before it are the ring's marks, parameter values replaced by indices.
    assert marks(path.with_suffix(".ring")) == [
        "pytest:collecting", "case_oom.py::test_first", "case_oom.py::test_second[0]",
        "case_oom.py::test_balloon"]
    shown = run_cli("show", str(path))
    assert "activity    case_oom.py::test_balloon" in shown.stdout
    assert f"postmortem written to {path}" in result.stderr
    assert_no_file_holds(run.diag, b"SECRET-PROMPT-123")
    assert not run.segments()


@pytest.mark.cgroup
def test_xdist_names_the_worker_that_died_and_its_test(
        memory_cgroup: Path, pytest_run) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("xdist")
    run = pytest_run("case_oom.py")
    uid = "0123abcd" + os.urandom(12).hex()
    result = run.run("-n", "2", "--testrunuid", uid, cgroup=memory_cgroup)
    assert result.returncode == 1, result.stdout + result.stderr
    [(path, doc)] = run.postmortems()
    worker = re.fullmatch(rf"{run.sessions}-(gw\d+)-0123abcd", str(doc["sessionId"]))
    assert worker is not None, doc["sessionId"]
    assert doc["host"]["exit"]["kind"] == "oom-killed"
    assert doc["lastActivity"] == "case_oom.py::test_balloon"
    # The controller's summary: one line on the worker, how it died, its test, the file.
    line = next(line for line in result.stdout.splitlines()
                if line.startswith(f"worker {worker[1]} died: "))
    assert line.startswith(f"worker {worker[1]} died: oom-killed (SIGKILL) while running "
                           "case_oom.py::test_balloon; rss ")
    assert re.search(r", \d+% of its 200\.0 MiB limit \(cgroup-v[12]\): ", line), line
    assert line.endswith(f": {path}")
    assert_no_file_holds(run.diag, b"SECRET-PROMPT-123")
    assert not run.segments()


@pytest.mark.parametrize("faulthandler", ["pytest's", "ours"])
def test_a_segfaulting_test_is_named_in_a_crashed_postmortem(
        faulthandler: str, pytest_run) -> None:  # type: ignore[no-untyped-def]
    run = pytest_run("case_segfault.py")
    args = ["-p", "no:faulthandler"] if faulthandler == "ours" else []
    result = run.run("-q", *args)
    assert result.returncode == -signal.SIGSEGV, result.stdout + result.stderr
    [(_, doc)] = run.postmortems()
    exit_ = doc["host"]["exit"]
    assert (exit_["kind"], exit_["signal"]) == ("crashed", "SIGSEGV")
    assert doc["lastActivity"] == "case_segfault.py::test_segfault"
    assert doc["session"]["testsStarted"] == 2
    traceback_line = re.compile(r'File ".*case_segfault\.py", line \d+ in test_segfault')
    if faulthandler == "pytest's":
        # pytest's own faulthandler writes the traceback to stderr, and ours stays off.
        assert traceback_line.search(result.stderr)
        assert doc["crashTraceback"] is None
        assert "faulthandler was enabled by the host itself" in " ".join(exit_["evidence"])
    else:
        assert traceback_line.search(str(doc["crashTraceback"]))
        assert "Fatal Python error" not in result.stderr


# -- a run that lives ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_a_passing_run_shows_the_tests_that_grew_and_leaves_nothing(
        workers: int, pytest_run) -> None:  # type: ignore[no-untyped-def]
    if workers:
        pytest.importorskip("xdist")
    run = pytest_run("case_pass.py")
    xdist = ["-n", str(workers), "--dist", "loadfile"] if workers else []
    result = run.run("--watchdog-top", "2", *xdist)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if " watchdog-core " in line)
    section = lines[start + 1 : start + 5]
    assert section[0] == "tests that grew RSS the most (top 2 of 8" + (
        f", across {workers} workers):" if workers else "):")
    where = r"\[gw\d+\] " if workers else ""
    assert re.fullmatch(rf" +\+4[89]\.\d MiB  {where}case_pass\.py::test_keeps_48_mib  "
                        r"\(rss .* MiB -> .* MiB\)", section[1]), section
    assert re.fullmatch(rf" +\+1[67]\.\d MiB  {where}case_pass\.py::test_keeps_16_mib  "
                        r"\(rss .* MiB -> .* MiB\)", section[2]), section
    assert section[3].startswith(f"diagnostics: {run.diag} (session {run.sessions}-")
    assert ("workers " in section[3]) == bool(workers)
    # stop() at the end: no postmortem, no segment, no watchdog left running.
    assert not list(run.diag.glob("memory-*"))
    assert not run.segments()
    assert not run.watchdogs()


def test_a_run_with_failed_tests_is_a_clean_end_too(pytest_run) -> None:  # type: ignore[no-untyped-def]
    # pytest exits 1: without stop() the watchdog would take that for a death.
    run = pytest_run("case_fail.py")
    result = run.run("-q")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no test grew RSS (of 2)" in result.stdout or "of 2):" in result.stdout
    assert not list(run.diag.glob("memory-*"))
    assert not run.segments()
    assert not run.watchdogs()


# -- what reaches a file -----------------------------------------------------------------


def test_parameter_values_reach_no_file(pytest_run) -> None:  # type: ignore[no-untyped-def]
    run = pytest_run("case_params.py")
    result = run.run("-q")
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    [(path, doc)] = run.postmortems()
    assert doc["lastActivity"] == "case_params.py::test_dies"
    # Ids the test's author wrote are kept; every other part is its set's index.
    assert marks(path.with_suffix(".ring")) == [
        "pytest:collecting",
        "case_params.py::test_prompt[0]",
        "case_params.py::test_prompt[1]",
        "case_params.py::test_stacked[0-first]",
        "case_params.py::test_stacked[0-second]",
        "case_params.py::test_stacked[named-first]",
        "case_params.py::test_stacked[named-second]",
        "case_params.py::test_fixtures[0-three-0]",
        "case_params.py::test_fixtures[0-four-0]",
        "case_params.py::test_fixtures[1-three-0]",
        "case_params.py::test_fixtures[1-four-0]",
        "case_params.py::test_ids_function[0]",
        "case_params.py::test_indirect[0]",
        "case_params.py::TestInClass::test_method[0]",
        "case_params.py::test_dies",
    ]
    assert_no_file_holds(run.diag, b"SECRET")


@pytest.mark.skipif(_ring.LABEL_SIZE < 256, reason="the ring keeps labels of 256 bytes "
                    f"from its version with LABEL_SIZE 256; this one keeps {_ring.LABEL_SIZE}")
def test_a_long_node_id_is_kept_whole(pytest_run) -> None:  # type: ignore[no-untyped-def]
    run = pytest_run("case_long_id.py")
    result = run.run("-q")
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    [(path, doc)] = run.postmortems()
    name = ("test_a_very_long_name_that_keeps_going_past_sixty_four_bytes_as_the_names_of_"
            "real_tests_often_do_once_their_module_path_and_class_are_added_in_front_of_"
            "it_too")
    assert doc["lastActivity"] == f"case_long_id.py::{name}[0]"
    assert marks(path.with_suffix(".ring"))[-1] == f"case_long_id.py::{name}[0]"


# -- without --watchdog, and with bad options -------------------------------------------------


def test_without_the_switch_nothing_happens(pytest_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = pytest_run("case_plain.py")
    state = tmp_path / "state"
    result = run.run("-q", watchdog=False, env={
        "WATCHDOG_CORE_DIR": str(run.diag), "XDG_STATE_HOME": str(state)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "watchdog-core" not in result.stdout + result.stderr
    assert not run.diag.exists()
    assert not state.exists()
    assert not run.segments()


@pytest.mark.parametrize(("value", "message"), [
    ("lots", "must be a number of bytes or a size string, got 'lots'"),
    ("1MiB", "must be at least 16 MiB (16777216 bytes), got '1MiB'"),
])
def test_a_bad_memory_limit_is_a_usage_error(value: str, message: str,
                                             pytest_run) -> None:  # type: ignore[no-untyped-def]
    run = pytest_run("case_pass.py")
    result = run.run("--watchdog-memory-limit", value)
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [f"ERROR: --watchdog-memory-limit {message}"]
    assert result.stdout == ""
    assert not run.diag.exists()
    assert not run.segments()
