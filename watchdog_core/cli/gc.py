"""``watchdog-core gc``: recover orphaned rings and prune the directory by retention."""

from __future__ import annotations

import argparse
import json
import os
from typing import TextIO

from . import UsageError

NAME = "gc"
HELP = "recover orphaned rings (host and watchdog gone) and prune old dumps"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory to prune (default: "
                        "$WATCHDOG_CORE_DIR or the XDG state directory)")
    parser.add_argument("--max-files", type=int, default=None,
                        help="dump sets to keep (default 100 or $WATCHDOG_CORE_MAX_FILES)")
    parser.add_argument("--max-bytes", default=None,
                        help="bytes to keep, e.g. 256MiB (default or $WATCHDOG_CORE_MAX_BYTES)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._config import _retention, default_diagnostics_dir
    from .._recovery import recover_orphans
    from .._store import DiagnosticsDir, StoreError

    try:
        max_files, max_bytes = _retention(os.environ, args.max_files, args.max_bytes)
    except ValueError as exc:
        raise UsageError(str(exc).replace("max_files", "--max-files")
                         .replace("max_bytes", "--max-bytes")) from None
    if args.dir is not None and not args.dir.strip():
        raise UsageError("--dir must name a directory")
    directory = os.path.abspath(args.dir or default_diagnostics_dir(os.environ))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--dir {directory} is not a directory")
    recovered = recover_orphans(dry_run=args.dry_run)
    store = DiagnosticsDir(directory, max_files=max_files, max_bytes=max_bytes)
    pruned: list[str] = []
    error = None
    if os.path.isdir(directory):
        try:
            pruned = store.prune(dry_run=args.dry_run)
        except StoreError as exc:
            error = str(exc)
    result = {"dryRun": args.dry_run,
              "orphans": [{"segment": s, "postmortem": p, "outcome": o} for s, p, o in recovered],
              "pruned": pruned, "directory": directory, "error": error}
    unwritten = [s for s, _, o in recovered if o in ("kept", "dropped")]
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        for segment, path, outcome in recovered:
            out.write(_ORPHAN_LINES[outcome].format(segment=segment, path=path) + "\n")
        verb = "would remove" if args.dry_run else "removed"
        for name in pruned:
            out.write(f"{verb} {os.path.join(directory, name)}\n")
        if error:
            out.write(f"cannot prune: {error}\n")
        if not recovered and not pruned and not error:
            out.write("nothing to do\n")
    return 1 if error or unwritten else 0


_ORPHAN_LINES = {
    "written": "recovered {segment} -> {path}",
    "clean": "removed {segment} (it had ended cleanly: nothing to write)",
    "kept": "cannot write the postmortem of {segment} yet (see the line above); it stays "
            "in shared memory",
    "dropped": "removed {segment} unwritten: its diagnostics directory is refused",
    "found": "would recover {segment}",
}
