"""The CLI against what others planted (docs/cli.md, "Untrusted text" and "Whose sessions").

A ring's header, a dump's fields and a file name are written by whoever made them: any
user may put a segment in /dev/shm, any program may write a JSON file. Nothing of theirs
may drive the terminal, fake a line, break the JSON, decide the exit code of another
user's ``ls``, or make a command fail with a traceback. Real segments, real files, real
processes; the other user is uid 65534 (nobody), by chown as root or by setpriv.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DUMP_NAME, ROOT, minimal_dump
from watchdog_core import _reader, _ring, _shm, _writer
from watchdog_core.cli import main as cli_main

CLI = [sys.executable, "-m", "watchdog_core"]
READ_RING = [sys.executable, str(ROOT / "tools" / "read_ring.py")]
NOBODY = 65534
TIMEOUT = 60  # seconds; a hang guard only

# What must never reach a terminal raw (docs/cli.md, "Untrusted text"), written here
# independently of the code: C0 but the newline that ends a line, DEL, C1, the line and
# paragraph separators, the bidi marks and overrides, lone surrogates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                 "\u2066-\u2069\ud800-\udfff]")
EVIL = "\x1b]0;PWNED\x07\x1b[2J\nfake line\r\t\x7f\x85\u202e\u2028\u2066"
ESCAPED = "\\x1b]0;PWNED\\x07\\x1b[2J\\x0afake line\\x0d\\x09\\x7f\\x85\\u202e\\u2028\\u2066"


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
        prefix: list[str] | None = None, limit_mib: int | None = None
        ) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_mib is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))

    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*(prefix or []), *argv], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=TIMEOUT, check=False,
                          errors="surrogateescape", preexec_fn=limit)


def assert_printable(text: str) -> None:
    found = RAW.search(text)
    assert found is None, f"raw {found.group()!r} at {found.start()}: {text[:2000]!r}"


def one_error_line(result: subprocess.CompletedProcess[str], says: str = "") -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("watchdog-core: error: "), result.stderr
    assert "Traceback" not in result.stderr and "[Errno" not in result.stderr
    assert_printable(result.stderr)
    assert says in result.stderr, result.stderr


def strict_json(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# -- rings and segments -------------------------------------------------------------------

def ring_image(session: str = "clihost", *, directory: str = "/d", level: int | None = None,
               ratio: float = 0.5, label: str | None = None, exception: str | None = None,
               stat: str = "x") -> bytes:
    """A ring as a host and its watchdog write it; ``level`` 0-3 writes a status block."""
    writer = _writer.RingWriter(None, 16)
    writer.init_header(session_id=session, host_pid=4242, host_start_ticks=0,
                       created_unix_ns=time.time_ns(), created_mono_ns=0, interval=0.25,
                       boot_id="", diagnostics_dir=directory,
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    writer.add_name(stat)
    writer.commit(_ring.KIND_RECORD)
    if label is not None:
        writer.set_label(_ring.encode_label(label))
        writer.commit(_ring.KIND_MARK, _ring.encode_label(label))
    if exception is not None:
        writer.set_exception(exception)
    if level is not None:
        _ring.write_status(writer.buf, writer.words, _ring.encode_status(
            level, ratio, 10 << 30, 10 << 30, 11 << 30, 0.0, None, "configured",
            time.time_ns(), 5))
    return bytes(writer.buf)


class Segments:
    """Segments planted in /dev/shm (named watchdog_core-clihost-*), removed at the end;
    ``hold`` takes a host's lock on one, as a live host would."""

    def __init__(self) -> None:
        self.tag = os.urandom(3).hex()
        self.names: list[str] = []
        self.fds: list[int] = []

    def plant(self, content: bytes | int, *, n: int = 1, session: str = "s",
              uid: int | None = None, mode: int = 0o644) -> str:
        name = f"watchdog_core-clihost-{self.tag}-{session}-{n}"
        path = Path("/dev/shm", name)
        self.names.append(name)
        with path.open("wb") as f:
            if isinstance(content, int):
                f.truncate(content)  # sparse: tmpfs gives pages only when written
            else:
                f.write(content)
        path.chmod(mode)
        if uid is not None:
            os.chown(path, uid, -1)
        return name

    def session(self, session: str = "s") -> str:
        return f"clihost-{self.tag}-{session}"

    def hold(self, name: str) -> None:
        fd = os.open(Path("/dev/shm", name), os.O_RDWR)
        self.fds.append(fd)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                    struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _shm.HOST, 1, 0))

    def remove(self, name: str) -> None:
        Path("/dev/shm", name).unlink(missing_ok=True)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        for name in self.names:
            self.remove(name)


@pytest.fixture
def segments() -> Iterator[Segments]:
    if not os.path.isdir("/dev/shm"):
        pytest.skip("needs /dev/shm (Linux)")
    planted = Segments()
    yield planted
    planted.close()


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="planting another user's segment needs chown (root)")


def as_nobody() -> list[str]:
    """The prefix that runs a command as nobody, or a skip where that cannot run here."""
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to run a command as nobody")
    probe = run([*prefix, sys.executable, "-c", "import watchdog_core, os; print(os.geteuid())"],
                cwd="/")
    if probe.stdout.strip() != str(NOBODY):
        pytest.skip(f"nobody cannot run this interpreter here: {probe.stderr[-200:]}")
    return prefix


# -- dumps -------------------------------------------------------------------------------

dump = minimal_dump




def write(directory: Path, doc: object, name: str = DUMP_NAME) -> Path:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def show(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    out = io.StringIO()
    code = cli_main(["show", *flags, str(path)], out)
    return code, out.getvalue(), capsys.readouterr().err


# 1. Untrusted text ------------------------------------------------------------------------

def test_show_escapes_every_string_of_a_dump(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.stacks.txt").write_text(
        'Current thread 0x1 (most recent call first):\n  File "a\x1b[2J\x00", line 1 in f\n')
    host = {"pid": 4242, "alive": False, "python": EVIL, "argv": [EVIL, "b"], "exit": {
        "kind": "exited", "exitCode": 1, "exception": EVIL, "signal": EVIL,
        "frames": [{"file": EVIL, "line": 3, "function": EVIL}], "evidence": [EVIL],
        "confidence": "certain"}}
    doc = dump(trigger="unresponsive", sessionId=EVIL, lastActivity=EVIL, session={EVIL: 1},
               suggestion=EVIL, host=host, crashTraceback=f"{EVIL}\n", reason=EVIL,
               memory={**dump()["memory"], "limitSource": EVIL},  # type: ignore[dict-item]
               riskDetails=[{"id": EVIL, "severity": EVIL, "message": EVIL, "value": 1,
                             "threshold": 2}],
               ring={"slots": 1, "records": 1, "file": EVIL},
               responsiveness={"state": "unresponsive", "reason": "idle",
                               "mainThread": EVIL, "stacksMissing": EVIL},
               extras={"stacks": "s.stacks.txt"})
    code, out, err = show(write(tmp_path, doc), capsys)
    assert code == 1 and err == ""
    assert_printable(out)
    assert f"  suggestion  {ESCAPED}\n" in out
    assert f"argv {ESCAPED} b" in out and f"  stat        {ESCAPED} = 1\n" in out
    assert f'File "{ESCAPED}", line 3, in {ESCAPED}' in out
    assert 'File "a\\x1b[2J\\x00", line 1, in f' in out  # from the stacks file


def test_show_json_is_ascii_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    code, out, _ = show(write(tmp_path, dump(suggestion=EVIL, sessionId="\u2603")), capsys,
                        "--json")
    assert code == 0 and out.isascii()
    assert strict_json(out)["suggestion"] == EVIL  # type: ignore[index]


def test_read_ring_escapes_what_the_ring_holds(tmp_path: Path) -> None:
    path = tmp_path / "evil.ring"
    path.write_bytes(ring_image(directory="/tmp/" + EVIL, label=EVIL, exception=EVIL,
                                stat="x" + EVIL))
    for command in ([*CLI, "read-ring"], READ_RING):
        text = run([*command, str(path)])
        assert text.returncode == 0, text.stderr
        assert_printable(text.stdout)
        assert f"dir       /tmp/{ESCAPED}\n" in text.stdout
        assert f"activity  {ESCAPED}\n" in text.stdout
        assert f"exception {ESCAPED}\n" in text.stdout
        assert f"[{ESCAPED}] x{ESCAPED}=0\n" in text.stdout
        as_json = run([*command, str(path), "--json"])
        assert as_json.returncode == 0 and as_json.stdout.isascii()
        assert strict_json(as_json.stdout)["header"]["lastLabel"] == EVIL  # type: ignore[index]


def test_ls_escapes_a_rings_directory_and_a_dumps_trigger(tmp_path: Path,
                                                          segments: Segments) -> None:
    segments.plant(ring_image(directory="/tmp/" + EVIL))
    write(tmp_path, {"trigger": EVIL, "level": EVIL, "sessionId": EVIL})
    listed = run([*CLI, "ls", "--dir", str(tmp_path)])
    assert listed.returncode in (0, 1), listed.stderr  # other sessions of this machine
    assert_printable(listed.stdout)
    assert f"recent dumps in /tmp/{ESCAPED} (session clihost):" in listed.stdout
    assert f"  {DUMP_NAME}  {ESCAPED}  {ESCAPED}\n" in listed.stdout
    as_json = run([*CLI, "ls", "--dir", str(tmp_path), "--json"])
    assert as_json.stdout.isascii()
    (row,) = [d for d in strict_json(as_json.stdout)["dumps"]  # type: ignore[index]
              if d["file"] == DUMP_NAME]
    assert row["trigger"] == EVIL


@pytest.mark.parametrize("command", ["show", "read-ring"])
def test_an_error_line_escapes_every_control(tmp_path: Path, command: str) -> None:
    one_error_line(run([*CLI, command, str(tmp_path / f"no{EVIL}such")]),
                   f"no{ESCAPED}such")


# 2. Whose sessions ------------------------------------------------------------------------

def _ours_in_trouble(rows: list[dict[str, object]]) -> bool:
    return any(r.get("uid") == os.geteuid() and r.get("alive")
               and r.get("level") in ("hard", "critical") for r in rows)


@needs_root
def test_another_users_critical_session_is_listed_as_theirs_and_never_decides_the_exit(
        tmp_path: Path, segments: Segments) -> None:
    theirs = segments.plant(ring_image(level=3, ratio=0.99), session="theirs", uid=NOBODY)
    segments.hold(theirs)  # alive: someone holds its host's lock
    listed = run([*CLI, "ls", "--dir", str(tmp_path), "--json"])
    rows = strict_json(listed.stdout)["sessions"]  # type: ignore[index]
    (row,) = [r for r in rows if r["segment"] == theirs]
    assert (row["uid"], row["user"], row["alive"], row["level"]) == (
        NOBODY, "nobody", True, "critical")
    assert listed.returncode == (1 if _ours_in_trouble(rows) else 0), listed.stderr
    text = run([*CLI, "ls", "--dir", str(tmp_path)]).stdout
    assert text.splitlines()[0].endswith("  OWNER")
    assert any(" critical " in x and x.endswith("  nobody") for x in text.splitlines())
    # Ours at critical is trouble, as it always was.
    ours = segments.plant(ring_image(level=3, ratio=0.99), session="ours")
    segments.hold(ours)
    assert run([*CLI, "ls", "--dir", str(tmp_path)]).returncode == 1


def test_a_private_session_of_another_user_is_counted_not_called_broken(
        tmp_path: Path, segments: Segments) -> None:
    nobody = as_nobody()
    mine = segments.plant(ring_image(), session="private", mode=0o600)  # root's, 0600
    place = Path(tempfile.mkdtemp(prefix="clihost-"))
    try:
        place.chmod(0o755)
        listed = run([*nobody, *CLI, "ls", "--dir", str(place), "--json"], cwd="/")
        assert listed.returncode in (0, 1), listed.stderr
        (row,) = [r for r in strict_json(listed.stdout)["sessions"]  # type: ignore[index]
                  if r["segment"] == mine]
        assert row == {"segment": mine, "uid": 0, "user": "root", "readable": False}
        text = run([*nobody, *CLI, "ls", "--dir", str(place)], cwd="/").stdout
        assert mine not in text
        assert re.search(r"\(other users' sessions you cannot read: .*\d+ of root", text)
        read = run([*nobody, *CLI, "read-ring", mine], cwd="/")
        one_error_line(read, f"cannot open segment {mine}: Permission denied (it is root's)")
    finally:
        shutil.rmtree(place)


@needs_root
def test_read_ring_of_a_session_id_prefers_our_own_segment(segments: Segments) -> None:
    session = segments.session("twin")
    theirs = [segments.plant(ring_image(label="theirs"), session="twin", n=n, uid=NOBODY)
              for n in (1, 2)]
    ours = segments.plant(ring_image(label="ours"), session="twin", n=3)
    read = run([*CLI, "read-ring", session, "--json"])
    assert read.returncode == 0, read.stderr
    doc = strict_json(read.stdout)
    assert doc["source"] == ours and doc["uid"] == 0  # type: ignore[index]
    segments.remove(ours)
    ambiguous = run([*CLI, "read-ring", session])
    one_error_line(ambiguous, "2 live rings of other users (none of yours)")
    segments.remove(theirs[1])
    read = run([*CLI, "read-ring", session, "--last", "0"])
    assert read.returncode == 0, read.stderr
    assert read.stdout.startswith(f"ring      {theirs[0]} (nobody's)\n")


# 3. Strict JSON ---------------------------------------------------------------------------

def test_ls_json_is_strict_with_a_nan_ratio_and_a_nan_in_a_dump(tmp_path: Path,
                                                                segments: Segments) -> None:
    nan = segments.plant(ring_image(level=1, ratio=math.nan), session="nan")
    write(tmp_path, '{"trigger": "manual", "host": {"exit": {"kind": "killed", '
                    '"ratio": NaN, "big": 1e999, "deep": [[{"x": -Infinity}]]}}}')
    listed = run([*CLI, "ls", "--dir", str(tmp_path), "--json"])
    assert listed.returncode in (0, 1), listed.stderr
    doc = strict_json(listed.stdout)
    (row,) = [r for r in doc["sessions"] if r["segment"] == nan]  # type: ignore[index]
    assert row["ratio"] == "NaN"
    (found,) = [d for d in doc["dumps"] if d["file"] == DUMP_NAME]  # type: ignore[index]
    assert found["exit"] == {"kind": "killed", "ratio": "NaN", "big": "Infinity",
                             "deep": [[{"x": "-Infinity"}]]}


# 4. Whole numbers bounded -----------------------------------------------------------------

@pytest.mark.parametrize("rss", [10**400, 2**64, 2**63, -1 - 2**63])
def test_show_refuses_a_number_no_dump_holds(tmp_path: Path, rss: int) -> None:
    path = write(tmp_path, dump(memory={**dump()["memory"], "rss": rss}))  # type: ignore[dict-item]
    for flags in ([], ["--json"]):
        one_error_line(run([*CLI, "show", *flags, str(path)]),
                       "is not a watchdog-core diagnostics file: memory.rss: ")


@pytest.mark.parametrize(("where", "value"), [("ring.records", -1), ("memory.vms", -5),
                                              ("session.n", 2**63)])
def test_counts_are_never_negative_and_stats_are_int64(tmp_path: Path, where: str,
                                                       value: int) -> None:
    doc = dump()
    part, key = where.split(".")
    doc[part] = {**doc.get(part, {}), key: value}  # type: ignore[dict-item]
    one_error_line(run([*CLI, "show", str(write(tmp_path, doc))]), f": {where}: ")


def test_the_largest_int64_is_still_a_dump(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    big = 2**63 - 1
    doc = dump(memory={**dump()["memory"], "rss": big, "heapLimit": big},  # type: ignore[dict-item]
               session={"n": big, "low": -(2**63)})
    code, out, err = show(write(tmp_path, doc), capsys)
    assert code == 0 and err == "" and "  stat        n = 9223372036854775807\n" in out


def test_the_schema_bounds_whole_numbers_and_says_how_floats_are_written() -> None:
    schema = json.loads(run([*CLI, "schema"]).stdout)
    rss = schema["$defs"]["MemoryInfo"]["properties"]["rss"]["anyOf"][0]
    assert (rss["type"], rss["minimum"], rss["maximum"]) == ("integer", -(2**63), 2**63 - 1)
    assert schema["$defs"]["RingInfo"]["properties"]["records"]["minimum"] == 0
    assert schema["properties"]["timestamp"]["format"] == "date-time"
    # Every float the model holds may be written as "NaN"/"Infinity"/"-Infinity": no
    # "number" in the schema stands without those strings beside it.
    lone: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            options = node.get("anyOf", [])
            if node.get("type") == "number":
                lone.append(where)
            for option in options:
                if option == {"type": "number"}:
                    assert {"enum": ["NaN", "Infinity", "-Infinity"]} in options, where
            for key, value in node.items():
                if key != "anyOf":
                    walk(value, f"{where}.{key}")
                else:
                    for option in value:
                        if option != {"type": "number"}:
                            walk(option, f"{where}.anyOf")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(schema, "")
    assert lone == []


# 5. A current directory that was removed ---------------------------------------------------

@pytest.mark.parametrize("argv", [["ls", "--dir", "."], ["gc", "--dry-run", "--dir", "."],
                                  ["demo", "--dir", "x"], ["ls"]])
def test_a_relative_path_in_a_removed_directory_is_bad_input(tmp_path: Path,
                                                             argv: list[str]) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    result = run(["sh", "-c", script, "sh", str(gone), *CLI, *argv],
                 env={"WATCHDOG_CORE_DIR": "relative"})
    one_error_line(result, "relative to a current directory that no longer exists")


# 6. Output encodings that are not UTF-8 ------------------------------------------------------

@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_terminal_that_is_not_utf8_gets_escapes_not_a_traceback(tmp_path: Path,
                                                                  encoding: str) -> None:
    path = write(tmp_path, dump(suggestion="\u2603 snow \u00e9", host={
        "pid": 1, "alive": True, "argv": ["\U0001f600"]}))
    ring = tmp_path / "x.ring"
    ring.write_bytes(ring_image(label="\u2603", stat="\u00e9t\u00e9"))
    env = {"PYTHONIOENCODING": encoding, "LC_ALL": "C"}
    for argv in (["show", str(path)], ["show", "--json", str(path)],
                 ["read-ring", str(ring)], ["read-ring", "--json", str(ring)],
                 ["show", str(tmp_path / "\u2603.json")]):
        result = run([*CLI, *argv], env=env)
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        assert result.returncode in (0, 2), (argv, result.stderr)
    shown = run([*CLI, "show", str(path)], env=env).stdout
    assert "\\u2603 snow" in shown and "\\U0001f600" in shown
    missing = run([*CLI, "show", str(tmp_path / "\u2603.json")], env=env)
    one_error_line(missing, "\\u2603.json")


# 7. tools/read_ring.py needs nothing installed ---------------------------------------------

def test_the_tool_reads_json_with_the_stdlib_alone_and_names_itself(tmp_path: Path) -> None:
    bare = [sys.executable, "-S"]  # no site: no site-packages, so no pydantic
    if run([*bare, "-c", "import pydantic"], env={"PYTHONPATH": ""}).returncode == 0:
        pytest.skip("pydantic is importable without site-packages here")
    ring = tmp_path / "x.ring"
    ring.write_bytes(ring_image(level=1, ratio=math.inf))
    tool = [*bare, str(ROOT / "tools" / "read_ring.py")]
    result = run([*tool, str(ring), "--json"], env={"PYTHONPATH": ""}, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["header"]["status"]["ratio"] == "Infinity"  # type: ignore[index]
    helped = run([*tool, "--help"], env={"PYTHONPATH": ""}, cwd=str(tmp_path))
    assert helped.returncode == 0 and helped.stdout.startswith("usage: read_ring.py ")
    one_error_line(run([*tool], env={"PYTHONPATH": ""}, cwd=str(tmp_path)), "target")


# 9. show and show --json agree on the exit code ----------------------------------------------

@pytest.mark.parametrize(("fields", "code"), [
    ({}, 0),
    ({"level": "critical"}, 1),
    ({"host": {"pid": 1, "alive": False}}, 1),
    ({"responsiveness": {"state": "unresponsive", "reason": "idle"}}, 1),
])
def test_show_json_exits_as_show_does(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      fields: dict[str, object], code: int) -> None:
    path = write(tmp_path, dump(**fields))
    assert show(path, capsys)[0] == code
    assert show(path, capsys, "--json")[0] == code


# 10. What pydantic alone would let through ---------------------------------------------------

@pytest.mark.parametrize(("field", "instead", "says"), [
    ('"level": "normal"', '"level": "normal", "level": "critical"',
     "the key 'level' is given twice in one object"),
    ('"rss": 1048576', '"rss": 1048576, "rss": 1', "the key 'rss' is given twice"),
    ('"ratio": 0.25', '"ratio": NaN', 'NaN is not JSON; a dump writes it as "NaN"'),
    ('"interval": 0.25', '"interval": -Infinity', "-Infinity is not JSON"),
])
def test_show_refuses_repeated_keys_and_bare_non_finite_tokens(
        tmp_path: Path, field: str, instead: str, says: str) -> None:
    whole = json.dumps(dump())
    assert field in whole
    path = write(tmp_path, whole.replace(field, instead))
    for flags in ([], ["--json"]):
        one_error_line(run([*CLI, "show", *flags, str(path)]), says)


@pytest.mark.parametrize("timestamp", ["not a time", "2026-13-01T00:00:00.000000Z",
                                       "2026-11-29T00:00:00.000000", "2026-11-29 00:00:00Z",
                                       "2026-11-29T00:00:00.000000+01:00", ""])
def test_show_refuses_a_timestamp_that_is_not_iso_utc(tmp_path: Path, timestamp: str) -> None:
    one_error_line(run([*CLI, "show", str(write(tmp_path, dump(timestamp=timestamp)))]),
                   ": timestamp: ")


def test_show_json_writes_a_nan_ratio_as_the_schema_says(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, dump(memory={**dump()["memory"], "ratio": "NaN"}))  # type: ignore[dict-item]
    code, out, _ = show(path, capsys, "--json")
    assert code == 0 and strict_json(out)["memory"]["ratio"] == "NaN"  # type: ignore[index]


# 11. Ctrl-C at any moment --------------------------------------------------------------------

def test_ctrl_c_while_the_commands_load_is_exit_130_without_a_traceback() -> None:
    """A real SIGINT, sent the moment build_parser() imports the demo command (an audit
    hook names that moment; no sleep and hope)."""
    program = """
import os, signal, sys
def interrupt(event, args):
    if event == "import" and args[0] == "watchdog_core.cli.demo":
        os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(interrupt)
from watchdog_core.cli import main
sys.exit(main(["schema"]))
"""
    result = run([sys.executable, "-c", program])
    assert (result.returncode, result.stderr, result.stdout) == (130, "", "")


# 12. The small ones ------------------------------------------------------------------------

def test_a_bad_retention_variable_is_one_warning_line(tmp_path: Path) -> None:
    result = run([*CLI, "gc", "--dry-run", "--dir", str(tmp_path)],
                 env={"WATCHDOG_CORE_MAX_FILES": "many\x1b[2J", "WATCHDOG_CORE_MAX_BYTES": "x"})
    assert result.returncode in (0, 1), result.stderr  # other orphans of this machine
    lines = [x for x in result.stderr.splitlines() if "WATCHDOG_CORE_MAX" in x]
    assert len(lines) == 2 and result.stderr.count("\n") >= 2
    assert all(x.startswith("watchdog-core: warning: ignoring WATCHDOG_CORE_MAX_")
               for x in lines), result.stderr
    assert "RuntimeWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert_printable(result.stderr)


@pytest.mark.parametrize("target", [".", ".."])
def test_read_ring_of_dot_says_it_is_a_directory(tmp_path: Path, target: str) -> None:
    one_error_line(run([*CLI, "read-ring", target], cwd=str(tmp_path)),
                   f"{target} is a directory, not a regular file")


def test_a_segment_larger_than_any_ring_is_refused_from_its_size(tmp_path: Path,
                                                                 segments: Segments) -> None:
    """Sparse, so free on tmpfs; under a 512 MiB address space a map of it would fail
    as "Cannot allocate memory" instead of saying what is wrong."""
    huge = segments.plant(10 << 30, session="huge")
    says = (f"is 10737418240 bytes, more than any ring "
            f"({_ring.ring_size(_reader.MAX_SLOTS)} bytes at most)")
    one_error_line(run([*CLI, "read-ring", huge], limit_mib=512), says)
    one_error_line(run([*CLI, "read-ring", segments.session("huge")], limit_mib=512), says)
    listed = run([*CLI, "ls", "--dir", str(tmp_path), "--json"], limit_mib=512)
    assert listed.returncode in (0, 1), listed.stderr
    (row,) = [r for r in strict_json(listed.stdout)["sessions"]  # type: ignore[index]
              if r["segment"] == huge]
    assert says in row["error"]


def test_demo_refuses_a_limit_beyond_half_the_machine() -> None:
    # Bounded all the same: a demo that took the limit would allocate towards it.
    one_error_line(run([*CLI, "demo", "--limit", "1000TiB", "--json"], limit_mib=1024),
                   "more than half of this machine's memory")


def test_demo_names_a_signal_the_enum_does_not_know() -> None:
    from watchdog_core.cli.demo import _describe

    assert _describe(-signal.SIGKILL) == "signal SIGKILL"
    assert _describe(-(signal.SIGRTMIN + 3)) == f"signal {signal.SIGRTMIN + 3}"
    assert _describe(3) == "exit status 3"
