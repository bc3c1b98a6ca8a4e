"""``watchdog-core ls``: the live sessions on this machine and the recent dumps.

Exit 1 when any session is at hard pressure or above (docs/cli.md: the thing asked
about reports trouble).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, TextIO

from .. import _reader, _ring, _shm
from . import (
    UsageError,
    _reason,
    asked_directory,
    json_text,
    owner_name,
    printable,
    read_input_file,
    where_dumps_go,
)
from .read_ring import map_segment

if TYPE_CHECKING:
    import mmap

NAME = "ls"
HELP = "list live sessions (shared-memory rings) and the most recent dumps"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory whose dumps to list "
                        "(default: $WATCHDOG_CORE_DIR or the XDG state directory)")
    parser.add_argument("--last", type=int, default=10, metavar="N",
                        help="how many recent dumps to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def sessions() -> list[dict[str, object]]:
    """One row per watchdog-core segment on the machine, each with its owner's ``uid``
    and ``user`` (from the segment's file in /dev/shm).

    Whether the host and its watchdog live is read from the segment's locks, never
    from pids: a ring in /dev/shm may belong to another pid namespace, where its
    pid numbers name other processes (docs/design.md). Another user's segment that
    cannot be opened is private to its owner: its row says only whose it is
    (``readable`` false), never that the ring is broken.
    """
    rows: list[dict[str, object]] = []
    now_ns = time.time_ns()
    me = os.geteuid()
    for name in _shm.list_segments():
        uid = _shm.segment_owner(name)
        if uid is None:
            continue  # gone since the listing
        owner: dict[str, object] = {"segment": name, "uid": uid, "user": owner_name(uid)}
        # Mapped, not copied: only the header is read, however large the segment says
        # it is (a hostile one may be any size; one larger than any ring is refused).
        try:
            mapping = map_segment(name)
        except UsageError as exc:
            rows.append({**owner, "error": str(exc)})
            continue
        except FileNotFoundError:
            continue  # gone since the listing
        except _shm.SegmentError:
            continue  # empty: a host is creating it this very moment
        except (OSError, ValueError) as exc:
            if isinstance(exc, PermissionError) and uid != me:  # theirs, private to them
                rows.append({**owner, "readable": False})
            else:
                rows.append({**owner, "error": f"cannot map it: {_reason(exc)}"})
            continue
        try:
            row = _session_row(name, mapping, now_ns)
        finally:
            mapping.close()
        if row is not None:
            rows.append({**owner, **row})
    return rows


def _session_row(name: str, mapping: mmap.mmap, now_ns: int) -> dict[str, object] | None:
    held = _shm.holders(name)
    try:
        image = _reader.RingImage(mapping)
    except _ring.RingError as exc:
        if not mapping[: _ring.HEADER_SIZE].strip(b"\0"):  # a host writes it first
            if held is not None and held[0]:
                return None  # a host is creating it this very moment: nothing to show yet
            return {"segment": name, "error": "never written: its host died creating it"}
        return {"segment": name, "error": str(exc)}
    with image:
        alive, watchdog_alive = held if held is not None else (False, False)
        status = image.status
        last = image.last_record_unix_ns
        return {
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
        }


def recent_dumps(directory: str, last: int) -> list[dict[str, object]]:
    """The newest ``last`` dumps of ``directory`` (by the timestamp in their names),
    oldest first; one that cannot be read is listed with the reason."""
    from .._store import DiagnosticsDir
    from .show import MAX_DUMP_BYTES

    names = DiagnosticsDir(directory).list_dumps()[-last:] if last else []
    out: list[dict[str, object]] = []
    for name in names:
        row: dict[str, object] = {"file": name, "directory": directory}
        try:
            # Bounded and never blocking: a FIFO or a huge file may hold a dump's name.
            doc = json.loads(read_input_file(os.path.join(directory, name), MAX_DUMP_BYTES,
                                             "dump"))
            host = doc.get("host") or {}
            row.update({key: _text_or_none(doc.get(key))
                        for key in ("trigger", "level", "timestamp", "sessionId")})
            row["exit"] = _bounded(host.get("exit"))
        except UsageError as exc:
            row["error"] = str(exc)
        except (ValueError, RecursionError, AttributeError):
            row["error"] = "not a diagnostics file"
        out.append(row)
    return out


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# A dump's host.exit is a few levels deep (exit, frames, frame); an unvalidated file may
# nest anything there, which would take the JSON printer deeper than Python recurses.
_MAX_DEPTH = 8


def _bounded(value: object, depth: int = 0) -> object:
    """``value`` (parsed JSON) as it is, unless it nests deeper than _MAX_DEPTH."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    if isinstance(value, dict):
        return {k: _bounded(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v, depth + 1) for v in value]
    return value


def asked_directories(directory: str) -> list[str]:
    """``directory`` and where a session asking for it writes when it is refused
    (docs/design.md, "Where files go"): its private subfolder when that exists and is
    safe, and the folder the fallback chain ends at when that exists. Nothing is made."""
    from .._safedir import StoreError, open_dir, private_subdir

    found = [directory]
    inside = private_subdir(directory)
    if not os.path.islink(directory) and os.path.lexists(inside):  # the chain's rule
        try:
            os.close(open_dir(inside, create=False))
            found.append(inside)
        except StoreError:
            pass  # another user's, a symlink, open to others: not where ours went
    chosen, _ = where_dumps_go(directory)
    if chosen is not None and os.path.isdir(chosen):
        found.append(chosen)
    return list(dict.fromkeys(found))


def dump_directories(asked: list[str], rows: list[dict[str, object]]
                     ) -> dict[str, list[str]]:
    """The ``asked`` directories and every listed session's own diagnostics directory
    (from its ring's header), each once, with the sessions that write there."""
    found: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for folder in asked:
        found.setdefault(seen.setdefault(os.path.realpath(folder), folder), [])
    for r in rows:
        where = r.get("diagnosticsDir")
        if not isinstance(where, str):
            continue
        key = seen.setdefault(os.path.realpath(where), where)
        found.setdefault(key, []).append(str(r["sessionId"]))
    return found


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.last < 0:
        raise UsageError("--last must be >= 0")
    directory = asked_directory(args.dir)
    rows = sessions()
    me = os.geteuid()
    # Only our own sessions' trouble is ours: anyone may plant a segment that says
    # critical and hold its lock, and another user's job is not what we asked about.
    # Their directories are not ours to list either.
    ours = [r for r in rows if r["uid"] == me]
    directories = dump_directories(asked_directories(directory), ours)
    dumps = {d: recent_dumps(d, args.last) for d in directories}
    trouble = any(r.get("level") in ("hard", "critical") and r.get("alive") for r in ours)
    if args.json:
        out.write(json_text({"sessions": rows,
                             "dumps": [d for listed in dumps.values() for d in listed],
                             "directory": directory, "directories": list(directories)}))
        return 1 if trouble else 0
    _print_sessions(rows, out)
    p = printable
    w = out.write
    for where, owners in directories.items():
        whose = (f" (session {', '.join(sorted(set(owners)))})"
                 if owners and where != directory else "")
        w(f"\nrecent dumps in {p(where)}{whose}:\n")
        for d in dumps[where]:
            if "error" in d:
                w(f"  {p(d['file'])}  unreadable: {p(d['error'])}\n")
            else:
                w(f"  {p(d['file'])}  {p(d['trigger'] or '?')}  {p(d['level'] or '')}\n")
        if not dumps[where]:
            w("  (none)\n")
    return 1 if trouble else 0


def _print_sessions(rows: list[dict[str, object]], out: TextIO) -> None:
    """The table of sessions; every string from a segment goes through printable()."""
    p = printable
    me = os.geteuid()
    w = out.write
    w(f"{'SESSION':<24} {'PID':>7} {'ALIVE':<5} {'LEVEL':<8} {'RSS MiB':>8} {'LIMIT MiB':>9} "
      f"{'RATIO':>6} {'IDLE s':>7} {'WATCHDOG':>12}  OWNER\n")
    private: dict[str, int] = {}
    shown = 0
    for r in rows:
        theirs = r["uid"] != me
        if r.get("readable") is False:
            private[str(r["user"])] = private.get(str(r["user"]), 0) + 1
            continue
        shown += 1
        if "error" in r:
            whose = f" ({p(r['user'])}'s)" if theirs else ""
            w(f"{p(r['segment'])}{whose}: unreadable ring ({p(r['error'])})\n")
            continue
        rss = f"{int(r['rss']) / 1048576:.0f}" if r["rss"] is not None else "-"  # type: ignore[call-overload]
        limit = f"{int(r['limit']) / 1048576:.0f}" if r["limit"] else "-"  # type: ignore[call-overload]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        idle = f"{r['lastRecordAge']:.0f}" if r["lastRecordAge"] is not None else "-"
        wd = "-"
        if r["watchdogPid"]:  # "gone": no process holds the watchdog's lock any more
            wd = f"{r['watchdogPid']}" + ("" if r["watchdogAlive"] else " gone")
        line = (f"{str(r['sessionId'])[:24]:<24} {r['hostPid']:>7} "
                f"{'yes' if r['alive'] else 'no':<5} {p(r['level'] or '-'):<8} {rss:>8} "
                f"{limit:>9} {ratio:>6} {idle:>7} {wd:>12}  {p(r['user']) if theirs else ''}")
        w(line.rstrip() + "\n")
    if private:
        counts = ", ".join(f"{n} of {p(user)}" for user, n in sorted(private.items()))
        w(f"(other users' sessions you cannot read: {counts})\n")
    if not shown and not private:
        w("(no live sessions)\n")
