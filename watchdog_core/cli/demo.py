"""``watchdog-core demo``: watch a throwaway host build memory pressure and die.

The host (``_demo_host``) starts a watchdog with a small ``memory_limit``,
allocates until it crosses *hard* and *critical*, then SIGKILLs itself. The
demo prints where the dumps went and what they say: two pressure dumps written
while the host lived, and the postmortem written after it died.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import TextIO

from . import UsageError, absolute, input_directory, json_text, printable, read_input_file
from .show import MAX_DUMP_BYTES

NAME = "demo"
HELP = "start a watchdog on a throwaway host, build pressure, show the dumps it wrote"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory (default: a new temp dir)")
    parser.add_argument("--limit", default="256MiB",
                        help="memory_limit of the demo host (default 256MiB)")
    parser.add_argument("--json", action="store_true", help="print the dumps as JSON only")


# A hang guard: with the default limit the demo host is done in a few seconds.
HOST_TIMEOUT = 120.0  # seconds


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._config import parse_size

    try:
        limit = parse_size(args.limit, "--limit")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    most = _physical_memory() // 2
    if most and limit > most:
        # The host allocates up to the limit: past half the machine it would push the
        # machine itself into pressure (or the OOM killer) rather than show it.
        raise UsageError(f"--limit {args.limit} is more than half of this machine's memory "
                         f"({most} bytes at most)")
    directory = (_prepare(args.dir) if args.dir is not None
                 else tempfile.mkdtemp(prefix="watchdog-core-demo-"))
    say = (lambda text: None) if args.json else (lambda text: out.write(text + "\n"))
    say(f"demo host: allocating towards a memory_limit of {printable(args.limit)}; dumps go to "
        f"{printable(directory)}")
    host = subprocess.Popen(
        [sys.executable, "-m", "watchdog_core.cli._demo_host", directory, args.limit],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
    )
    try:
        stdout, stderr = host.communicate(timeout=HOST_TIMEOUT)  # once the watchdog exited too
    except subprocess.TimeoutExpired:
        host.kill()
        host.communicate()
        out.write(f"the demo host did not finish in {HOST_TIMEOUT:.0f} s; it was killed\n")
        return 1
    for line in stdout.splitlines():
        say(f"  host: {printable(line)}")
    for line in stderr.splitlines():
        say(f"  stderr: {printable(line)}")
    say(f"demo host ended with {_describe(host.returncode)}")
    from .._store import DiagnosticsDir

    # Its own dumps only: --dir may hold others'.
    names = [n for n in DiagnosticsDir(directory).list_dumps()
             if n.startswith(f"memory-demo-{host.pid}-")]
    if not names:
        out.write(f"no dump was written to {printable(directory)}\n")
        return 1
    from .._diagnostics import load
    from . import show

    if args.json:
        import json

        docs = [json.loads(_read(directory, n)) for n in names]
        out.write(json_text(docs))
        return 0
    for name in names:
        path = os.path.join(directory, name)
        say(f"\n{printable(path)}")
        show.run(argparse.Namespace(file=path, json=False), out)
    postmortem = [n for n in names if load(_read(directory, n)).trigger == "host-died"]
    if postmortem:
        say(f"\nthe postmortem in full ({postmortem[-1]}):")
        import json

        out.write(json_text(json.loads(_read(directory, postmortem[-1]))))
    return 0


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
