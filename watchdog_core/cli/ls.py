"""``watchdog-core ls``: the live sessions on this machine and the recent dumps.

Exit 1 when any session is at hard pressure or above (docs/cli.md: the thing asked
about reports trouble).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, NamedTuple, TextIO

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
    from collections.abc import Callable, Sequence

NAME = "ls"
HELP = "list live sessions (shared-memory rings) and the most recent dumps"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory whose dumps to list "
                        "(default: $WATCHDOG_CORE_DIR or the XDG state directory)")
    parser.add_argument("--last", type=int, default=None, metavar="N",
                        help="how many recent dumps to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--watch", nargs="?", const="1", metavar="SECONDS",
                        help="a table of the live sessions only, read again every SECONDS "
                        "(default 1) until Ctrl-C")


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
            "growth": status.growth if status else None,
            "secondsToLimit": status.seconds_to_limit if status else None,
            "lastRecordAge": round((now_ns - last) / 1e9, 1) if last else None,
            "lastLabel": image.last_label,
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
    if args.watch is not None:
        from . import _live

        seconds = _live.refresh_seconds(args.watch)
        if args.json:
            raise UsageError("--watch draws a table for a person; for data, run ls --json "
                             "once per look")
        if args.dir is not None or args.last is not None:
            raise UsageError("--watch shows the live sessions only; --dir and --last are "
                             "for the list of dumps")
        return _live.watch(seconds, out)
    last = 10 if args.last is None else args.last
    if last < 0:
        raise UsageError("--last must be >= 0")
    directory = asked_directory(args.dir)
    rows = sessions()
    me = os.geteuid()
    # Only our own sessions' trouble is ours: anyone may plant a segment that says
    # critical and hold its lock, and another user's job is not what we asked about.
    # Their directories are not ours to list either.
    ours = [r for r in rows if r["uid"] == me]
    directories = dump_directories(asked_directories(directory), ours)
    dumps = {d: recent_dumps(d, last) for d in directories}
    trouble = any(r.get("level") in ("hard", "critical") and r.get("alive") for r in ours)
    if args.json:
        out.write(json_text({"sessions": rows,
                             "dumps": [d for listed in dumps.values() for d in listed],
                             "directory": directory, "directories": list(directories)}))
        return 1 if trouble else 0
    out.writelines(line + "\n" for line in session_lines(rows, LS_TABLE))
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


class Column(NamedTuple):
    """A column of a table of sessions: its header, the format spec of its cells
    (``"<24"``, ``">7"``), its cell from a row of ``sessions()`` (every string from a
    segment through printable()), and the space before it."""

    header: str
    spec: str
    cell: Callable[[dict[str, object]], str]
    gap: str = " "


def _mib(value: object) -> str:
    return f"{value / 1048576:.0f}" if isinstance(value, int) else "-"


def _watchdog(r: dict[str, object]) -> str:
    if not r["watchdogPid"]:
        return "-"
    # "gone": no process holds the watchdog's lock any more
    return f"{r['watchdogPid']}" + ("" if r["watchdogAlive"] else " gone")


COLUMNS = {
    "session": Column("SESSION", "<24", lambda r: str(r["sessionId"])[:24]),
    "pid": Column("PID", ">7", lambda r: str(r["hostPid"])),
    # "gone": its segment went away since the last refresh (ls --watch only)
    "alive": Column("ALIVE", "<5", lambda r: "gone" if r.get("gone")
                    else "yes" if r["alive"] else "no"),
    "level": Column("LEVEL", "<8", lambda r: printable(r["level"] or "-")),
    "rss": Column("RSS MiB", ">8", lambda r: _mib(r["rss"])),
    "limit": Column("LIMIT MiB", ">9", lambda r: _mib(r["limit"])),
    "ratio": Column("RATIO", ">6", lambda r: "-" if r["ratio"] is None
                    else f"{r['ratio']:.2f}"),
    "idle": Column("IDLE s", ">7", lambda r: "-" if r["lastRecordAge"] is None
                   else f"{r['lastRecordAge']:.0f}"),
    "watchdog": Column("WATCHDOG", ">12", _watchdog),
    "owner": Column("OWNER", "", lambda r: "" if r["uid"] == os.geteuid()
                    else printable(r["user"]), gap="  "),
}
LS_TABLE = tuple(COLUMNS[name] for name in ("session", "pid", "alive", "level", "rss",
                                            "limit", "ratio", "idle", "watchdog", "owner"))


def session_lines(rows: list[dict[str, object]], columns: Sequence[Column]) -> list[str]:
    """The table of ``rows`` (from ``sessions()``) in ``columns``, header first; an
    unreadable ring is a line of its own, the sessions of others that we may not read
    are counted on one line. Every string from a segment goes through printable()."""
    p = printable
    me = os.geteuid()
    lines = ["".join((c.gap if i else "") + format(c.header, c.spec)
                     for i, c in enumerate(columns))]
    private: dict[str, int] = {}
    shown = 0
    for r in rows:
        if r.get("readable") is False:
            private[str(r["user"])] = private.get(str(r["user"]), 0) + 1
            continue
        shown += 1
        if "error" in r:
            whose = f" ({p(r['user'])}'s)" if r["uid"] != me else ""
            lines.append(f"{p(r['segment'])}{whose}: unreadable ring ({p(r['error'])})")
            continue
        lines.append("".join((c.gap if i else "") + format(c.cell(r), c.spec)
                             for i, c in enumerate(columns)).rstrip())
    if private:
        counts = ", ".join(f"{n} of {p(user)}" for user, n in sorted(private.items()))
        lines.append(f"(other users' sessions you cannot read: {counts})")
    if not shown and not private:
        lines.append("(no live sessions)")
    return lines
