"""``watchdog-core show FILE``: a dump, readable by a person."""

from __future__ import annotations

import argparse
from typing import TextIO

from . import UsageError, read_input_file

MAX_DUMP_BYTES = 64 << 20  # a dump is a few KiB; its timeline and stacks live elsewhere

NAME = "show"
HELP = "print a diagnostics file for a person"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a memory-*.json diagnostics file")
    parser.add_argument("--json", action="store_true", help="print the validated JSON")


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.1f} MiB"


def run(args: argparse.Namespace, out: TextIO) -> int:
    from pydantic import ValidationError

    from .._diagnostics import load

    raw = read_input_file(args.file, MAX_DUMP_BYTES)
    try:
        dump = load(raw)
    except ValidationError as exc:
        raise UsageError(f"{args.file} is not a watchdog-core diagnostics file "
                         f"({exc.error_count()} problems)") from None
    if args.json:
        out.write(dump.to_json().decode())
        return 0
    m = dump.memory
    w = out.write
    w(f"{dump.trigger} dump of session {dump.session_id} at {dump.timestamp}\n")
    w(f"  level       {dump.level}  (ratio {m.ratio:.3f} of {_mib(m.heap_limit)}, "
      f"{m.limit_source})\n")
    w(f"  memory      rss {_mib(m.rss)}, heap {_mib(m.heap_used)}, uss {_mib(m.uss)}, "
      f"growth {m.growth_bytes_per_second / 1048576:.2f} MiB/s\n")
    host = dump.host
    state = "alive" if host.alive else "dead"
    w(f"  host        pid {host.pid} ({state}), python {host.python}, argv {' '.join(host.argv)}\n")
    if host.exit is not None:
        e = host.exit
        what = e.signal or (f"exit code {e.exit_code}" if e.exit_code is not None else "")
        w(f"  exit        {e.kind} {what} {e.exception or ''}".rstrip()
          + f" ({e.confidence})\n")
        for fact in e.evidence:
            w(f"              - {fact}\n")
    w(f"  activity    {dump.last_activity or '-'}\n")
    for key, value in dump.session.items():
        w(f"  stat        {key} = {value}\n")
    for risk in dump.risk_details:
        w(f"  risk        {risk.id} ({risk.severity}): {risk.message}\n")
    w(f"  suggestion  {dump.suggestion}\n")
    if dump.ring.file:
        w(f"  ring        {dump.ring.file} ({dump.ring.records} records, {dump.ring.torn} torn)\n")
    return 1 if dump.level in ("hard", "critical") or not host.alive else 0
