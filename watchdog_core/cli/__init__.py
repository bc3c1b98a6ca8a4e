"""The ``watchdog-core`` command: one module per subcommand, each ``run(args, out) -> int``.

Exit codes (docs/cli.md): 0 ok, 1 the thing asked about reports trouble, 2 bad input
with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, TextIO

from .. import __version__


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit 2."""


def read_input_file(path: str, limit: int) -> bytes:
    """The bytes of a file the user named, at most ``limit`` of them: a FIFO would hang
    and /dev/zero would never end, so anything but a regular file is refused."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise UsageError(f"{path} is {st.st_size} bytes, more than any such file "
                             f"({limit} at most)")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from . import demo, gc, ls, read_ring, schema, show

    parser = _Parser(prog="watchdog-core", description="A memory-and-crash black box.")
    parser.add_argument("--version", action="version", version=f"watchdog-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (ls, read_ring, show, gc, schema, demo):
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if not getattr(args, "run", None):
            parser.print_help(out)
            return 2
        return int(args.run(args, out))
    except UsageError as exc:
        print(f"watchdog-core: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `watchdog-core read-ring ... | head`
        return 0
    except KeyboardInterrupt:
        return 130
