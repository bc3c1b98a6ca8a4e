"""Extras at critical: every thread's stack and tracemalloc's top allocation sites, asked
of the host once its first critical dump is on disk (docs/design.md, "Telling the host").

Opt-in, ``start_watchdog(extras=("stacks", "tracemalloc"))``, once per session:

1. the watchdog writes the critical dump as ever, both phases;
2. it puts the dump's stem at ``EXTRAS_STEM_AT``, sets ``W_EXTRAS_REQUEST`` (a restarted
   watchdog finds it set and asks no more) and rewrites the dump with an
   ``extrasMissing`` note saying they were asked for;
3. the host's heartbeat (every second at most) sees the word and starts a thread of its
   own, so a slow snapshot never silences the heartbeat. That thread writes
   ``{stem}.stacks.txt`` and ``{stem}.tracemalloc.txt`` (0600, a temp file linked into
   place) and sets ``W_EXTRAS_DONE`` to the request and what became of each extra;
4. the watchdog, at a later sample, rewrites the dump with ``extras`` naming the files
   and ``extrasMissing`` saying why one is not there.

The watchdog never waits for the host: a host that dies meanwhile gets its postmortem at
once, and the critical dump keeps its note. After EXTRAS_WAIT the note says the host
did not answer; an answer after that still replaces it.

The host's side is stdlib only, imported only when extras are asked for, and imports
``tracemalloc`` only while serving; the watchdog's side imports the model lazily.
"""

from __future__ import annotations

import _thread
import os
import stat
import sys
import time

from . import _reader, _ring
from ._config import _SESSION_ID_CHARS
from ._safedir import FILE_MODE, open_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tracemalloc import Statistic
    from types import FrameType

    from ._host import Watchdog
    from ._report import DumpWriter

# What became of one extra, 4 bits each in W_EXTRAS_DONE above the request's 32 bits.
NOT_ASKED, WRITTEN, FAILED, NOT_TRACING, NO_HEADROOM = range(5)
_OUTCOME_SHIFT, _OUTCOME_BITS, _REQUEST_MASK = 32, 4, 0xFFFFFFFF
# A snapshot's peak cost, measured here as the RSS growth over take_snapshot() and
# statistics("lineno") (CPython 3.11, 30 thousand to 3 million traces, 1 to 5 frames):
# 3.3 to 3.8 times tracemalloc.get_tracemalloc_memory(), a copy of its tables and a
# Python tuple per trace. 5 covers that, and the host's growth since the status block's
# sample: at critical, a snapshot that does not fit would push the host over its limit.
SNAPSHOT_COST = 5
TOP_SITES = 50
MAX_FRAMES = MAX_THREADS = 100  # per stacks file, as faulthandler cuts them
EXTRAS_WAIT = 5.0  # seconds before the dump says the host did not answer


def sibling(stem: str, extra: str) -> str:
    """The file an extra goes to: ``{stem}.stacks.txt``, ``{stem}.tracemalloc.txt``."""
    return f"{stem}.{extra}.txt"


def _plain_stem(stem: str) -> bool:
    """A dump's stem as the watchdog names it, nothing that could lead elsewhere."""
    return (stem.startswith("memory-") and _SESSION_ID_CHARS.issuperset(stem)
            and len(stem) < _ring.EXTRAS_STEM_SIZE)


def _read_stem(buf: memoryview) -> str:
    at = _ring.EXTRAS_STEM_AT
    return _ring._cstr(bytes(buf[at : at + _ring.EXTRAS_STEM_SIZE]))


# -- the host's side ----------------------------------------------------------------------


class HostExtras:
    """One per session that asked for extras: ``check`` runs in the heartbeat, ``serve``
    in a thread of its own, at most once."""

    def __init__(self, handle: Watchdog) -> None:
        self.handle = handle
        self.started = False

    def check(self) -> None:
        """Heartbeat: one word read; the first request starts the serving thread."""
        w = self.handle._w
        if self.started or not w.attached:
            return
        request = int(w.words[_ring.W_EXTRAS_REQUEST])
        if not request:
            return
        self.started = True
        try:
            _thread.start_new_thread(self.serve, (request,))
        except RuntimeError:  # no thread to be had: answered, never raised
            self._answer(request, dict.fromkeys(self.handle._config.extras, FAILED))

    def serve(self, request: int) -> None:
        """Write the extras asked for and answer ``request``. Never raises: whatever
        could not be done is answered FAILED."""
        config = self.handle._config
        outcomes = dict.fromkeys(config.extras, FAILED)
        try:
            stem = _read_stem(self.handle._w.buf)
            if not _plain_stem(stem):
                return
            dir_fd = open_dir(config.diagnostics_dir, create=False)
            try:
                if "stacks" in outcomes:
                    outcomes["stacks"] = _write(dir_fd, sibling(stem, "stacks"),
                                                stacks_text(skip=_thread.get_ident()))
                if "tracemalloc" in outcomes:
                    outcomes["tracemalloc"] = self._tracemalloc(dir_fd, stem)
            finally:
                os.close(dir_fd)
        except Exception:  # deliberately broad: this thread must never hurt the host
            return  # what was not done stays FAILED; the answer below still goes out
        finally:
            self._answer(request, outcomes)

    def _tracemalloc(self, dir_fd: int, stem: str) -> int:
        import _tracemalloc

        if not _tracemalloc.is_tracing():
            return NOT_TRACING
        need = SNAPSHOT_COST * _tracemalloc.get_tracemalloc_memory()
        headroom = self._headroom()
        words = self.handle._w.words
        words[_ring.EXTRAS_NEED_AT // 8] = need
        words[_ring.EXTRAS_HEADROOM_AT // 8] = headroom
        if need > headroom:
            return NO_HEADROOM
        import tracemalloc

        snapshot = tracemalloc.take_snapshot()
        top = snapshot.statistics("lineno")[:TOP_SITES]
        del snapshot  # the bulk of it: gone before the file is written
        traced, peak = tracemalloc.get_traced_memory()
        return _write(dir_fd, sibling(stem, "tracemalloc"),
                      sites_text(top, tracemalloc.get_traceback_limit(), traced, peak))

    def _headroom(self) -> int:
        """Bytes left under the effective limit at the watchdog's last sample: the
        winning limit less its usage (ratio x limit), as ``secondsToLimit`` counts it."""
        w = self.handle._w
        status = _reader.read_status(w.buf, w.words)
        if status is None or not status.heap_limit or not status.ratio < 1.0:  # NaN too
            return 0
        return int(status.heap_limit * (1.0 - max(0.0, status.ratio)))

    def _answer(self, request: int, outcomes: dict[str, int]) -> None:
        done = request & _REQUEST_MASK
        for i, name in enumerate(_ring.EXTRAS):
            done |= outcomes.get(name, NOT_ASKED) << (_OUTCOME_SHIFT + _OUTCOME_BITS * i)
        w = self.handle._w
        if w.attached:  # stopped since: the words are scratch memory, no harm either way
            w.words[_ring.W_EXTRAS_DONE] = done


def _write(dir_fd: int, name: str, text: str) -> int:
    """``name`` in the folder, whole or not at all: a private temp file (0600) linked
    into place, never over a file already there. WRITTEN or FAILED."""
    tmp = f".tmp-{os.getpid()}-extras-{os.urandom(4).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     FILE_MODE, dir_fd=dir_fd)
    except OSError:
        return FAILED
    try:
        try:
            view = memoryview(text.encode("utf-8", "replace"))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return FAILED
    finally:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
    return WRITTEN


def _clean(text: str) -> str:
    return text.replace("\n", "?").replace("\r", "?").replace("\t", "?")


def _main_thread_ident() -> int | None:
    threading = sys.modules.get("threading")  # never imported for this: it costs the host
    if threading is not None:
        return getattr(threading.main_thread(), "ident", None)
    probe = getattr(_thread, "_get_main_thread_ident", None)  # 3.12+
    return probe() if probe is not None else None


def stacks_text(skip: int | None = None) -> str:
    """Every thread's stack but ``skip``'s (the thread writing it), the main thread first,
    in faulthandler's format (``watchdog-core show`` reads both): file, line and function
    of each frame, innermost first; never a value."""
    frames = sys._current_frames()
    main = _main_thread_ident()
    lines = ["# every thread's stack at the first critical dump: file, line, function"]
    try:
        idents = sorted((i for i in frames if i != skip), key=lambda i: i != main)
        for ident in idents[:MAX_THREADS]:
            lines.append(f"Thread 0x{ident:016x} (most recent call first):")
            frame: FrameType | None = frames[ident]
            for _ in range(MAX_FRAMES):
                if frame is None:
                    break
                code = frame.f_code
                function = getattr(code, "co_qualname", code.co_name)  # 3.11+: Class.method
                line = "?" if frame.f_lineno is None else frame.f_lineno
                lines.append(f'  File "{_clean(code.co_filename)}", line {line} '
                             f"in {_clean(function)}")
                frame = frame.f_back
            else:
                if frame is not None:
                    lines.append("  ...")
            lines.append("")
        if len(idents) > MAX_THREADS:
            lines.append(f"# {len(idents) - MAX_THREADS} more threads left out")
    finally:
        del frames  # the frames hold their locals: not a moment longer than needed
    return "\n".join(lines) + "\n"


def sites_text(top: list[Statistic], frames: int, traced: int, peak: int) -> str:
    """tracemalloc's top allocation sites, one ``file:line size count`` a line (bytes)."""
    lines = [f"# the top {len(top)} allocation sites by size, grouped by line "
             f"(tracemalloc, {frames} frames; {traced} bytes traced, {peak} at the peak)",
             "# file:line size count"]
    for statistic in top:
        where = statistic.traceback[0]
        lines.append(f"{_clean(where.filename)}:{where.lineno} {statistic.size} "
                     f"{statistic.count}")
    return "\n".join(lines) + "\n"


# -- the watchdog's side --------------------------------------------------------------------

PENDING = "asked of the host once this dump was on disk; no answer yet"
LATE = (f"asked of the host; no answer within {EXTRAS_WAIT:g} s (a host thread serves "
        "extras: a host holding the GIL cannot); an answer after this still replaces it")


class CriticalExtras:
    """The watchdog's side: ``ask`` after a critical dump, ``follow`` at every sample
    until the host has answered and the dump names what it wrote."""

    def __init__(self, buf: memoryview, words: memoryview, writer: DumpWriter) -> None:
        self.buf, self.words, self.writer = buf, words, writer
        self.wanted: tuple[str, ...] = ()  # as the config block said when asked
        self.name: str | None = None  # the dump followed, until its extras are in
        self.noted = ""  # the note it carries on disk: "", PENDING or LATE
        self.deadline = 0.0
        self.failed = False  # a rewrite failed: said once
        if int(words[_ring.W_EXTRAS_REQUEST]):
            stem = _read_stem(buf)  # a watchdog restarted after asking: follow on
            self.wanted = self._asked_for()
            if self.wanted and _plain_stem(stem):
                self.name, self.noted = stem + ".json", PENDING
                self.deadline = time.monotonic() + EXTRAS_WAIT

    def _asked_for(self) -> tuple[str, ...]:
        """The extras in the config block's options, read now: a host that joined
        ``watchdog-core run``'s ring writes its own settings there after we started."""
        raw = bytes(self.buf[_ring.CONFIG_AT : _ring.CONFIG_AT + _ring.CONFIG.size])
        return _ring.RingConfig.unpack(raw).extras

    def ask(self, name: str) -> None:
        """The critical dump ``name`` is on disk: ask the host for the extras, unless
        they were asked for already this session or the host has stopped."""
        words = self.words
        stem = name[: -len(".json")]
        if (int(words[_ring.W_EXTRAS_REQUEST]) or int(words[_ring.W_FLAGS]) & _ring.FLAG_STOPPED
                or not _plain_stem(stem)):
            return
        self.wanted = self._asked_for()
        if not self.wanted:
            return
        _ring._put_str(self.buf, _ring.EXTRAS_STEM_AT, _ring.EXTRAS_STEM_SIZE, stem)
        words[_ring.W_EXTRAS_REQUEST] = 1  # after the stem: the host reads it on seeing this
        self.name, self.noted = name, ""
        self.deadline = time.monotonic() + EXTRAS_WAIT

    def follow(self) -> None:
        """One look at the answer word; the dump is rewritten only when something
        changed: asked (the note), answered (the files), or no answer in time."""
        if self.name is None:
            return
        done = int(self.words[_ring.W_EXTRAS_DONE])
        answered = done & _REQUEST_MASK
        if answered and answered >= int(self.words[_ring.W_EXTRAS_REQUEST]):
            if self._rewrite(*self._outcomes(done)):
                self.name = None
        elif not self.noted:
            self.noted = PENDING
            self._rewrite({}, dict.fromkeys(self.wanted, PENDING))
        elif self.noted == PENDING and time.monotonic() >= self.deadline:
            self.noted = LATE
            self._rewrite({}, dict.fromkeys(self.wanted, LATE))

    def _outcomes(self, done: int) -> tuple[dict[str, str], dict[str, str]]:
        """(extras: name -> file, extrasMissing: name -> why) from the host's answer."""
        assert self.name is not None
        stem = self.name[: -len(".json")]
        files, missing = {}, {}
        for i, name in enumerate(_ring.EXTRAS):
            if name not in self.wanted:
                continue
            outcome = done >> (_OUTCOME_SHIFT + _OUTCOME_BITS * i) & (1 << _OUTCOME_BITS) - 1
            file = sibling(stem, name)
            if outcome == WRITTEN and self._present(file):
                files[name] = file
            else:
                missing[name] = self._why(outcome)
        return files, missing

    def _why(self, outcome: int) -> str:
        if outcome == WRITTEN:
            return "the host wrote it, but it is gone from the folder"
        if outcome == NOT_TRACING:
            return ("the host was not tracing allocations (tracemalloc.start(), or "
                    "start_watchdog(tracemalloc_frames=N))")
        if outcome == NO_HEADROOM:
            need = int(self.words[_ring.EXTRAS_NEED_AT // 8])
            headroom = int(self.words[_ring.EXTRAS_HEADROOM_AT // 8])
            return (f"skipped: a snapshot needs about {need} bytes ({SNAPSHOT_COST} x "
                    f"tracemalloc's own memory), more than the {headroom} bytes left under "
                    "the limit")
        return "the host could not write it (no folder, a full disk, or an error)"

    def _present(self, file: str) -> bool:
        """A file of ours beside the dump, not a link or something planted there."""
        try:
            st = os.stat(file, dir_fd=self.writer.store.open(), follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()

    def _rewrite(self, files: dict[str, str], missing: dict[str, str]) -> bool:
        """The followed dump again, atomically, with these extras and notes in place of
        the ones before; True once on disk (or when there is no dump left to finish)."""
        from ._document import loads, to_json
        from ._report import say

        assert self.name is not None
        store = self.writer.store
        dump = loads(store.read_dump(self.name))
        extras, extras_missing = (dump.get("extras"), dump.get("extrasMissing")) if dump else (
            None, None)
        if dump is None or not isinstance(extras, dict) or not isinstance(extras_missing, dict):
            self.name = None  # pruned or replaced by someone: nothing left to finish
            return True
        before = (dict(extras), dict(extras_missing))
        for name in self.wanted:
            extras.pop(name, None)
            extras_missing.pop(name, None)
        extras.update(files)
        extras_missing.update(missing)
        if (extras, extras_missing) == before:
            return True  # a restarted watchdog finding it done already
        try:
            store.replace(self.name, to_json(dump))  # type: ignore[arg-type]
        except OSError as exc:
            if not self.failed:
                self.failed = True
                say(f"cannot add the extras to {self.name}: {exc}")
            store.close()  # opened afresh next time, as after any failed write
            return False
        self.writer.prune(keep=self.name)
        return True
