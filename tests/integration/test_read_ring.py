"""The CLI (docs/cli.md): read-ring on saved, live and hostile inputs; show, ls and gc on
what they are given; usage and help. Never a traceback; bad input is exit 2 and one line.
The table of bad inputs per command is tests/integration/test_cli_bad_input.py."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DUMP_NAME, ROOT, minimal_dump
from watchdog_core import _reader, _ring, _shm, _writer
from watchdog_core.cli import main as cli_main

READ_RING = [sys.executable, str(ROOT / "tools" / "read_ring.py")]
CLI = [sys.executable, "-m", "watchdog_core"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                          check=False)


@pytest.fixture(scope="module")
def saved_ring(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A .ring saved by a real watchdog after a real SIGKILL."""
    from tests.conftest import Host

    directory = tmp_path_factory.mktemp("ring") / "diag"
    host = Host(directory, "--stats", json.dumps({"turns": 7, "bytes": 123}),
                "--label", "tool:grep")
    info = host.wait_ready()
    for i in range(30):
        host.send("record " + json.dumps({"turns": 8 + i}))
        assert host.proc.stdout is not None
        host.proc.stdout.readline()
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    (ring,) = directory.glob("*.ring")
    return ring


@pytest.mark.parametrize("command", [READ_RING, [*CLI, "read-ring"]])
def test_saved_ring_text_and_json(saved_ring: Path, command: list[str]) -> None:
    text = run([*command, str(saved_ring), "--last", "5"])
    assert text.returncode == 0, text.stderr
    assert "tool:grep" in text.stdout
    assert text.stdout.count("  #") == 5
    assert "turns=37" in text.stdout  # the newest value
    as_json = run([*command, str(saved_ring), "--json", "--last", "3"])
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    assert doc["header"]["lastLabel"] == "tool:grep"
    assert [s["values"]["turns"] for s in doc["slots"]] == [35, 36, 37]
    assert doc["slots"][-1]["values"]["bytes"] == 123  # carried forward
    assert doc["torn"] == 0


def test_live_ring_by_session_id_and_by_name(start_host) -> None:
    host = start_host("--session", "live-one", "--stats", json.dumps({"x": 1}))
    info = host.wait_ready()
    by_id = run([*CLI, "read-ring", "live-one", "--json"])
    assert by_id.returncode == 0, by_id.stderr
    assert json.loads(by_id.stdout)["slots"][-1]["values"] == {"x": 1}
    by_name = run([*READ_RING, str(info["shm"])])
    assert by_name.returncode == 0 and "x=1" in by_name.stdout
    host.send("stop")
    host.finish()


def test_two_live_rings_for_one_session_id_is_ambiguous(start_host) -> None:
    hosts = [start_host("--session", "twin") for _ in range(2)]
    for h in hosts:
        h.wait_ready()
    result = run([*CLI, "read-ring", "twin"])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "2 live rings" in result.stderr
    for h in hosts:
        h.send("stop")
        h.finish()


def _valid_image() -> bytes:
    writer = _writer.RingWriter(None, 16)
    writer.init_header(session_id="s", host_pid=1, host_start_ticks=0, created_unix_ns=0,
                       created_mono_ns=0, interval=0.25, boot_id="", diagnostics_dir="/d",
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    writer.add_name("a")
    writer.commit(_ring.KIND_RECORD)
    return bytes(writer.buf)


def _wrong_version() -> bytes:
    image = bytearray(_valid_image())
    struct.pack_into("<I", image, 8, 99)
    return bytes(image)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated"),
        (b"garbage" * 100, "bad magic"),
        (os.urandom(20000), "bad magic"),
        (_ring.MAGIC + b"\0" * 100, "truncated"),
        (None, "truncated"),  # a valid ring cut short
        (_wrong_version(), "unsupported ring version 99"),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path: Path, content: bytes | None,
                                        message: str) -> None:
    path = tmp_path / "bad.ring"
    path.write_bytes(_valid_image()[:9000] if content is None else content)
    for command in (READ_RING, [*CLI, "read-ring"]):
        result = run([*command, str(path)])
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["no-such-session", "/no/such/file.ring", "../etc",
                                    "watchdog_core-../x-1", "a/b"])
def test_missing_and_unsafe_targets_exit_2(target: str) -> None:
    result = run([*CLI, "read-ring", target])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_usage_errors_exit_2_with_one_line() -> None:
    for argv in (["read-ring"], ["nope"], ["read-ring", "x", "--last", "-1"],
                 ["read-ring", "x", "--last", "many"]):
        result = run([*CLI, *argv])
        assert result.returncode == 2, argv
        assert result.stderr.count("\n") == 1, (argv, result.stderr)


@pytest.mark.parametrize("command", ["read-ring", "show"])
def test_endless_or_blocking_inputs_exit_2(tmp_path: Path, command: str) -> None:
    """/dev/zero never ends and a FIFO with no writer never answers: refused at once."""
    fifo = tmp_path / "fifo.ring"
    os.mkfifo(fifo)
    for target in ("/dev/zero", str(fifo), str(tmp_path)):
        result = run([*CLI, command, target])
        assert result.returncode == 2, (target, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "not a regular file" in result.stderr


def _limited(megabytes: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
    return limit


def run_limited(argv: list[str], megabytes: int = 1024, cwd: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    """The CLI under an address-space limit and a timeout (a hang guard)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=20,
                          check=False, cwd=cwd, preexec_fn=_limited(megabytes))


def test_a_read_is_bounded_by_the_file_not_by_the_formats_maximum(tmp_path: Path) -> None:
    """A small ring reads in little memory (the largest ring the format allows is
    528 MiB); one byte more than that largest is refused unread, however sparse."""
    small = tmp_path / "small.ring"
    small.write_bytes(_valid_image())
    result = run_limited([*CLI, "read-ring", str(small), "--last", "1"], megabytes=256)
    assert result.returncode == 0, result.stderr
    assert "session   s" in result.stdout
    biggest = _ring.ring_size(_reader.MAX_SLOTS)
    huge = tmp_path / "huge.ring"
    with huge.open("wb") as f:
        f.truncate(biggest + 1)
    result = run_limited([*READ_RING, str(huge)], megabytes=256)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"more than any ring ({biggest} bytes at most)" in result.stderr


def test_read_ring_of_a_bare_name_that_is_no_session_says_what_it_is(tmp_path: Path) -> None:
    """No session by that name: the file of that name is looked at, and refused for
    what it is; a FIFO still never blocks."""
    (tmp_path / "somedir").mkdir()
    os.mkfifo(tmp_path / "somefifo")
    for name, says in (("somedir", "somedir is a directory"), ("somefifo", "is a FIFO")):
        result = run_limited([*CLI, "read-ring", name], cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert says in result.stderr and "no live ring" not in result.stderr


def test_usage_goes_to_stderr_and_help_to_stdout() -> None:
    bare = run([*CLI])
    assert bare.returncode == 2 and bare.stdout == ""
    assert bare.stderr.count("\n") == 1 and "usage: watchdog-core" in bare.stderr
    for argv in ([], ["ls"], ["read-ring"], ["show"], ["gc"], ["schema"], ["demo"]):
        helped = run([*CLI, *argv, "--help"])
        assert helped.returncode == 0 and helped.stderr == "", argv
        assert helped.stdout.startswith(" ".join(["usage: watchdog-core", *argv])), argv


# show -------------------------------------------------------------------------------

STACKS = """\
Thread 0x00007f00000000a1 (most recent call first):
  File "/srv/app/worker.py", line 40 in poll
  File "/usr/lib/python3.11/threading.py", line 975 in run

Current thread 0x00007f00000000b2 (most recent call first):
  File "/srv/app/model.py", line 88 in crunch
  File "/srv/app/main.py", line 12 in handle
  File "/srv/app/main.py", line 3 in <module>
"""
_dump = minimal_dump


def _write_dump(directory: Path, doc: dict[str, object]) -> Path:
    from watchdog_core._diagnostics import Diagnostics

    path = directory / DUMP_NAME
    path.write_bytes(Diagnostics.model_validate(doc).to_json())
    return path


def show(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """show in this process: it writes to the file object it is given."""
    out = io.StringIO()
    code = cli_main(["show", str(path)], out)
    return code, out.getvalue(), capsys.readouterr().err


def _unresponsive(main_thread: str | None = "0x00007f00000000b2",
                  **extras: str) -> dict[str, object]:
    return _dump(trigger="unresponsive", extras=extras, responsiveness={
        "state": "unresponsive", "reason": "main-thread-stuck", "mainThread": main_thread,
        "mainThreadCpu": 0.97, "heartbeatAge": 0.2, "idleSeconds": 31.0})


def test_show_an_unresponsive_dump_with_its_main_threads_stack(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = tmp_path / "memory-s-20261129T000000.000000Z.stacks.txt"
    stacks.write_text(STACKS)
    path = _write_dump(tmp_path, _unresponsive(stacks=stacks.name))
    code, out, err = show(path, capsys)
    assert code == 1 and err == ""  # an unresponsive host is trouble reported
    assert ("  responsive  unresponsive: main-thread-stuck (heartbeat 0.2 s old, idle 31.0 s, "
            "main thread at 97% of a CPU)\n") in out
    stack = out[out.index("  stack "):].splitlines()
    assert stack[:4] == [
        "  stack       main thread 0x00007f00000000b2 (most recent call last):",
        '                File "/srv/app/main.py", line 3, in <module>',
        '                File "/srv/app/main.py", line 12, in handle',
        '                File "/srv/app/model.py", line 88, in crunch',
    ]
    assert stack[4] == f"  stacks      {stacks} (2 threads)"
    assert "worker.py" not in out  # the other threads are in the file, not on screen


def test_show_without_a_known_main_thread_shows_the_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = tmp_path / "x.stacks.txt"
    stacks.write_text(STACKS)
    for main_thread in (None, "0x00000000000000ff"):
        _, out, _ = show(_write_dump(tmp_path, _unresponsive(main_thread, stacks=stacks.name)),
                         capsys)
        assert ("  stack       thread 0x00007f00000000a1, the first in the file (most recent "
                "call last):\n") in out
        assert out.index("threading.py") < out.index("worker.py")


@pytest.mark.parametrize("problem", ["missing", "huge", "fifo", "outside"])
def test_show_says_in_one_line_why_the_stacks_cannot_be_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str) -> None:
    name = "s.stacks.txt"
    if problem == "huge":
        with (tmp_path / name).open("wb") as f:
            f.truncate(10 << 30)
    elif problem == "fifo":
        os.mkfifo(tmp_path / name)
    elif problem == "outside":
        name = "../../etc/passwd"
    code, out, err = show(_write_dump(tmp_path, _unresponsive(stacks=name)), capsys)
    assert code == 1 and err == ""  # the dump is still shown, whole
    (line,) = [x for x in out.splitlines() if x.startswith("  stack")]
    assert line.startswith(("  stacks      cannot show them: ", "  stacks      refused: "))
    assert {"missing": "no such file", "huge": "more than any stacks file",
            "fifo": "is a FIFO", "outside": "not name a file beside the dump"}[problem] in line
    assert "  suggestion  carry on" in out


def test_show_says_why_there_are_no_stacks(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    doc = _unresponsive(None)
    doc["responsiveness"]["stacksMissing"] = "the host no longer catches the stack signal"  # type: ignore[index]
    _, out, _ = show(_write_dump(tmp_path, doc), capsys)
    assert "  stacks      none: the host no longer catches the stack signal\n" in out


def test_show_prints_the_uncaught_exceptions_frames_like_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [{"file": "/srv/app/main.py", "line": 3, "function": "<module>"},
              {"file": "/srv/app/load.py", "line": None, "function": "parse"}]
    host = {"pid": 4242, "alive": False, "exit": {
        "kind": "exited", "exitCode": 1, "exception": "ValueError", "frames": frames,
        "evidence": ["the excepthook saw it"], "confidence": "certain"}}
    code, out, _ = show(_write_dump(tmp_path, _dump(trigger="host-died", host=host)), capsys)
    assert code == 1  # the host is dead
    lines = out[out.index("  exit "):].splitlines()
    assert lines[:5] == [
        "  exit        exited exit code 1 ValueError (certain)",
        "              Traceback (most recent call last):",
        '                File "/srv/app/main.py", line 3, in <module>',
        '                File "/srv/app/load.py", line ?, in parse',
        "              - the excepthook saw it",
    ]


def test_show_prints_the_crashed_threads_native_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crash = ("Fatal Python error: Segmentation fault\n\n"
             "Thread 0x00007f00000000a1 (most recent call first):\n"
             '  File "/srv/app/worker.py", line 9 in loop\n\n'
             "Current thread 0x00007f00000000b2 (most recent call first):\n"
             '  File "/srv/app/native.py", line 40 in call\n'
             '  File "/srv/app/main.py", line 3 in <module>\n\n'
             "Extension modules: numpy (total: 1)\n")
    host = {"pid": 4242, "alive": False, "exit": {
        "kind": "crashed", "signal": "SIGSEGV", "confidence": "certain"}}
    _, out, _ = show(_write_dump(tmp_path, _dump(trigger="host-died", host=host,
                                                 crashTraceback=crash)), capsys)
    lines = out[out.index("  crash "):].splitlines()
    assert lines[:3] == [
        "  crash       Fatal Python error: Segmentation fault",
        '                File "/srv/app/main.py", line 3 in <module>',
        '                File "/srv/app/native.py", line 40 in call',
    ]
    assert "worker.py" not in out


def test_show_names_what_is_wrong_with_a_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    whole = _write_dump(tmp_path, _dump()).read_bytes()
    in_string = whole.index(b'"timestamp') + 5  # a cut inside a key
    cases = {
        "cut.json": (whole[:300], "is not valid JSON (cut short at byte 300)"),
        "cut-in-string.json": (whole[:in_string], f"(cut short at byte {in_string})"),
        "bad-comma.json": (b'{"a": 1,, "b": 2}',
                           "is not valid JSON (expecting property name enclosed in double "
                           "quotes at byte 8)"),
        "one-wrong.json": (json.dumps(_dump(memory={**_dump()["memory"], "rss": "lots"}))
                           .encode(), ": memory.rss: Input should be a valid integer"),
        "two-wrong.json": (json.dumps(_dump(level="dire", trigger="boom")).encode(),
                           ": trigger: Input should be "),
        "other.json": (b'{"schema": "other/v9"}', ": schema: Input should be "
                                                  "'watchdog-core/diagnostics/v1'"),
    }
    for name, (content, says) in cases.items():
        (tmp_path / name).write_bytes(content)
        code, out, err = show(tmp_path / name, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, (name, err)
        assert says in err, (name, err)
    assert "(and 1 more problem)\n" in show(tmp_path / "two-wrong.json", capsys)[2]
    assert "more problem" not in show(tmp_path / "one-wrong.json", capsys)[2]


# ls and gc ----------------------------------------------------------------------------


def test_ls_refuses_a_missing_or_a_file_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for command in ("ls", "gc"):
        for target, says in ((tmp_path / "missing", "no such directory"),
                             (tmp_path / "file", "is not a directory")):
            result = run([*CLI, command, "--dir", str(target)])
            assert result.returncode == 2 and result.stdout == "", (command, result.stdout)
            assert result.stderr.count("\n") == 1 and says in result.stderr


def test_ls_lists_the_dumps_of_each_live_sessions_own_directory(start_host,
                                                                 tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    host = start_host("--session", "ls-elsewhere", directory=elsewhere)
    host.wait_ready()
    dumped = Path(host.ask("dump").removeprefix("dumped "))
    asked = tmp_path / "asked"
    asked.mkdir()
    listed = run([*CLI, "ls", "--dir", str(asked), "--json"])
    assert listed.returncode in (0, 1), listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["directories"][0] == str(asked) and str(elsewhere) in doc["directories"]
    assert {"file": dumped.name, "directory": str(elsewhere)}.items() <= next(
        d for d in doc["dumps"] if d["file"] == dumped.name).items()
    text = run([*CLI, "ls", "--dir", str(asked)]).stdout
    assert f"recent dumps in {elsewhere} (session ls-elsewhere):\n  {dumped.name}  manual" in text
    # The session's directory asked for by name: listed once.
    again = json.loads(run([*CLI, "ls", "--dir", str(elsewhere), "--json"]).stdout)
    assert again["directories"].count(str(elsewhere)) == 1
    assert [d["file"] for d in again["dumps"]].count(dumped.name) == 1
    host.send("stop")
    host.finish()


def test_ls_says_in_words_that_a_watchdog_is_gone(start_host) -> None:
    host = start_host("--session", "ls-lost-watchdog", "--no-restart")
    info = host.wait_ready()
    watchdog = int(info["watchdog_pid"])  # type: ignore[call-overload]
    os.kill(watchdog, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _shm.holders(str(info["shm"])) != (True, False):  # its lock goes with it
        assert time.monotonic() < deadline, "the watchdog's lock outlived it"
        time.sleep(0.01)
    listed = run([*CLI, "ls"])
    (row,) = [x for x in listed.stdout.splitlines() if x.startswith("ls-lost-watchdog ")]
    assert row.endswith(f"{watchdog} gone") and "!" not in row
    host.send("stop")
    host.finish()


def test_ls_reads_dumps_bounded_and_never_blocks(tmp_path: Path) -> None:
    """A FIFO or a 10 GiB file with a dump's name is listed as unreadable, at once."""
    _write_dump(tmp_path, _dump())
    os.mkfifo(tmp_path / "memory-s-20261129T000001.000000Z.json")
    with (tmp_path / "memory-s-20261129T000002.000000Z.json").open("wb") as f:
        f.truncate(10 << 30)
    result = run_limited([*CLI, "ls", "--dir", str(tmp_path)])
    assert result.returncode in (0, 1), result.stderr
    assert f"  {DUMP_NAME}  manual  normal\n" in result.stdout
    assert "memory-s-20261129T000001.000000Z.json  unreadable: " in result.stdout
    assert "is a FIFO" in result.stdout and "more than any dump" in result.stdout


def _segment_name() -> str:
    return f"watchdog_core-cli-test-{os.urandom(4).hex()}-1"


def test_gc_removes_an_unreadable_segment_that_no_one_holds(tmp_path: Path) -> None:
    free = _segment_name()
    Path("/dev/shm", free).write_bytes(b"not a ring at all" * 1000)
    # The same garbage in a segment whose host's lock is held: never touched.
    session = f"cli-held-{os.urandom(3).hex()}"
    held, mapping, lock = _shm.create_segment(session, 4242, 16384)
    mapping[:17] = b"not a ring at all"
    # Never written, lock-free and fresh: perhaps a host between creating and locking it.
    fresh, fresh_map, fresh_lock = _shm.create_segment(f"cli-fresh-{os.urandom(3).hex()}", 1,
                                                       16384)
    _shm.release(fresh_lock)
    fresh_map.close()
    try:
        listed = json.loads(run([*CLI, "ls", "--json"]).stdout)["sessions"]
        assert {"segment": held, "uid": os.geteuid(),
                "error": "not a watchdog-core ring (bad magic)"}.items() <= next(
                    r for r in listed if r["segment"] == held).items()
        # gc is machine-wide: other orphans (other tests') may be unwritable, exit 1.
        dry = run([*CLI, "gc", "--dry-run", "--json", "--dir", str(tmp_path)])
        assert dry.returncode in (0, 1), dry.stderr
        corrupt = {c["segment"]: c for c in json.loads(dry.stdout)["corrupt"]}
        assert corrupt[free]["outcome"] == "found" and held not in corrupt
        assert fresh not in corrupt and _shm.segment_exists(free)
        done = run([*CLI, "gc", "--dir", str(tmp_path)])
        assert done.returncode in (0, 1), done.stderr
        assert (f"removed {free}: an unreadable ring (not a watchdog-core ring (bad magic)) "
                "that no host or watchdog holds\n") in done.stdout
        assert not _shm.segment_exists(free)
        assert _shm.segment_exists(held) and _shm.segment_exists(fresh)
        # Unwritten for long: its host died between creating and writing it.
        old = time.time() - 3600
        os.utime(Path("/dev/shm", fresh), (old, old))
        later = json.loads(run([*CLI, "gc", "--json", "--dir", str(tmp_path)]).stdout)
        assert {"segment": fresh, "problem": "never written: its host died creating it",
                "outcome": "removed"} in later["corrupt"]
        assert _shm.segment_exists(held)
    finally:
        for name in (free, held, fresh):
            _shm.unlink_segment(name)
        mapping.close()
        _shm.release(lock)


def test_a_fifo_named_like_a_segment_never_blocks_ls_read_ring_or_gc(tmp_path: Path) -> None:
    """Anyone may create one in /dev/shm; a read-only open of it waits for a writer."""
    name = _segment_name()
    fifo = Path("/dev/shm", name)
    os.mkfifo(fifo, 0o600)
    try:
        listed = run_limited([*CLI, "ls", "--json", "--dir", str(tmp_path)])
        assert listed.returncode in (0, 1), listed.stderr
        (row,) = [r for r in json.loads(listed.stdout)["sessions"] if r["segment"] == name]
        assert row["error"] == f"segment {name} is a FIFO, not a regular file"
        read = run_limited([*READ_RING, name])
        assert read.returncode == 2 and read.stderr.count("\n") == 1
        assert "is a FIFO" in read.stderr
        collected = run_limited([*CLI, "gc", "--dry-run", "--dir", str(tmp_path)])
        assert collected.returncode in (0, 1), collected.stderr
    finally:
        # A writer's open lets go any reader still waiting (a CLI older than this test).
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        fifo.unlink()
