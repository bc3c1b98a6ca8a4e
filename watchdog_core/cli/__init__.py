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
