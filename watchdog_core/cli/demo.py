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

from . import UsageError

NAME = "demo"
HELP = "start a watchdog on a throwaway host, build pressure, show the dumps it wrote"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory (default: a new temp dir)")
    parser.add_argument("--limit", default="256MiB",
                        help="memory_limit of the demo host (default 256MiB)")
    parser.add_argument("--json", action="store_true", help="print the dumps as JSON only")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._config import parse_size

    try:
        parse_size(args.limit, "--limit")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    directory = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="watchdog-core-demo-"))
    say = (lambda text: None) if args.json else (lambda text: out.write(text + "\n"))
    say(f"demo host: allocating towards a memory_limit of {args.limit}; dumps go to {directory}")
    host = subprocess.Popen(
        [sys.executable, "-m", "watchdog_core.cli._demo_host", directory, args.limit],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdout, stderr = host.communicate(timeout=120)  # returns once the watchdog has exited too
    for line in stdout.splitlines():
        say(f"  host: {line}")
    for line in stderr.splitlines():
        say(f"  stderr: {line}")
    say(f"demo host ended with {_describe(host.returncode)}")
    names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    if not names:
        out.write(f"no dump was written to {directory}\n")
        return 1
    from .._diagnostics import load
    from . import show

    if args.json:
        import json

        docs = [json.loads(_read(directory, n)) for n in names]
        out.write(json.dumps(docs, indent=2) + "\n")
        return 0
    for name in names:
        path = os.path.join(directory, name)
        say(f"\n{path}")
        show.run(argparse.Namespace(file=path, json=False), out)
    postmortem = [n for n in names if load(_read(directory, n)).trigger == "host-died"]
    if postmortem:
        say(f"\nthe postmortem in full ({postmortem[-1]}):")
        with open(os.path.join(directory, postmortem[-1])) as f:
            out.write(f.read())
    return 0


def _read(directory: str, name: str) -> bytes:
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def _describe(returncode: int) -> str:
    if returncode < 0:
        import signal

        return f"signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"
