"""``watchdog-core ls``: the live sessions on this machine and the recent dumps.

Exit 1 when any session is at hard pressure or above (docs/cli.md: the thing asked
about reports trouble).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TextIO

from .. import _reader, _ring, _shm
from .._config import default_diagnostics_dir

NAME = "ls"
HELP = "list live sessions (shared-memory rings) and the most recent dumps"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory whose dumps to list "
                        "(default: $WATCHDOG_CORE_DIR or the XDG state directory)")
    parser.add_argument("--last", type=int, default=10, metavar="N",
                        help="how many recent dumps to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def sessions() -> list[dict[str, object]]:
    """One row per watchdog-core segment on the machine.

    Whether the host and its watchdog live is read from the segment's locks, never
    from pids: a ring in /dev/shm may belong to another pid namespace, where its
    pid numbers name other processes (docs/design.md).
    """
    rows: list[dict[str, object]] = []
    now_ns = time.time_ns()
    for name in _shm.list_segments():
        raw = _shm.read_segment(name)
        if raw is None:
            continue
        held = _shm.holders(name)
        try:
            image = _reader.RingImage(raw)
        except _ring.RingError as exc:
            if held is not None and held[0] and not raw.strip(b"\0"):
                continue  # a host is creating it this very moment: nothing to show yet
            rows.append({"segment": name, "error": str(exc)})
            continue
        alive, watchdog_alive = held if held is not None else (False, False)
        status = image.status
        last = image.last_record_unix_ns
        rows.append({
            "segment": name,
            "sessionId": image.session_id,
            "hostPid": image.host_pid,
            "alive": alive,
            "level": status.level if status else None,
            "rss": status.rss if status else None,
            "limit": status.heap_limit if status else None,
            "limitSource": status.limit_source if status else None,
            "ratio": round(status.ratio, 4) if status else None,
            "lastRecordAge": round((now_ns - last) / 1e9, 1) if last else None,
            "watchdogPid": image.watchdog_pid or None,
            "watchdogAlive": watchdog_alive,
            "diagnosticsDir": image.diagnostics_dir,
        })
    return rows


def recent_dumps(directory: str, last: int) -> list[dict[str, object]]:
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.startswith("memory-") and n.endswith(".json"))
    except OSError:
        return []
    out: list[dict[str, object]] = []
    for name in sorted(names, key=lambda n: _mtime(directory, n))[-last:] if last else []:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                doc = json.loads(f.read())
            out.append({"file": name, "trigger": doc.get("trigger"), "level": doc.get("level"),
                        "timestamp": doc.get("timestamp"), "sessionId": doc.get("sessionId"),
                        "exit": (doc.get("host") or {}).get("exit")})
        except (OSError, ValueError, AttributeError):
            out.append({"file": name, "error": "unreadable"})
    return out


def _mtime(directory: str, name: str) -> float:
    try:
        return os.stat(os.path.join(directory, name)).st_mtime
    except OSError:
        return 0.0


def run(args: argparse.Namespace, out: TextIO) -> int:
    from . import UsageError

    if args.last < 0:
        raise UsageError("--last must be >= 0")
    directory = os.path.abspath(args.dir or default_diagnostics_dir(os.environ))
    rows = sessions()
    dumps = recent_dumps(directory, args.last)
    trouble = any(r.get("level") in ("hard", "critical") and r.get("alive") for r in rows)
    if args.json:
        out.write(json.dumps({"sessions": rows, "dumps": dumps, "directory": directory},
                             indent=2) + "\n")
        return 1 if trouble else 0
    w = out.write
    w(f"{'SESSION':<24} {'PID':>7} {'ALIVE':<5} {'LEVEL':<8} {'RSS MiB':>8} {'LIMIT MiB':>9} "
      f"{'RATIO':>6} {'IDLE s':>7} {'WATCHDOG':>8}\n")
    for r in rows:
        if "error" in r:
            w(f"{r['segment']}: {r['error']}\n")
            continue
        rss = f"{int(r['rss']) / 1048576:.0f}" if r["rss"] is not None else "-"  # type: ignore[call-overload]
        limit = f"{int(r['limit']) / 1048576:.0f}" if r["limit"] else "-"  # type: ignore[call-overload]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        idle = f"{r['lastRecordAge']:.0f}" if r["lastRecordAge"] is not None else "-"
        wd = f"{r['watchdogPid']}" + ("" if r["watchdogAlive"] else "!")
        w(f"{str(r['sessionId'])[:24]:<24} {r['hostPid']:>7} {'yes' if r['alive'] else 'no':<5} "
          f"{r['level'] or '-':<8} {rss:>8} {limit:>9} {ratio:>6} {idle:>7} {wd:>8}\n")
    if not rows:
        w("(no live sessions)\n")
    w(f"\nrecent dumps in {directory}:\n")
    for d in dumps:
        w(f"  {d['file']}  {d.get('trigger', '?')}  {d.get('level', '')}\n")
    if not dumps:
        w("  (none)\n")
    return 1 if trouble else 0
