"""``watchdog-core demo``: watch a throwaway host build memory pressure and die.

The host (``_demo_host``) starts a watchdog with a small ``memory_limit`` and
grows towards it, slowly enough to watch: its status line after every step, each
pressure dump as the watchdog writes it (at *hard* and *critical*), then it SIGKILLs
itself. The demo passes those lines on as they come, then shows the postmortem the
watchdog wrote after the death (``show``), and its HTML page once ``show`` has
``--html`` (``html_page``).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, TextIO

from . import UsageError, absolute, input_directory, json_text, printable, read_input_file
from .show import MAX_DUMP_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "demo"
HELP = "start a watchdog on a throwaway host, build pressure, show the dumps it wrote"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory (default: a new temp dir)")
    parser.add_argument("--limit", default="256MiB",
                        help="memory_limit of the demo host (default 256MiB)")
    parser.add_argument("--json", action="store_true", help="print the dumps as JSON only")


# A hang guard: with the default limit the demo host is done in about ten seconds.
HOST_TIMEOUT = 120.0  # seconds


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._config import MIN_MEMORY_LIMIT, parse_size

    try:
        limit = parse_size(args.limit, "--limit")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if limit < MIN_MEMORY_LIMIT:  # start_watchdog() would refuse it in the host
        raise UsageError(f"--limit {args.limit} is below the least memory_limit, "
                         f"{MIN_MEMORY_LIMIT >> 20} MiB")
    most = _physical_memory() // 2
    if most and limit > most:
        # The host allocates up to the limit: past half the machine it would push the
        # machine itself into pressure (or the OOM killer) rather than show it.
        raise UsageError(f"--limit {args.limit} is more than half of this machine's memory "
                         f"({most} bytes at most)")
    directory = (_prepare(args.dir) if args.dir is not None
                 else tempfile.mkdtemp(prefix="watchdog-core-demo-"))

    def say(text: str) -> None:  # the story; --json prints the dumps only
        if not args.json:
            out.write(text + "\n")
            out.flush()  # as it happens, also through a pipe

    say(f"demo: a throwaway host grows towards a memory_limit of {printable(args.limit)}; "
        f"its watchdog writes to {printable(directory)}")
    code = _run_host(directory, args.limit, say)
    if code is None:
        out.write(f"the demo host did not finish in {HOST_TIMEOUT:.0f} s; it was killed\n")
        return 1
    say(f"the demo host ended with {_describe(code.returncode)}")
    from .._store import DiagnosticsDir

    # Its own dumps only: --dir may hold others'.
    names = [n for n in DiagnosticsDir(directory).list_dumps()
             if n.startswith(f"memory-demo-{code.pid}-")]
    if not names:
        out.write(f"no dump was written to {printable(directory)}\n")
        return 1
    from .._diagnostics import load

    if args.json:
        import json

        out.write(json_text([json.loads(_read(directory, n)) for n in names]))
        return 0
    postmortems = [n for n in names if load(_read(directory, n)).trigger == "host-died"]
    if postmortems:
        path = os.path.join(directory, postmortems[-1])
        say(f"\nits postmortem, as `watchdog-core show {printable(path)}` shows it:")
        _show([path], out)
        page = html_page(path)
        if page is not None:
            say(f"\nthe HTML page: {printable(page)}")
    else:
        say("\nno postmortem was written")
    say(f"\n{len(names)} dumps in {printable(directory)}; `watchdog-core show --json FILE` "
        "prints one in full")
    return 0


def _run_host(directory: str, limit: str, say: Callable[[str], None]
              ) -> subprocess.Popen[str] | None:
    """Run the demo host, saying each line it (or its watchdog) prints as it comes;
    the ended host, or None when it was killed after HOST_TIMEOUT."""
    host = subprocess.Popen(
        [sys.executable, "-m", "watchdog_core.cli._demo_host", directory, limit],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        host.kill()

    timer = threading.Timer(HOST_TIMEOUT, expire)
    timer.start()
    try:
        assert host.stdout is not None
        # To the end of the pipe: the watchdog shares the host's stderr, so this waits
        # until the watchdog has written the postmortem and exited too.
        for line in host.stdout:
            say(f"  {printable(line.rstrip(chr(10)))}")
        host.wait()
    finally:
        timer.cancel()
        if host.poll() is None:  # interrupted: no host is left behind
            host.kill()
            host.wait()
        if host.stdout is not None:
            host.stdout.close()
    return None if expired.is_set() else host


def _show(argv: list[str], out: TextIO) -> int:
    """``watchdog-core show ARGV``, printed to ``out``; parsed by show's own parser, so
    options added to show later have their defaults."""
    from . import build_parser, show

    return int(show.run(build_parser(command="show").parse_args(argv), out))


def html_page(postmortem: str) -> str | None:
    """``show POSTMORTEM --html STEM.html`` beside the postmortem, and the page's path;
    None, silently, while show has no ``--html`` (or when it wrote nothing)."""
    page = os.path.splitext(postmortem)[0] + ".html"
    try:
        _show([postmortem, "--html", page], io.StringIO())  # the path is said by the demo
    except UsageError:
        return None  # this show takes no --html
    return page if os.path.isfile(page) else None


def _prepare(path: str) -> str:
    """The demo's directory, checked before the demo starts: one it may create (not
    its parents), or one that exists and that a watchdog would write to."""
    from .._safedir import DIR_MODE, StoreError, open_dir

    directory = absolute(path, "--dir")
    if path.strip() and not os.path.lexists(directory):
        try:
            os.mkdir(directory, DIR_MODE)
        except OSError as exc:
            raise UsageError(f"cannot create --dir {directory}: {exc.strerror}") from None
    input_directory(path)
    try:
        os.close(open_dir(directory))  # what the host's watchdog will refuse, refused now
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--dir {directory} is not writable")
    return directory


def _read(directory: str, name: str) -> bytes:
    return read_input_file(os.path.join(directory, name), MAX_DUMP_BYTES, "dump")


def _describe(returncode: int) -> str:
    if returncode < 0:
        import signal

        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:  # a real-time signal, say: no name in the enum
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _physical_memory() -> int:
    """The machine's memory in bytes; 0 where it cannot be known."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0
