"""``watchdog-core gc``: recover orphaned rings, remove the unreadable ones no one holds,
and prune the directory by retention."""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import warnings
from typing import TextIO

from .. import _reader, _ring, _shm
from . import UsageError, asked_directory, json_text, printable, where_dumps_go
from .read_ring import MAX_RING_BYTES

NAME = "gc"
HELP = ("recover orphaned rings (host and watchdog gone), remove unreadable ones no one "
        "holds, and prune old dumps")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="diagnostics directory to prune (default: "
                        "$WATCHDOG_CORE_DIR or the XDG state directory)")
    parser.add_argument("--max-files", type=int, default=None,
                        help="dump sets to keep (default 100 or $WATCHDOG_CORE_MAX_FILES)")
    parser.add_argument("--max-bytes", default=None,
                        help="bytes to keep, e.g. 256MiB (default or $WATCHDOG_CORE_MAX_BYTES)")
    parser.add_argument("--prometheus-textfile", metavar="DIR", default=None,
                        help="also expire our old metrics files in this textfile folder "
                        "(default: $WATCHDOG_CORE_PROMETHEUS_DIR, else none)")
    parser.add_argument("--prometheus-expire", metavar="SECONDS", default=None,
                        help="age at which a dead host's metrics file goes (default 3600 "
                        "or $WATCHDOG_CORE_PROMETHEUS_EXPIRE)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._config import _retention
    from .._recovery import recover_orphans
    from .._store import DiagnosticsDir, StoreError

    try:
        # A bad WATCHDOG_CORE_MAX_FILES/_MAX_BYTES is ignored with a warning: one line of
        # ours, not Python's two (file, line and source of the warn() call).
        with warnings.catch_warnings(record=True) as ignored:
            warnings.simplefilter("always")
            max_files, max_bytes = _retention(os.environ, args.max_files, args.max_bytes)
            textfile_dir, expire_after = _prometheus(args)  # its bad environment too
    except ValueError as exc:
        raise UsageError(str(exc).replace("max_files", "--max-files")
                         .replace("max_bytes", "--max-bytes")) from None
    for warning in ignored:
        text = str(warning.message).removeprefix("watchdog-core: ")
        print(f"watchdog-core: warning: {printable(text)}", file=sys.stderr)
    textfile_fd = -1
    if textfile_dir:  # bad input, as --dir: checked before anything is done
        from .._textfile import TextfileError, open_folder

        try:
            textfile_fd = open_folder(textfile_dir)
        except TextfileError as exc:
            raise UsageError(f"--prometheus-textfile: {exc}") from None
    asked = asked_directory(args.dir)
    # Retention runs where a session asking for that folder writes: the fallback chain,
    # as start_watchdog() follows it (docs/design.md, "Where files go"). A folder the
    # chain would make has nothing to prune yet, so nothing is made here.
    directory, refusals = where_dumps_go(asked)
    recovered = recover_orphans(dry_run=args.dry_run)
    corrupt = remove_corrupt(dry_run=args.dry_run)
    pruned: list[str] = []
    error = None
    if directory is None:
        directory, error = asked, "; ".join(refusals)
    elif os.path.isdir(directory):
        store = DiagnosticsDir(directory, max_files=max_files, max_bytes=max_bytes)
        try:
            pruned = store.prune(dry_run=args.dry_run)
        except StoreError as exc:
            error = str(exc)
    expired: list[str] = []
    unexpired: list[str] = []
    if textfile_fd >= 0:
        from .._textfile import expire

        try:
            expired = [os.path.join(textfile_dir, name) for name in
                       expire(textfile_fd, expire_after, dry_run=args.dry_run,
                              failed=unexpired)]
        finally:
            os.close(textfile_fd)
    result = {"dryRun": args.dry_run,
              "orphans": [{"segment": s, "postmortem": p, "outcome": o} for s, p, o in recovered],
              "corrupt": [{"segment": s, "problem": p, "outcome": o} for s, p, o in corrupt],
              "pruned": pruned, "directory": directory, "expired": expired,
              "notExpired": [os.path.join(textfile_dir, e) for e in unexpired],
              "error": error}
    unwritten = [s for s, _, o in recovered if o in ("kept", "partial", "dropped")]
    if args.json:
        out.write(json_text(result))
    else:
        # Segment names are checked, but a postmortem's path names the directory a ring's
        # header gave, and a problem quotes what the segment held: printable() them.
        p = printable
        for segment, path, outcome in recovered:
            out.write(_ORPHAN_LINES[outcome].format(segment=p(segment), path=p(path)) + "\n")
        verb = "would remove" if args.dry_run else "removed"
        for segment, problem, _ in corrupt:
            out.write(f"{verb} {p(segment)}: an unreadable ring ({p(problem)}) that no host "
                      "or watchdog holds\n")
        for name in pruned:
            out.write(f"{verb} {p(os.path.join(directory, name))}\n")
        for path in expired:
            out.write(f"{verb} {p(path)}: an old metrics file\n")
        for problem in unexpired:
            out.write(f"cannot remove {p(os.path.join(textfile_dir, problem))}\n")
        if error:
            out.write(f"cannot prune: {p(error)}\n")
        if not (recovered or corrupt or pruned or expired or unexpired or error):
            out.write("nothing to do\n")
    return 1 if error or unwritten or unexpired else 0


def _prometheus(args: argparse.Namespace) -> tuple[str, float]:
    """The textfile folder to expire files in ("" for none), and after how long."""
    from .._config import check_expire, prometheus_settings

    try:
        textfile_dir, expire_after = prometheus_settings(
            os.environ, args.prometheus_textfile, "--prometheus-textfile")
        if args.prometheus_expire is not None:
            expire_after = check_expire(args.prometheus_expire, "--prometheus-expire")
    except ValueError as exc:
        raise UsageError(str(exc)) from None  # not the caller's: no --max-* to rename
    return textfile_dir, expire_after


# A segment no one holds that was never written may be a host's in the instant between
# creating it and locking it (_shm.create_segment); one unwritten this long is not.
NEVER_WRITTEN_GRACE = 60.0  # seconds


def remove_corrupt(*, dry_run: bool) -> list[tuple[str, str, str]]:
    """Remove our segments that no host or watchdog holds and that cannot be read as a
    ring: ``[(segment, what is wrong, outcome)]``, outcome "removed", or "found" in a dry
    run. ``recover_orphans`` leaves them: there is nothing in them to write up.

    A segment whose lock anyone holds is never touched, however it reads: only its
    host or its watchdog may remove it. The claim (both locks) is held while deciding.
    """
    found: list[tuple[str, str, str]] = []
    for name in _shm.list_segments():
        if _shm.segment_owner(name) != os.geteuid():
            continue  # another user's: not ours to judge
        claim = _shm.claim_segment(name)
        if claim is None:
            continue  # its host or its watchdog lives, or another gc has it, or it is gone
        try:
            problem = _corruption(claim)
            if problem is None:
                continue
            if dry_run:
                found.append((name, problem, "found"))
            elif _shm.unlink_segment(name, claim):  # only while the name still means it
                found.append((name, problem, "removed"))
        except OSError:
            continue  # gone or unreadable meanwhile: the next gc sees it again
        finally:
            os.close(claim)
    return found


def _corruption(claim: int) -> str | None:
    """What makes the claimed segment unreadable as a ring; None for a ring (or for a
    segment too young, or of another ring version, to judge)."""
    st = os.fstat(claim)
    if st.st_nlink == 0:
        return None  # removed between our open and our lock
    head = os.pread(claim, _ring.HEADER_SIZE, 0)
    if not head.strip(b"\0"):  # the header is the first thing a host writes
        if time.time() - st.st_mtime < NEVER_WRITTEN_GRACE:
            return None
        return "never written: its host died creating it"
    if st.st_size > MAX_RING_BYTES:
        return f"{st.st_size} bytes, more than any ring"
    if head[:8] == _ring.MAGIC and len(head) >= 12 and (
            struct.unpack_from("<I", head, 8)[0] != _ring.VERSION):
        return None  # another version's ring: its writer may not take these locks
    mapping = _shm.map_descriptor(claim)
    try:
        _reader.RingImage(mapping).release()
    except _ring.RingError as exc:
        return str(exc)
    finally:
        mapping.close()
    return None


_ORPHAN_LINES = {
    "written": "recovered {segment} -> {path}",
    "clean": "removed {segment} (it had ended cleanly: nothing to write)",
    "kept": "cannot write the postmortem of {segment} yet (see the line above); it stays "
            "in shared memory",
    "partial": "wrote the postmortem of {segment} to {path}, but not yet its ring image "
               "(see the line above); the ring stays in shared memory",
    "dropped": "removed {segment} unwritten: its diagnostics directory is refused",
    "found": "would recover {segment}",
}
