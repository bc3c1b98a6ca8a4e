"""``watchdog-core show FILE``: a dump, readable by a person."""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING, TextIO

from .._ring import MAGIC as _RING_MAGIC
from . import UsageError, _reason, absolute, json_text, printable, read_input_file
from .read_ring import MAX_RING_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import ValidationError

    from .._diagnostics import Diagnostics

# What the store itself reads of a dump (DiagnosticsDir.read_dump); a dump is a few KiB.
MAX_DUMP_BYTES = 16 << 20
# _hang.collect_stacks keeps 1 MiB of faulthandler's output, decoded with replacement
# characters (3 bytes each) for what is not UTF-8.
MAX_STACKS_BYTES = 3 << 20
MAX_FRAMES = 20  # of a traceback or a stack, the most recent; the files hold the rest
PLOT_EXTRA = "--png needs matplotlib: pip install 'watchdog-core[plot]'"

NAME = "show"
HELP = "print a diagnostics file for a person"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a memory-*.json diagnostics file, or a saved .ring")
    parser.add_argument("--json", action="store_true", help="print the validated JSON")
    parser.add_argument("--html", metavar="OUT", help="write the dump as one self-contained "
                        "page: its timeline in SVG, the verdict and the figures")
    parser.add_argument("--png", metavar="OUT", help="write the dump's timeline as a PNG "
                        "(needs matplotlib: pip install 'watchdog-core[plot]')")


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.1f} MiB"


def parse(path: str, raw: bytes) -> Diagnostics:
    """The dump in ``raw``, or UsageError saying in one line what is wrong with it.

    The stdlib's parser reads it first: it says where the JSON goes wrong, and it sees
    what pydantic lets through silently, a key given twice in one object (the last
    would win: ``"level": "normal", "level": "critical"`` reads as critical) and the
    bare ``NaN``/``Infinity`` tokens that are not JSON (a dump writes them as strings).
    """
    from pydantic import ValidationError

    from .._diagnostics import load

    if not raw.strip():
        raise UsageError(f"{path} is empty, not a watchdog-core diagnostics file")
    problem = _syntax_problem(raw)
    if problem is None:
        try:
            return load(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            if first["type"] == "json_invalid":  # JSON, but too deep for pydantic's parser
                problem = f"is not valid JSON for this reader ({first['msg']})"
            else:
                problem = f"is not a watchdog-core diagnostics file: {_first_problem(exc)}"
    raise UsageError(f"{path} {problem}")


class _RefusedError(ValueError):
    """What the stdlib's parser accepts and a dump may not hold."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise _RefusedError(f"is not a watchdog-core diagnostics file: the key {key!r} is "
                           "given twice in one object")
        found[key] = value
    return found


def _no_constant(token: str) -> object:
    raise _RefusedError(f"is not valid JSON ({token} is not JSON; a dump writes it as "
                   f'"{token}")')


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    where = ".".join(str(part) for part in errors[0]["loc"]) or "the top level"
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""
    return f"{where}: {errors[0]['msg']}{tail}"


def _syntax_problem(raw: bytes) -> str | None:
    """What makes ``raw`` no JSON a dump may be, from the stdlib's parser (pydantic's
    says line and column of the text, and less about what it expected); None if none."""
    import json

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not valid JSON (not UTF-8 text at byte {exc.start})"
    try:
        json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        # A string never closed, or an end met while more was expected: the file is cut.
        if exc.msg.startswith("Unterminated string") or exc.pos >= len(text.rstrip()):
            return f"is not valid JSON (cut short at byte {len(raw)})"
        return f"is not valid JSON ({exc.msg.lower()} at byte {len(text[: exc.pos].encode())})"
    except _RefusedError as exc:
        return str(exc)
    except ValueError as exc:  # an integer of more digits than Python converts
        return f"is not a watchdog-core diagnostics file: {str(exc).split(';')[0]}"
    except RecursionError:
        return "is not valid JSON (nested too deep)"
    return None


def run(args: argparse.Namespace, out: TextIO) -> int:
    pictures = [(option, path) for option, path in (("--html", args.html),
                                                    ("--png", args.png)) if path is not None]
    if args.json and pictures:
        raise UsageError("--json prints the dump, --html and --png draw it: one or the other")
    targets = [(option, output_file(path, option)) for option, path in pictures]
    _check_targets(args.file, targets)
    if args.png is not None:
        _require_matplotlib()
    named_ring = args.file.endswith(".ring")
    raw = read_input_file(args.file, MAX_RING_BYTES if named_ring else MAX_DUMP_BYTES,
                          "ring" if named_ring else "dump")
    if named_ring or raw.startswith(_RING_MAGIC):  # a ring image, whatever its name
        if args.json or pictures:
            raise UsageError(f"{args.file} is a ring: it has no timeline to draw and no dump "
                             "to print (read-ring --json decodes it)")
        from ._show_ring import show_ring

        return show_ring(args.file, raw, out)
    dump = parse(args.file, raw)
    stuck = dump.responsiveness is not None and dump.responsiveness.state == "unresponsive"
    # The same answer with or without --json: the dump reports trouble or it does not.
    code = 1 if dump.level in ("hard", "critical") or not dump.host.alive or stuck else 0
    if targets:
        _draw(dump, args.file, targets, out)
        return code
    if args.json:
        import json

        # Re-encoded as ASCII: the file's own bytes may hold any character, raw.
        out.write(json_text(json.loads(dump.to_json())))
        return code
    from . import _chart
    from ._timeline import from_dump, verdict

    # Every string of a dump is the host's or the file's author's: printable() each one.
    p = printable
    m = dump.memory
    w = out.write
    w(f"{p(dump.trigger)} dump of session {p(dump.session_id)} at {p(dump.timestamp)}\n")
    w(f"  verdict     {p(verdict(dump))}\n")
    w(f"  level       {p(dump.level)}  (ratio {m.ratio:.3f} of {_mib(m.heap_limit)}, "
      f"{p(m.limit_source)})\n")
    w(f"  memory      rss {_mib(m.rss)}, heap {_mib(m.heap_used)}, uss {_mib(m.uss)}, "
      f"growth {m.growth_bytes_per_second / 1048576:.2f} MiB/s\n")
    host = dump.host
    state = "alive" if host.alive else "dead"
    w(f"  host        pid {host.pid} ({state}), python {p(host.python or '-')}, "
      f"argv {' '.join(p(arg) for arg in host.argv)}\n")
    if host.exit is not None:
        e = host.exit
        what = p(e.signal) if e.signal else (
            f"exit code {e.exit_code}" if e.exit_code is not None else "")
        w(f"  exit        {e.kind} {what} {p(e.exception or '')}".rstrip()
          + f" ({e.confidence})\n")
        if e.frames:
            w("              Traceback (most recent call last):\n")
            for line in _tail([f'File "{p(f.file)}", line {"?" if f.line is None else f.line}, '
                               f"in {p(f.function)}" for f in e.frames], e.frames_omitted):
                w(f"                {line}\n")
        for fact in e.evidence:
            w(f"              - {p(fact)}\n")
    if dump.descendant is not None:
        _print_descendant(dump, w)
    if dump.crash_traceback:
        _print_crash(dump.crash_traceback, w)
    if dump.responsiveness is not None or "stacks" in dump.extras:
        _print_responsiveness(dump, args.file, w)
    w(f"  activity    {p(dump.last_activity or '-')}\n")
    for key, value in dump.session.items():
        w(f"  stat        {p(key)} = {value}\n")
    for risk in dump.risk_details:
        w(f"  risk        {p(risk.id)} ({p(risk.severity)}): {p(risk.message)}\n")
    w(f"  suggestion  {p(dump.suggestion)}\n")
    if dump.ring.file:
        w(f"  ring        {p(dump.ring.file)} ({dump.ring.records} records, "
          f"{dump.ring.torn} torn)\n")
    for line in _chart.draw(from_dump(dump), _chart.glyphs_for(getattr(out, "encoding", None))):
        w(line)
    return code


# -- pictures --------------------------------------------------------------------------

def output_file(path: str, option: str) -> str:
    """``path`` made absolute, once it names a file that may be written: a regular file
    or none yet (the write replaces it, or a symbolic link there, never what a link
    points to), not a directory, a device or a FIFO, in a directory that exists;
    UsageError otherwise."""
    import stat

    if not path.strip():
        raise UsageError(f"{option} must name a file")
    if path == "-":
        raise UsageError(f"{option} needs a file name: the page is not written to stdout")
    if path.endswith("/"):
        raise UsageError(f"{option} {path} names a directory, not a file")
    target = absolute(path, option)
    if os.path.isdir(target):
        raise UsageError(f"{option} {path} is a directory, not a file")
    try:
        mode = os.lstat(target).st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        # Renamed over, a device would become a file: as root, /dev/null itself.
        raise UsageError(f"{option} {path} is not a regular file: it is never replaced")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: no such directory {parent}")
    return target


def _check_targets(dump: str, targets: list[tuple[str, str]]) -> None:
    """No picture may replace the dump it shows, nor another picture of the same call."""
    seen: dict[str, str] = {}
    for option, target in targets:
        if _same_file(dump, target):
            raise UsageError(f"{option} {target} is the dump itself: it would be replaced")
        if target in seen:
            raise UsageError(f"{seen[target]} and {option} name the same file {target}")
        seen[target] = option


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def write_atomically(path: str, data: bytes, option: str) -> None:
    """``data`` as the file ``path``, whole or not at all: written to a temporary file
    beside it (0600, as private as the dump it shows) and renamed over it."""
    import tempfile

    try:
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(path),
                                    prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"{option} {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise UsageError(f"cannot write {path}: {_reason(exc)}") from None


def _require_matplotlib() -> None:
    """UsageError (one line, the extra to install) unless matplotlib imports: said
    before any file is written."""
    # Our own process, drawing to a file: the Agg backend whatever the environment says
    # (a bad MPLBACKEND, or Jupyter's inline one, fails matplotlib's import).
    os.environ["MPLBACKEND"] = "Agg"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(PLOT_EXTRA) from None
    except Exception as exc:  # installed but broken: still one line, not a traceback
        raise UsageError(f"--png: matplotlib does not start ({type(exc).__name__}: "
                         f"{exc})") from None


def _draw(dump: Diagnostics, path: str, targets: list[tuple[str, str]], out: TextIO) -> None:
    """Each picture asked for, written whole; the path of each printed."""
    from ._timeline import from_dump

    timeline = from_dump(dump, path)
    for option, target in targets:
        if option == "--html":
            from ._page import page

            data = page(dump, timeline).encode()
        else:
            from ._png import png

            try:
                data = png(dump, timeline)
            except ImportError:  # installed, but it (or what it needs) does not import
                raise UsageError(PLOT_EXTRA) from None
        write_atomically(target, data, option)
        out.write(f"{printable(target)}\n")


def _print_descendant(dump: Diagnostics, w: Callable[[str], object]) -> None:
    """The process of ``run``'s tree a descendant-died dump is about, and how it ended."""
    d = dump.descendant
    assert d is not None
    p = printable
    pid = "pid ?" if d.pid is None else f"pid {d.pid}"
    w(f"  descendant  {p(d.name)} ({pid}), rss {_mib(d.rss)}: {p(d.exit.kind)} "
      f"{p(d.exit.signal or '')} ({p(d.exit.confidence)})\n")
    for fact in d.exit.evidence:
        w(f"              - {p(fact)}\n")


def _print_crash(text: str, w: Callable[[str], object]) -> None:
    """faulthandler's report: its first line ("Fatal Python error: Segmentation fault")
    and the thread that crashed, most recent call last like the rest of ``show``."""
    lines = text.splitlines()
    w(f"  crash       {printable(lines[0].strip()) if lines else '-'}\n")
    current = next((i for i, line in enumerate(lines) if line.startswith("Current thread")),
                   None)
    if current is None:
        return
    frames = []
    for line in lines[current + 1 :]:
        if not line.startswith("  "):
            break
        frames.append(printable(line.strip()))
    for line in _tail(frames[::-1]):
        w(f"                {line}\n")


def _tail(lines: list[str], omitted: int = 0) -> list[str]:
    """The last MAX_FRAMES of ``lines`` (the most recent frames), saying how many older
    ones are left out (``omitted`` were left out before they reached the dump)."""
    left_out = omitted + max(0, len(lines) - MAX_FRAMES)
    return ([f"... {left_out} older frames"] if left_out else []) + lines[-MAX_FRAMES:]


def _print_responsiveness(dump: Diagnostics, path: str, w: Callable[[str], object]) -> None:
    r = dump.responsiveness
    if r is not None:
        details = []
        if r.heartbeat_age is not None:
            details.append(f"heartbeat {r.heartbeat_age:.1f} s old")
        if r.idle_seconds is not None:
            details.append(f"idle {r.idle_seconds:.1f} s")
        if r.main_thread_cpu is not None:
            details.append(f"main thread at {r.main_thread_cpu:.0%} of a CPU")
        if r.unresponsive_for is not None:
            details.append(f"unresponsive for {r.unresponsive_for:.1f} s")
        w(f"  responsive  {r.state}: {r.reason}"
          + (f" ({', '.join(details)})" if details else "") + "\n")
    found = main_stack(dump, path)
    if found.problem is not None:
        if found.problem != NOT_IN_THE_DUMP:
            w(f"  stacks      {printable(found.problem)}\n")
        return
    if found.is_main:
        w(f"  stack       main thread {printable(found.thread)} (most recent call last):\n")
    else:
        w(f"  stack       thread {printable(found.thread or '-')}, the first in the file "
          "(most recent call last):\n")
    for line in found.frames:
        w(f"                {printable(line)}\n")
    count = f"{found.threads} thread{'s' if found.threads != 1 else ''}"
    w(f"  stacks      {printable(found.path)} ({count})\n")


NOT_IN_THE_DUMP = "none: not in the dump"


class MainStack:
    """The main thread's block of a dump's stacks file (the file's first block when the
    main thread's id is unknown), as ``show`` and its page show it; or, in ``problem``,
    why there is none."""

    __slots__ = ("problem", "path", "thread", "is_main", "frames", "threads")

    def __init__(self, problem: str | None = None, path: str = "", thread: str = "",
                 is_main: bool = False, frames: list[str] | None = None,
                 threads: int = 0) -> None:
        self.problem, self.path, self.thread, self.is_main = problem, path, thread, is_main
        self.frames = frames or []  # most recent call last, cut by _tail
        self.threads = threads


def main_stack(dump: Diagnostics, path: str | None) -> MainStack:
    r = dump.responsiveness
    name = dump.extras.get("stacks")
    if name is None:
        return MainStack(f"none: {r.stacks_missing}" if r is not None and r.stacks_missing
                         else NOT_IN_THE_DUMP)
    if os.path.basename(name) != name or name in ("", ".", ".."):
        return MainStack(f"refused: {name!r} does not name a file beside the dump")
    stacks_path = beside(path, name)
    try:
        text = read_input_file(stacks_path, MAX_STACKS_BYTES, "stacks file").decode(
            "utf-8", "replace")
    except UsageError as exc:  # pruned, replaced, huge: the dump is still worth showing
        return MainStack(f"cannot show them: {exc}")
    threads = parse_stacks(text)
    if not threads:
        return MainStack(f"{stacks_path}: no thread's stack in it")
    main = r.main_thread if r is not None else None
    chosen = next((t for t in threads if main and _same_thread(t[0], main)), None)
    return MainStack(path=stacks_path, thread=(chosen or threads[0])[0] or "",
                     is_main=chosen is not None,
                     frames=_tail((chosen or threads[0])[1][::-1]), threads=len(threads))


def beside(path: str | None, name: str) -> str:
    """The file ``name`` in the dump's directory (``name`` alone: where is not known)."""
    if path is None:
        return name
    try:
        return os.path.join(os.path.dirname(os.path.abspath(path)), name)
    except OSError:  # a relative path in a current directory that was removed
        return os.path.join(os.path.dirname(path), name)


# faulthandler's output: a block per thread, the innermost frame first.
_THREAD = re.compile(r"(?:(?:Current thread|Thread) (0x[0-9a-fA-F]+)|Stack)"
                     r" \(most recent call first\):")
_FRAME = re.compile(r'File "(.*)", line (\S+) in (.*)')


def parse_stacks(text: str) -> list[tuple[str | None, list[str]]]:
    """``[(thread id or None, frames innermost first)]`` from faulthandler's output, each
    frame as a traceback prints it: ``File "x.py", line 3, in f``."""
    threads: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        head = _THREAD.match(line)
        if head:
            threads.append((head.group(1), []))
        elif threads and line.startswith(" ") and line.strip():
            frame = _FRAME.fullmatch(line.strip())
            threads[-1][1].append(f'File "{frame[1]}", line {frame[2]}, in {frame[3]}'
                                  if frame else line.strip())
    return threads


def _same_thread(a: str | None, b: str) -> bool:
    try:
        return a is not None and int(a, 16) == int(b, 16)
    except ValueError:
        return a == b
