"""Every command that takes a path, fed what it cannot use (docs/cli.md, "Bad input").

Each (command, input) pair is a test of its own: exit 2, exactly one line on stderr,
nothing on stdout, no traceback anywhere; under a timeout (a hang guard, not a speed
claim) and an address-space limit, so an unbounded read or a blocking open fails the
test instead of the machine.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

CLI = [sys.executable, "-m", "watchdog_core"]
MEMORY_LIMIT = 1 << 30  # bytes of address space: far more than any bounded read needs
TIMEOUT = 20  # seconds; a hang guard only
NOBODY = 65534

FILE_COMMANDS = {
    "read-ring": [*CLI, "read-ring"],
    "show": [*CLI, "show"],
    "tools-read_ring": [sys.executable, str(ROOT / "tools" / "read_ring.py")],
}
DIR_COMMANDS = {
    "ls": [*CLI, "ls", "--dir"],
    "gc": [*CLI, "gc", "--dir"],
    "demo": [*CLI, "demo", "--dir"],
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(argv: list[str], *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WATCHDOG_CORE_DIR="/nonexistent/wdc")
    return subprocess.run([*(_as_nobody() if as_nobody else []), *argv], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT, check=False, cwd="/",
                          preexec_fn=_limit_memory)


def _as_nobody() -> list[str]:
    """The prefix that runs a command as uid and gid 65534, no other groups.

    setpriv(1), not subprocess's user=: on this kind of machine only setpriv's execve
    reaches an interpreter under root's 0700 home (a venv's python links there); once
    running, the process is nobody through and through (execve sets the saved uid).
    """
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _dump_json() -> bytes:
    from watchdog_core._diagnostics import Diagnostics

    return Diagnostics.model_validate({
        "timestamp": "2026-11-29T00:00:00.000000Z", "sessionId": "s", "trigger": "manual",
        "level": "normal", "collectionComplete": True,
        "memory": {"rss": 1, "heapUsed": 1, "heapLimit": 2, "ratio": 0.5,
                   "limitSource": "configured"},
        "host": {"pid": 1, "alive": True}, "suggestion": "none",
        "ring": {"slots": 1, "records": 1}, "watchdog": {"pid": 2, "version": "0", "interval": 1},
    }).to_json()


# What a user may name: each builder makes it under the directory it is given.
def _missing(d: Path) -> str:
    return str(d / "no" / "such")  # no parent either: not even demo may create it


def _missing_newline(d: Path) -> str:
    return str(d / "no" / "such\nthing")  # the message must still be one line


def _directory(d: Path) -> str:
    (d / "a-dir").mkdir()
    return str(d / "a-dir")


def _fifo(d: Path) -> str:
    os.mkfifo(d / "fifo")  # no writer ever: an open or a read of it would block forever
    return str(d / "fifo")


def _file(name: str, content: bytes) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / name).write_bytes(content)
        return str(d / name)
    return make


def _huge(d: Path) -> str:
    with (d / "huge.ring").open("wb") as f:
        f.truncate(10 << 30)  # sparse: 10 GiB that cost no disk
    return str(d / "huge.ring")


def _loop(d: Path) -> str:
    (d / "loop-a").symlink_to(d / "loop-b")
    (d / "loop-b").symlink_to(d / "loop-a")
    return str(d / "loop-a")


def _unreadable_file(d: Path) -> str:
    (d / "secret.json").write_bytes(_dump_json())
    (d / "secret.json").chmod(0)
    return str(d / "secret.json")


def _unreadable_dir(d: Path) -> str:
    (d / "secret").mkdir(mode=0)
    return str(d / "secret")


_DUMP = _dump_json()
INPUTS: dict[str, Callable[[Path], str]] = {
    "missing": _missing,
    "missing-newline": _missing_newline,
    "directory": _directory,
    "fifo": _fifo,
    "dev-zero": lambda d: "/dev/zero",
    "empty": _file("empty.json", b""),
    "truncated-json": _file("cut.json", _DUMP[: len(_DUMP) // 2]),
    "other-schema": _file("other.json", b'{"schema": "other/v9"}'),
    "package-json": _file("package.json", b'{"name": "x", "version": "1.0.0", '
                                          b'"dependencies": {}}'),
    "random-bytes": _file("random.bin", random.Random(9).randbytes(64 << 10)),
    "huge-sparse": _huge,
    "symlink-loop": _loop,
    "unreadable": _unreadable_file,
}
# The same, for --dir: a directory is what they want, one nobody may read is not.
DIR_INPUTS = {**{k: v for k, v in INPUTS.items() if k not in ("directory", "unreadable")},
              "unreadable": _unreadable_dir}

# What the one line must say, where the input decides it.
FILE_SAYS = {
    "missing": "no such file", "missing-newline": "no such file",
    "directory": "is a directory", "fifo": "is a FIFO", "dev-zero": "character device",
    "huge-sparse": "more than any", "symlink-loop": "symbolic links",
    "unreadable": "Permission denied",
}
SHOW_SAYS = {"empty": "is empty", "truncated-json": "cut short at byte",
             "other-schema": "schema: Input should be", "package-json": "Field required",
             "random-bytes": "not valid JSON"}
DIR_SAYS = {"missing": "no such directory", "missing-newline": "no such directory",
            "symlink-loop": "symbolic links", "unreadable": "Permission denied"}


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    """A directory every user may pass through (tmp_path's parents are root's, 0700),
    so that as nobody only the input's own permission is in the way."""
    where = Path(tempfile.mkdtemp(prefix="wdc-bad-input-"))
    where.chmod(0o755)
    yield where
    for p in where.rglob("*"):
        if not p.is_symlink():
            p.chmod(0o700)
    shutil.rmtree(where)


def _can_drop_privileges() -> str | None:
    """Why the unreadable case cannot be run here, or None."""
    if shutil.which("setpriv") is None:
        return "needs setpriv(1) (util-linux) to run the command as nobody"
    probe = subprocess.run([*_as_nobody(), sys.executable, "-c",
                            "import os, watchdog_core; print(os.geteuid(), os.getegid())"],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd="/",
                           capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if probe.stdout.split() != [str(NOBODY), str(NOBODY)]:
        return (f"uid {NOBODY} (nobody) cannot run this interpreter and package here: "
                f"{probe.stderr.strip()[-200:]}")
    return None


def _check(result: subprocess.CompletedProcess[str], says: str | None) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("watchdog-core: error: "), result.stderr
    assert "Traceback" not in result.stderr
    if says is not None:
        assert says in result.stderr, result.stderr


def _case(command: str, kind: str) -> object:
    return pytest.param(command, kind, id=f"{command}-{kind}")


@pytest.mark.parametrize(("command", "kind"),
                         [_case(c, k) for c in FILE_COMMANDS for k in INPUTS])
def test_file_commands_refuse_bad_input(place: Path, command: str, kind: str) -> None:
    as_nobody = kind == "unreadable" and os.geteuid() == 0
    if as_nobody and (why := _can_drop_privileges()):
        pytest.skip(why)
    target = INPUTS[kind](place)
    says = FILE_SAYS.get(kind) or (SHOW_SAYS.get(kind) if command == "show" else None)
    if command != "show" and kind in SHOW_SAYS:
        says = "truncated ring" if kind == "empty" else "bad magic"
    _check(run([*FILE_COMMANDS[command], target], as_nobody=as_nobody), says)


@pytest.mark.parametrize(("command", "kind"),
                         [_case(c, k) for c in DIR_COMMANDS for k in DIR_INPUTS])
def test_dir_commands_refuse_bad_input(place: Path, command: str, kind: str) -> None:
    as_nobody = kind == "unreadable" and os.geteuid() == 0
    if as_nobody and (why := _can_drop_privileges()):
        pytest.skip(why)
    target = DIR_INPUTS[kind](place)
    says = DIR_SAYS.get(kind, "is not a directory")
    if command == "demo" and kind.startswith("missing"):
        says = "cannot create"  # demo makes its directory, never its parents
    _check(run([*DIR_COMMANDS[command], target], as_nobody=as_nobody), says)
