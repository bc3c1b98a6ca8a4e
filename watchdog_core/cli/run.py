"""``watchdog-core run [options] -- CMD ARGS...``: watch an unmodified program, of any
language, as its parent (docs/run.md).

Exits with the child's status: its code, or 128+N when signal N killed it; 127 when
CMD is not found, 126 when it cannot be executed, 125 for ``run``'s own errors
before anything starts (bad options included), as ``env`` and ``timeout`` do.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Callable
from typing import TextIO

from . import UsageError

NAME = "run"
HELP = "run a program of any language under a watchdog, as its parent"
# start_watchdog()'s argument names, as its errors name them, and run's options.
_OPTIONS = {"max_dumps_per_session": "--max-dumps", "memory_limit": "--memory-limit",
            "session_id": "--session-id", "hang_after": "--hang-after",
            "diagnostics_dir": "--dir", "interval": "--interval",
            "prometheus_textfile_dir": "--prometheus-textfile", "sentry_dsn": "--sentry-dsn"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [options] -- CMD [ARGS...]"
    parser.add_argument("--dir", metavar="DIR", help="diagnostics folder (default: "
                        "$WATCHDOG_CORE_DIR, else the state folder)")
    parser.add_argument("--session-id", metavar="ID",
                        help="session id (default: CMD's name and 6 hex digits)")
    parser.add_argument("--memory-limit", metavar="SIZE",
                        help="a limit of your own, such as 2GiB, on top of those the "
                             "machine sets")
    parser.add_argument("--soft", type=float, metavar="RATIO", default=0.50)
    parser.add_argument("--hard", type=float, metavar="RATIO", default=0.65)
    parser.add_argument("--critical", type=float, metavar="RATIO", default=0.80)
    parser.add_argument("--interval", type=float, metavar="SECONDS", default=0.25,
                        help="sampling interval (default 0.25)")
    parser.add_argument("--hang-after", type=float, metavar="SECONDS",
                        help="with a Python child that calls start_watchdog(): dump when it "
                             "stops responding for this long")
    parser.add_argument("--max-dumps", type=int, metavar="N", default=3,
                        help="pressure and descendant dumps per session (default 3)")
    parser.add_argument("--prometheus-textfile", metavar="DIR",
                        help="keep the session's metrics in a .prom file in DIR, "
                             "node_exporter's textfile folder (default: "
                             "$WATCHDOG_CORE_PROMETHEUS_DIR, else none)")
    parser.add_argument("--sentry-dsn", metavar="DSN",
                        help="report the child's death by signal to Sentry (default: "
                             "$SENTRY_DSN when $WATCHDOG_CORE_SENTRY=1, else none)")
    parser.add_argument("--no-cgroup", action="store_true",
                        help="never put the tree in a memory cgroup of its own")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                        help="the program and its arguments, after --")


# Interpreters whose program is their first argument: `run -- python train.py` is
# "train", as the session id of that script's own start_watchdog() would be.
_INTERPRETERS = re.compile(r"(python[0-9.]*|pypy[0-9.]*|node|deno|bun|ruby|perl|php|"
                           r"bash|sh|dash|zsh)$")


def program_name(command: list[str], is_file: Callable[[str], bool] | None = None) -> str:
    """The name a person knows the command by: the script, for an interpreter.

    The script is the first argument that is a file (``is_file``, default
    ``os.path.isfile``): an option's value (``python -W sk-...``, ``-X importtime``,
    ``node -r dotenv/config``, ``deno run``) is not, and must never become the name,
    which goes into file names and metric labels. No such file: the interpreter."""
    import os

    name = os.path.basename(command[0])
    if not _INTERPRETERS.match(name):
        return name
    is_file = is_file or os.path.isfile
    args = iter(command[1:])
    for arg in args:
        if arg == "-m":  # python -m pkg.tool: a module's name is code
            return next(args, name).rsplit(".", 1)[-1]
        if arg in ("-c", "-e", "--eval"):
            return name
        if not arg.startswith("-") and is_file(arg):
            return os.path.splitext(os.path.basename(arg))[0] or name
    return name


def run(args: argparse.Namespace, out: TextIO) -> int:
    import os

    from .._config import SessionConfig, readable_session_id
    from .._runner import RunError
    from .._runner import run as run_command

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("run needs a command after --, e.g. watchdog-core run -- python "
                         "train.py")
    if args.dir is not None and os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise UsageError(f"--dir {args.dir} is not a directory")
    if args.prometheus_textfile is not None:
        _check_textfile_dir(args.prometheus_textfile)
    session_id = args.session_id
    if session_id is None:
        session_id = readable_session_id(program_name(command))
    # A bad WATCHDOG_CORE_* value is ignored with a warning: one line of ours each, not
    # Python's two (file, line and source of the warn() call).
    with warnings.catch_warnings(record=True) as ignored:
        warnings.simplefilter("always")
        try:
            config = SessionConfig(
                session_id=session_id,
                diagnostics_dir=args.dir,
                interval=args.interval,
                memory_limit=args.memory_limit,
                soft=args.soft, hard=args.hard, critical=args.critical,
                hang_after=args.hang_after,
                max_dumps_per_session=args.max_dumps,
                prometheus_textfile_dir=args.prometheus_textfile,
                sentry_dsn=args.sentry_dsn,
            )
        except ValueError as exc:
            message = str(exc)
            for argument, option in _OPTIONS.items():  # name the option the user typed
                message = message.replace(argument, option)
            for threshold in ("soft", "hard", "critical"):  # "soft must be ...": the option
                if message.startswith(f"{threshold} must"):
                    message = "--" + message
            raise UsageError(message) from None
        if config.sentry_dsn is not None or config.sentry_reports:
            from .._sentry_host import settings

            config.sentry = settings(config.sentry_dsn, config.sentry_reports,
                                     config.sentry_pressure, os.environ)
    if sys.stderr is not None:
        from . import printable

        for warning in ignored:
            text = str(warning.message).removeprefix("watchdog-core: ")
            print(f"watchdog-core run: warning: {printable(text)}", file=sys.stderr)
    try:
        return run_command(config, command, tree_cgroup=not args.no_cgroup)
    except RunError as exc:
        from . import printable

        if sys.stderr is not None:  # closed: never into stdout, the child's
            print(f"watchdog-core run: {printable(exc)}", file=sys.stderr)
        return exc.code


def _check_textfile_dir(path: str) -> None:
    """A folder asked for on the command line is checked before anything starts, as
    the watchdog will judge it: missing, a symlink or open to every user is run's own
    error (exit 125)."""
    import os

    from .._textfile import TextfileError, open_folder

    try:
        os.close(open_folder(path))
    except TextfileError as exc:
        raise UsageError(f"--prometheus-textfile: {exc}") from None
