"""IPython and Jupyter: ``%load_ext watchdog_core`` watches the kernel (docs/jupyter.md).

Imported only when IPython loads the extension (``watchdog_core.load_ipython_extension``
delegates here), never by ``import watchdog_core``. What it does in the kernel:

* starts a session named after the kernel's connection file (``kernel-{id}.json`` gives
  ``kernel-{id}``), which a restarted kernel reuses, so its dumps are found again;
* marks each cell as it starts, ``cell:In[12]`` (its execution count, never its
  source), and ``idle:after-In[12]`` when it ends, and records ``cellsRun``,
  ``cellsFailed`` and ``executionCount``;
* at a rise to hard or critical, writes one line to the output of the cell that was
  running (the last one run, when none is);
* when loaded in a restarted kernel, prints one line on the previous kernel's death,
  once per postmortem.

The dump is read with the stdlib ``json``, not ``_diagnostics.load``: pydantic would cost
the kernel ~100 ms and several MiB for six fields, in the very process being watched for
its memory. A file that is not what docs/diagnostics.md says is skipped.
"""

from __future__ import annotations

import json
import os
import sys

from ._config import SESSION_ID_MAX, session_id_chars
from ._safedir import FILE_MODE, StoreError, open_dir
from ._statusline import duration, size
from ._store import dump_set_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._host import Watchdog

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_LEVELS = ("normal", "soft", "hard", "critical")
_SEVERE = ("hard", "critical")
POSTMORTEM_TRIGGERS = ("host-died", "recovered")
NOTE_PREFIX = ".jupyter-"  # hidden: retention keeps dump sets and never touches it
_NOTE_SUFFIX = ".txt"
_MAX_DUMP_BYTES = 16 << 20  # a dump is ~100 KiB; anything far larger is not one of ours
_HOW = {"oom-killed": "was OOM-killed", "killed": "was killed", "crashed": "crashed",
        "exited": "exited", "unknown": "died"}

_watch: KernelWatch | None = None


def load_ipython_extension(ipython: Any, **options: Any) -> None:
    """Watch this IPython kernel: ``%load_ext watchdog_core``.

    ``options`` go to :func:`watchdog_core.start_watchdog` (``memory_limit="4GiB"``,
    ``diagnostics_dir=...``), for a call of this function from a cell or a startup
    file; ``session_id`` and ``on_pressure`` are the extension's own. Loading again
    while loaded does nothing.
    """
    global _watch
    for name in ("session_id", "on_pressure"):
        if name in options:
            raise ValueError(f"{name} is set by the extension itself (docs/jupyter.md)")
    if _watch is not None:
        return
    _watch = KernelWatch(ipython, options)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext watchdog_core``: the session ends cleanly (no postmortem)."""
    global _watch
    watch, _watch = _watch, None
    if watch is not None:
        watch.close()


class KernelWatch:
    """The extension's state in one kernel: its session, the cell running, the cell
    output that warnings go to."""

    def __init__(self, shell: Any, options: dict[str, Any]) -> None:
        from ._host import start_watchdog

        self.shell = shell
        self.kernel = getattr(shell, "kernel", None)
        self.kernel_session = session_id_for(connection_file()) if self.kernel else None
        # Outside a kernel (terminal IPython) nothing survives a restart: a fresh id.
        session_id = self.kernel_session or f"ipython-{os.urandom(3).hex()}"
        self.handle: Watchdog = start_watchdog(
            session_id=session_id, on_pressure=self.on_pressure, **options)
        # A session the host started itself before the extension keeps going as it
        # was (start_watchdog() warned that it ignored ours): cells are still marked in
        # it, but warnings are its own on_pressure's business and unload leaves it be.
        self.owned = self.handle.session_id == session_id
        self.cells_run = 0
        self.cells_failed = 0
        self.cell = ""  # "In[12]", the last cell started
        self.parent: dict[str, Any] | None = None  # that cell's execute_request
        self.warnings = 0  # lines written at rises: for tests
        # Whether shell.execution_count is already the next cell's number while a cell
        # runs: IPython 9 counts up before pre_run_cell, 8 after the cell. Guessed from
        # the version, then read off every numbered cell's result at post_run_cell.
        version = getattr(sys.modules.get("IPython"), "version_info", (9,))
        self.ahead = 1 if tuple(version[:1]) >= (9,) else 0
        self.seen: int | None = self._count()  # execution_count when the cell started
        self.report = previous_death(self.handle.diagnostics_dir, self.kernel_session)
        events = shell.events
        events.register("pre_run_cell", self.pre_run_cell)
        events.register("post_run_cell", self.post_run_cell)
        if self.report is not None and (self.kernel is None or self._executing()):
            print(self.report)  # %load_ext in a cell: into that cell's output
            self.report = None
        # else loaded at startup (InteractiveShellApp.extensions): no cell to show it
        # in, so the first cell run gets it.

    def close(self) -> None:
        events = self.shell.events
        for name, callback in (("pre_run_cell", self.pre_run_cell),
                               ("post_run_cell", self.post_run_cell)):
            try:
                events.unregister(name, callback)
            except ValueError:
                pass
        if self.owned:
            self.handle.stop()

    # -- IPython's events, in the main thread --------------------------------------------

    def pre_run_cell(self, info: Any = None) -> None:
        count = self._count()
        self.seen = count if getattr(info, "store_history", True) else None
        self.parent = self._parent()
        self.cells_run += 1
        if self.seen is not None:
            number = self.seen - self.ahead
            self.cell = f"In[{number}]"
            self.handle.mark(f"cell:{self.cell}")
            self.handle.record(cellsRun=self.cells_run, executionCount=number)
        else:  # store_history=False: IPython gives it no number
            self.cell = "unnumbered"
            self.handle.mark("cell:unnumbered")
            self.handle.record(cellsRun=self.cells_run)
        if self.report is not None:
            print(self.report)
            self.report = None

    def post_run_cell(self, result: Any = None) -> None:
        count = getattr(result, "execution_count", None)
        numbered = bool(getattr(getattr(result, "info", None), "store_history", True))
        if numbered and isinstance(count, int) and self.seen is not None:
            if self.seen - count in (0, 1):
                self.ahead = self.seen - count
            self.cell = f"In[{count}]"
        if getattr(result, "error_before_exec", None) or getattr(result, "error_in_exec", None):
            self.cells_failed += 1
        self.handle.record(cellsFailed=self.cells_failed)
        self.handle.mark(f"idle:after-{self.cell or 'load'}")

    # -- the announcer's thread ----------------------------------------------------------

    def on_pressure(self, level: object, info: dict[str, Any]) -> None:
        """A rise to hard or critical: one line in the running cell's output."""
        new, old = str(info.get("level")), str(info.get("previous"))
        if new not in _SEVERE or (old in _LEVELS and _LEVELS.index(old) >= _LEVELS.index(new)):
            return
        self.publish(pressure_line(info, self.cell))
        self.warnings += 1

    def publish(self, line: str) -> None:
        """``line`` on stderr in the output of the cell remembered at its start.

        A background thread's print lands in whichever cell ipykernel takes for the
        current one (ipykernel 7 falls back to the last request's context, 6 to a
        global), so the message is sent to IOPub with that cell's request as its
        parent, as the kernel's own messages are. The kernel's IOPub socket is a
        thread-safe proxy for the IO thread; sys.stderr is left untouched, so no parent
        of the user's own threads' output changes.
        """
        kernel, parent = self.kernel, self.parent
        session = getattr(kernel, "session", None)
        socket = getattr(kernel, "iopub_socket", None)
        if session is not None and socket is not None and parent:
            try:
                session.send(socket, "stream", {"name": "stderr", "text": line + "\n"},
                             parent=parent, ident=b"stream.stderr")
                return
            except Exception:  # noqa: S110 (a kernel torn down meanwhile: the stream then)
                pass
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: S110 (the announcer's thread must not die of our line)
            pass

    # -- the kernel ------------------------------------------------------------------------

    def _count(self) -> int | None:
        count = getattr(self.shell, "execution_count", None)
        return count if isinstance(count, int) else None

    def _parent(self) -> dict[str, Any] | None:
        """The request being executed, as ipykernel keeps it for its shell channel."""
        kernel = self.kernel
        if kernel is None:
            return None
        try:
            if hasattr(kernel, "get_parent"):  # ipykernel 6+
                parent = kernel.get_parent("shell")
            else:
                parent = getattr(kernel, "_parent_header", None)
        except Exception:
            return None
        return parent if isinstance(parent, dict) and parent else None

    def _executing(self) -> bool:
        parent = self._parent() or {}
        header = parent.get("header") or {}
        return bool(header.get("msg_type") == "execute_request")


def connection_file() -> str | None:
    """This kernel's connection file, or None outside an ipykernel kernel."""
    import importlib

    try:
        connect = importlib.import_module("ipykernel.connect")
        return str(connect.get_connection_file())
    except Exception:  # not a kernel, or a kernel that keeps no file
        return None


def session_id_for(path: str | None) -> str | None:
    """``kernel-{id}`` from ``.../kernel-{id}.json``; None when no id can be made.

    The connection file's name is what a restarted kernel keeps (jupyter_client and
    Jupyter Server reuse it). It is cut to the session-id alphabet as
    ``readable_session_id`` cuts a program's name (each run of other characters one
    ``-``), prefixed ``kernel-`` when it is not already, and capped at 64 characters.
    """
    if not path:
        return None
    stem = os.path.basename(path)
    if stem.endswith(".json"):
        stem = stem[: -len(".json")]
    cleaned = session_id_chars(stem).strip(".-")
    if not cleaned:
        return None
    if not cleaned.startswith("kernel-"):
        cleaned = f"kernel-{cleaned}"
    return cleaned[:SESSION_ID_MAX].rstrip(".-")


# -- the previous kernel's death --------------------------------------------------------


def previous_death(directory: str | None, session_id: str | None) -> str | None:
    """The line on this kernel id's newest postmortem, or None: when there is none, or
    it was reported already.

    Each postmortem is reported once: the name of the last one reported is kept in a
    hidden note beside the dumps (``.jupyter-{session}.txt``), and only a newer one is
    reported. Notes of sessions whose dumps retention has removed go too.
    """
    if not directory or not session_id:
        return None
    try:
        dfd = open_dir(directory, create=False)
    except (StoreError, OSError):
        return None
    try:
        names = os.listdir(dfd)
        noted = _read_note(dfd, session_id)
        ours: list[tuple[str, str]] = []  # (timestamp, name) of this session's dumps
        sessions: set[str] = set()
        for name in names:
            found = dump_set_of(name)
            if found is None or name != found[0] + ".json":
                continue
            stem, stamp = found
            session = stem[len("memory-") : -len(stamp) - 1]
            sessions.add(session)
            if session == session_id:
                ours.append((stamp, name))
        _prune_notes(dfd, names, sessions, session_id)
        for stamp, name in sorted(ours, reverse=True):
            if noted is not None and stamp <= noted:
                return None
            doc = _read_dump(dfd, name)
            if doc is None or doc.get("sessionId") != session_id:
                continue
            if doc.get("trigger") in POSTMORTEM_TRIGGERS:
                _write_note(dfd, session_id, name)
                return death_line(doc, os.path.join(directory, name))
        return None
    except OSError:
        return None
    finally:
        os.close(dfd)


def death_line(doc: dict[str, Any], path: str) -> str:
    """One line: how the previous kernel died, in which cell, at what memory against
    which limit, and the postmortem's path."""
    host = _dict(doc.get("host"))
    end = _dict(host.get("exit"))
    kind = str(end.get("kind") or "unknown")
    how = _HOW.get(kind, f"ended ({kind})")
    details = []
    if isinstance(end.get("signal"), str):
        details.append(end["signal"])
    if kind == "exited" and isinstance(end.get("exception"), str):
        details.append(f"uncaught {end['exception']}")
    elif isinstance(end.get("exitCode"), int) and not isinstance(end["exitCode"], bool):
        details.append(f"exit code {end['exitCode']}")
    if end.get("confidence") in ("certain", "likely"):
        details.append(str(end["confidence"]))
    elif kind != "unknown":
        details.append("not certain")
    line = f"watchdog-core: the previous kernel {how}"
    if details:
        line += f" ({', '.join(details)})"
    line += _where(doc.get("lastActivity"))
    memory = _dict(doc.get("memory"))
    rss, limit = _bytes(memory.get("rss")), _bytes(memory.get("heapLimit"))
    source = memory.get("limitSource")
    if rss is not None:
        line += f", at {size(rss)}"
        if limit:
            line += f" of {size(limit)}"
            if isinstance(source, str) and source not in ("", "none"):
                line += f" ({source})"
    else:
        line += ", before its memory was first sampled"
    return f"{line}; postmortem {path}"


def pressure_line(info: dict[str, Any], cell: str) -> str:
    """One line for a rise to hard or critical, from ``on_pressure``'s ``info``."""
    line = f"watchdog-core: memory pressure {info.get('level')}"
    if cell:
        line += f" during {cell}"
    rss, limit = _bytes(info.get("rss")), _bytes(info.get("limit"))
    if rss is not None:
        line += f": {size(rss)}"
        if limit:
            ratio = info.get("ratio")
            share = f"{ratio:.0%}, " if isinstance(ratio, float) else ""
            line += f" of {size(limit)} ({share}{info.get('limitSource')})"
    seconds = info.get("secondsToLimit")
    if isinstance(seconds, (int, float)) and 0 <= seconds < 1e9:  # NaN compares False
        line += f", ~{duration(seconds)} to the limit"
    if info.get("dump"):
        line += f"; dump {info['dump']}"
    return line


def _where(label: object) -> str:
    if not isinstance(label, str) or not label:
        return ""
    if label.startswith("cell:"):
        return f" while running {label[len('cell:'):]}"
    if label.startswith("idle:after-"):
        return f" while idle after {label[len('idle:after-'):]}"
    return f" (last mark {label!r})"


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _bytes(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _read_dump(dfd: int, name: str) -> dict[str, Any] | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        with open(fd, "rb") as file:
            raw = file.read(_MAX_DUMP_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= _MAX_DUMP_BYTES else None
    except (OSError, ValueError, RecursionError):  # a file that is not one of ours
        return None
    return doc if isinstance(doc, dict) else None


def _note_name(session_id: str) -> str:
    return f"{NOTE_PREFIX}{session_id}{_NOTE_SUFFIX}"


def _read_note(dfd: int, session_id: str) -> str | None:
    """The timestamp of the last postmortem reported for the session, or None."""
    try:
        fd = os.open(_note_name(session_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dfd)
    except OSError:
        return None
    try:
        text = os.read(fd, 512).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    found = dump_set_of(text)
    return found[1] if found else None


def _write_note(dfd: int, session_id: str, name: str) -> None:
    """Replace the note atomically (a temp file renamed over it; a symlink planted in
    its place is replaced, never followed)."""
    tmp = f".tmp-{os.getpid()}-jupyter-{os.urandom(4).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     FILE_MODE, dir_fd=dfd)
    except OSError:
        return  # a read-only folder: the postmortem will be reported again, no worse
    try:
        os.write(fd, name.encode() + b"\n")
    finally:
        os.close(fd)
    try:
        os.replace(tmp, _note_name(session_id), src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass


def _prune_notes(dfd: int, names: list[str], sessions: set[str], keep: str) -> None:
    """Remove the notes of sessions no dump is left of: retention took them."""
    for name in names:
        if not (name.startswith(NOTE_PREFIX) and name.endswith(_NOTE_SUFFIX)):
            continue
        session = name[len(NOTE_PREFIX) : -len(_NOTE_SUFFIX)]
        if session != keep and session not in sessions:
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
