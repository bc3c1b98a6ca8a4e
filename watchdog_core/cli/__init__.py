"""The ``watchdog-core`` command: one module per subcommand, each ``run(args, out) -> int``.

Exit codes (docs/cli.md): 0 ok, 1 the thing asked about reports trouble, 2 bad input
with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import stat
import sys
from typing import NoReturn, TextIO

from .. import __version__


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit 2."""


# What a terminal would act on rather than show: C0 controls (ESC starts a sequence that
# retitles the window or clears the screen; newline and tab break a line or a column),
# DEL, the C1 controls, the line and paragraph separators, the bidi controls that reorder
# what follows them (U+202E shows "exe.txt" for "txt.exe"), and lone surrogates (a file
# name that is not UTF-8, which no terminal encoding can write).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")


def printable(text: object) -> str:
    """``text`` as it may reach a terminal: each character of ``_UNPRINTABLE`` written as
    ``\\xNN`` or ``\\uNNNN``, so untrusted text (a ring's header, a dump's fields, a file
    name) can neither drive the terminal nor make one field look like two lines. A
    display form, not an encoding: a backslash already in the text is left as it is."""
    return _UNPRINTABLE.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# JSON has no NaN or infinities: they are written as these strings, as a dump writes them
# (_diagnostics.NON_FINITE, which needs pydantic; this is the stdlib's copy).
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def json_text(document: object) -> str:
    """``document`` as the CLI prints JSON: strict (a non-finite float becomes ``"NaN"``,
    ``"Infinity"`` or ``"-Infinity"``), ASCII only (``\\uNNNN`` escapes, so no terminal
    control and no output encoding can break it), indented, with a final newline."""
    return json.dumps(_finite(document), indent=2, ensure_ascii=True, allow_nan=False,
                      default=str) + "\n"


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE[repr(value)]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def absolute(path: str, what: str) -> str:
    """``path`` made absolute; UsageError when it is relative to a current directory that
    was removed (``os.getcwd()`` fails then)."""
    try:
        return os.path.abspath(path)
    except OSError:
        raise UsageError(f"{what} {path}: relative to a current directory that no longer "
                         "exists") from None


def owner_name(uid: int) -> str:
    """The user name of ``uid``, else ``uid N``."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return f"uid {uid}"


def read_input_file(path: str, limit: int, what: str = "such file") -> bytes:
    """The bytes of a file the user named, at most ``limit`` of them (the largest
    ``what`` its format allows); UsageError for anything else.

    Only a regular file is read: a FIFO would hang, /dev/zero would never end and a
    directory has no bytes, so those are refused from a stat, before they are opened.
    A file larger than ``limit`` is refused before a byte is read, and one that grows
    past it while read is refused too; memory follows the file's size, not ``limit``.
    """
    try:
        _require_regular(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise UsageError(f"cannot read {path}: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        _require_regular(path, st.st_mode)  # swapped for something else since the stat
        if st.st_size > limit:
            raise UsageError(f"{path} is {st.st_size} bytes, more than any {what} "
                             f"({limit} bytes at most)")
        # As many bytes as the stat says and one more, to see the file ends there;
        # pseudo-files (/proc) say 0 and hold more, so read on while there is more.
        data = os.read(fd, st.st_size + 1)
        while data and len(data) <= limit:
            more = os.read(fd, min(1 << 20, limit + 1 - len(data)))
            if not more:
                break
            data += more
        if len(data) > limit:
            raise UsageError(f"{path} grew past {limit} bytes, more than any {what}")
        return data
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {_reason(exc)}") from None
    finally:
        os.close(fd)


def input_directory(path: str, option: str = "--dir") -> str:
    """``path`` made absolute, once it is known to be a directory this process can
    open: a missing one, a file, a loop of symlinks or an unreadable one is bad input."""
    if not path.strip():
        raise UsageError(f"{option} must name a directory")
    directory = absolute(path, option)
    try:
        os.close(os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK
                         | os.O_CLOEXEC))
    except FileNotFoundError:
        raise UsageError(f"{option} {directory}: no such directory") from None
    except NotADirectoryError:
        raise UsageError(f"{option} {directory} is not a directory") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{option} {directory}: {_reason(exc)}") from None
    return directory


def asked_directory(path: str | None) -> str:
    """The diagnostics folder a command was asked about: ``--dir`` (which must be a
    directory), else ``$WATCHDOG_CORE_DIR`` or the state folder (which may not exist
    yet; anything else there is wrong). Absolute, not yet followed down the chain."""
    from .._config import default_diagnostics_dir

    if path is not None:
        return input_directory(path)
    directory = absolute(default_diagnostics_dir(os.environ), "the diagnostics directory")
    if os.path.lexists(directory):
        input_directory(directory, "the diagnostics directory")
    return directory


def where_dumps_go(directory: str) -> tuple[str | None, list[str]]:
    """Where a session asking for ``directory`` writes: ``start_watchdog()``'s fallback
    chain (docs/design.md, "Where files go"), judged without making any folder. The
    folder (None when all are refused) and why each one before it was refused."""
    from .._config import state_diagnostics_dir
    from .._safedir import choose_dir

    return choose_dir(directory, state_diagnostics_dir(os.environ), create=False)


def require_segment_file(name: str) -> None:
    """UsageError unless the shared-memory segment ``name`` is a regular file (or gone:
    the open that follows says so). Anyone may put a FIFO with a segment's name in
    /dev/shm, and _shm's read-only open of it would wait for a writer forever."""
    from .. import _shm

    try:
        mode = os.lstat(os.path.join(_shm._SHM_DIR, name)).st_mode
    except OSError:
        return
    _require_regular(f"segment {name}", mode)


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def _require_regular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
        raise UsageError(f"{path} is {kind}, not a regular file")


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _command_of(argv: list[str], command: str | None) -> str | None:
    """The command named on the line (the first word that is not an option)."""
    return command or next((a for a in argv if not a.startswith("-")), None)


def build_parser(prog: str = "watchdog-core", command: str | None = None
                 ) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, of that one alone, named ``prog``
    (tools/read_ring.py is ``read-ring`` under its own name)."""
    from . import demo, dump, export, gc, ls, read_ring, run, schema, show

    if command is not None:
        modules = (ls, read_ring, show, dump, run, gc, export, schema, demo)
        (module,) = [m for m in modules if command == m.NAME]
        single = _Parser(prog=prog, description=module.HELP)
        module.configure(single)
        single.set_defaults(run=module.run, commands=[command])
        return single
    parser = _Parser(prog=prog, description="A memory-and-crash black box.")
    parser.add_argument("--version", action="version", version=f"watchdog-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (ls, read_ring, show, dump, run, gc, export, schema, demo):
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    parser.set_defaults(run=None, commands=list(commands.choices))
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None, *,
         prog: str = "watchdog-core", command: str | None = None) -> int:
    """Run one command: ``argv`` (default ``sys.argv[1:]``) parsed by ``build_parser(prog,
    command)``; its output to ``out`` (default stdout). Returns the exit code."""
    # A terminal or pipe that is not UTF-8 (PYTHONIOENCODING=latin-1, LANG=C) writes what
    # it cannot encode as \uNNNN instead of failing half-way through the output.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (OSError, ValueError):
                pass
    out = out or sys.stdout
    try:
        parser = build_parser(prog, command)  # inside: a Ctrl-C while it imports is 130
        try:
            args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        except SystemExit as exc:  # --help, --version: printed to stdout already
            return exc.code if isinstance(exc.code, int) else 0
        if args.run is None:
            usage = parser.format_usage().strip().removeprefix("usage: ")
            raise UsageError(f"a command is needed: {', '.join(args.commands)} "
                             f"(usage: {usage}; --help says more)")
        return int(args.run(args, out))
    except UsageError as exc:
        # One line, whatever the user's path held (a newline or an escape in a file name).
        if sys.stderr is not None:  # closed: print() would write it to stdout
            print(f"watchdog-core: error: {printable(exc)}", file=sys.stderr)
        # `run` leaves with its child's status: its own errors are 125, not 2 (docs/run.md).
        return 125 if _command_of(sys.argv[1:] if argv is None else argv,
                                  command) == "run" else 2
    except BrokenPipeError:  # `watchdog-core read-ring ... | head`
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # our output's disk is full, or its file gone: one line
        if exc.filename is not None or sys.stderr is None:
            raise  # a file of ours, not the output: a bug to hear about
        print(f"watchdog-core: error: cannot write the output: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
