"""The host's writer of the ring: the hot path's state, slow paths and slot commits
(docs/ring-format.md, docs/performance.md).

``record``/``recorder``/``mark`` in ``_host`` use the writer's attributes directly;
a slot is written between two stores of its sequence word (a seqlock). This module
imports stdlib only: the host loads it in ``start_watchdog()``.
"""

from __future__ import annotations

import _thread
import _weakref
import itertools
import os
import struct

from ._ring import (
    _PREFIX,
    CONFIG,
    CONFIG_AT,
    DIR_AT,
    DIR_SIZE,
    EXCEPTION_AT,
    EXCEPTION_SIZE,
    FLAG_EXCEPTION,
    FLAG_THREAD_EXCEPTION,
    HEADER_SIZE,
    HEADER_WORDS,
    LABEL_AT,
    LABEL_SIZE,
    MAGIC,
    MAX_STATS,
    NAME_SIZE,
    NAMES_AT,
    REASON_AT,
    REASON_SIZE,
    SESSION_ID_AT,
    SESSION_ID_SIZE,
    SLOT_LABEL,
    SLOT_SIZE,
    SLOT_WORDS,
    STATIC,
    THREAD_EXCEPTION_AT,
    THREAD_EXCEPTION_SIZE,
    VERSION,
    W_FLAGS,
    W_LABEL_SEQ,
    W_NAME_COUNT,
    W_NONCE,
    RingConfig,
    _put_str,
    encode_label,
    ring_size,
    slot_format,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    import weakref
    from collections.abc import Callable


class RingWriter:
    """The host's side of the ring.

    ``record``/``recorder``/``mark`` in ``_host`` use the attributes directly; they
    are the hot path (docs/performance.md). Values are carried forward (``values``, with the last
    fast-path call folded in by ``sync()``) so every slot holds the full current state.
    A stat's column is int64 until a float (or an int beyond int64) is recorded for it;
    from then on it is float64.
    """

    __slots__ = ("_mapping", "buf", "words", "slot_count", "counter", "names", "index",
                 "values", "last", "layout", "runs", "_lock", "lock_fd")

    def __init__(self, mapping: mmap.mmap | None, slot_count: int) -> None:
        self._mapping = mapping
        # The segment's descriptor holding the host's lock (see _shm): open exactly as
        # long as this writer is attached, so the lock says whether the host lives.
        self.lock_fd = -1
        self.buf = memoryview(mapping) if mapping is not None else _scratch(slot_count)
        self.words = self.buf.cast("Q")
        self.slot_count = slot_count
        self.counter = itertools.count()
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.values: list[int | float] = []
        # The fast paths only remember the arguments of a call that covered every column
        # (a dict or tuple in column order); `sync()` folds them into `values` when a
        # slow path needs the carried state. That saves a list update per call.
        self.last: dict[str, int | float] | tuple[int | float, ...] | None = None
        # (pack_into, type mask, value count, every name in column order): replaced as one
        # tuple when a name is added or a column turns float, so the hot path reads one
        # attribute and never a mix of two layouts.
        self.layout: tuple[Callable[..., None], int, int, tuple[str, ...]] = (
            _PREFIX.pack_into, 0, 0, ())
        # record(**stats) keyword orders seen -> the columns they fill (slice or list)
        self.runs: dict[tuple[str, ...], tuple[int, int] | list[int]] = {}
        # Name registration only, never the hot path; re-made unlocked in a forked child.
        self._lock = _fork_safe_lock()

    def init_header(self, *, session_id: str, host_pid: int, host_start_ticks: int,
                    created_unix_ns: int, created_mono_ns: int, interval: float,
                    boot_id: str, diagnostics_dir: str, config: RingConfig,
                    features: int = 0) -> None:
        STATIC.pack_into(self.buf, 0, MAGIC, VERSION, HEADER_SIZE, self.slot_count, SLOT_SIZE,
                         MAX_STATS, NAME_SIZE, LABEL_SIZE, features, host_pid,
                         host_start_ticks,
                         created_unix_ns, created_mono_ns, interval,
                         boot_id.encode("ascii", "replace")[:39])
        _put_str(self.buf, SESSION_ID_AT, SESSION_ID_SIZE, session_id)
        _put_str(self.buf, DIR_AT, DIR_SIZE, diagnostics_dir)
        self.buf[CONFIG_AT : CONFIG_AT + CONFIG.size] = config.pack()
        self.words[W_NONCE] = int.from_bytes(os.urandom(4), "little") or 1

    # -- slow paths, outside the hot loop ------------------------------------------

    def sync(self) -> list[int | float]:
        """The carried values, with the last fast-path call folded in."""
        last = self.last
        if last is not None:
            self.last = None
            row = list(last.values()) if isinstance(last, dict) else list(last)
            self.values[0 : len(row)] = row
        return self.values

    def add_name(self, name: object) -> int:
        """Register a stat name; returns its column. Raises ValueError at the 33rd."""
        if not isinstance(name, str):
            raise TypeError(f"stat names must be str, got {name!r}")
        try:
            # Strict: a lone surrogate would be read back as U+FFFD, and two names that
            # differ only there would become one stat, one value lost.
            raw = name.encode("utf-8")
        except UnicodeEncodeError:
            raw = b""
        if not raw or len(raw) >= NAME_SIZE or b"\0" in raw:
            raise ValueError(f"stat name must be 1-{NAME_SIZE - 1} UTF-8 bytes without NUL: "
                             f"{name!r}")
        with self._lock:
            found = self.index.get(name)
            if found is not None:
                return found
            self.sync()
            column = len(self.names)
            if column >= MAX_STATS:
                from ._config import ordinal  # the error path only

                raise ValueError(f"at most {MAX_STATS} distinct stat names per session; "
                                 f"{name!r} would be the {ordinal(column + 1)}")
            at = NAMES_AT + column * NAME_SIZE
            self.buf[at : at + NAME_SIZE] = raw.ljust(NAME_SIZE, b"\0")
            self.values.append(0)
            self.names.append(name)
            self._relayout(self.layout[1])
            self.index[name] = column
            self.words[W_NAME_COUNT] = column + 1  # after the name bytes: readers trust the count
            return column

    def repair(self) -> None:
        """Bring the column types in line with the carried values after a struct.error."""
        with self._lock:
            mask = self.layout[1]
            values = self.sync()
            for column, value in enumerate(values):
                if type(value) is float:
                    mask |= 1 << column
                elif not -(1 << 63) <= value < 1 << 63:  # an int: floats were caught above
                    values[column] = _to_float(value)
                    mask |= 1 << column
            self._relayout(mask)

    def _relayout(self, mask: int) -> None:
        # A new Struct per layout change; layouts change a handful of times per session.
        count = len(self.values)
        self.layout = (struct.Struct("<IHH" + slot_format(count, mask)).pack_into, mask, count,
                       tuple(self.names))

    def columns_for(self, names: tuple[str, ...]) -> tuple[int, int] | list[int]:
        """The columns a keyword order fills: a (start, end) slice when contiguous."""
        columns = [self.index[n] if n in self.index else self.add_name(n) for n in names]
        first = columns[0] if columns else 0
        run: tuple[int, int] | list[int] = columns
        if columns == list(range(first, first + len(columns))):
            run = (first, first + len(columns))
        if len(self.runs) < 256:  # call sites are few; a runaway caller just stays slow
            self.runs[names] = run
        return run

    def commit(self, kind: int, label: bytes | None = None) -> None:
        """Write one slot with the current values (mark(); record() writes its own)."""
        i = next(self.counter)
        s = HEADER_WORDS + (i % self.slot_count) * SLOT_WORDS
        words = self.words
        words[s] = 2 * i + 1
        self.commit_at(s, kind)
        if label is not None:
            at = (s << 3) + SLOT_LABEL
            self.buf[at : at + LABEL_SIZE] = label
        words[s] = 2 * i + 2

    def write_checked(self, s: int, i: int, names: tuple[str, ...],
                      new: tuple[object, ...], kind: int) -> None:
        """The careful path of record()/recorders: check, convert, register, then pack.

        Slot ``s`` (record ``i``) has an odd sequence. On bad input the slot is
        completed with the unchanged state before the error propagates, so nothing
        is lost and no slot stays odd.
        """
        try:
            if len(new) != len(names):
                raise TypeError(f"recorder takes {len(names)} values ({', '.join(names)}), "
                                f"got {len(new)}")
            checked: list[int | float] = [
                v if type(v) in _EXACT else coerce(n, v)  # type: ignore[misc]
                for n, v in zip(names, new, strict=True)
            ]
            run = self.runs.get(names)
            if run is None:
                run = self.columns_for(names)
        except BaseException:
            self.commit_at(s, kind)
            self.words[s] = 2 * i + 2
            raise
        values = self.sync()
        if type(run) is tuple:
            values[run[0] : run[1]] = checked
        else:
            for column, value in zip(run, checked, strict=True):
                values[column] = value
        self.commit_at(s, kind)

    def commit_at(self, s: int, kind: int) -> None:
        """Pack the current values into the slot at word ``s`` (its sequence is odd)."""
        for _ in range(3):  # another thread may change the layout between reads
            pack, mask, count, _ = self.layout
            try:
                pack(self.buf, (s << 3) + 8, mask, count, kind, *self.sync())
                return
            except struct.error:
                self.repair()

    def set_label(self, label: bytes) -> None:
        words = self.words
        seq = words[W_LABEL_SEQ]
        words[W_LABEL_SEQ] = seq | 1
        self.buf[LABEL_AT : LABEL_AT + LABEL_SIZE] = label
        words[W_LABEL_SEQ] = (seq | 1) + 1

    def set_request_reason(self, reason: str) -> None:
        _put_str(self.buf, REASON_AT, REASON_SIZE, encode_label(reason).rstrip(b"\0"))

    def set_flag(self, flag: int) -> None:
        self.words[W_FLAGS] |= flag

    def set_exception(self, type_name: str) -> None:
        _put_str(self.buf, EXCEPTION_AT, EXCEPTION_SIZE, type_name)
        self.set_flag(FLAG_EXCEPTION)

    def set_thread_exception(self, type_name: str) -> None:
        _put_str(self.buf, THREAD_EXCEPTION_AT, THREAD_EXCEPTION_SIZE, type_name)
        self.set_flag(FLAG_THREAD_EXCEPTION)

    def detach(self) -> None:
        """Point every write at private scratch memory and drop the shared mapping.

        Used after fork (the child must never write into the parent's ring) and
        after stop(): the hot path keeps working and never raises, it just writes
        nowhere that matters.
        """
        mapping = self._mapping
        self._mapping = None
        scratch = _scratch(self.slot_count, shared=True)
        self.buf, self.words = scratch, scratch.cast("Q")
        if mapping is not None:
            # Another thread may be inside record()/recorder()/mark() right now, holding
            # the old `words` in a local and about to store through it. So the old views
            # are never released here (that thread would raise), only dropped: close()
            # fails with BufferError while one still lives, and the mapping is then
            # unmapped by the last view's release, when that call returns (the views keep
            # the mmap object alive, nothing else does). No write lands in freed memory.
            try:
                mapping.close()
            except (BufferError, ValueError):
                pass
        # The segment's lock lives exactly as long as the attachment (see __init__). In
        # a forked child _shm's at-fork hook has closed the child's copy already (the
        # parent's lock stays), and release() leaves a number it no longer knows alone.
        fd, self.lock_fd = self.lock_fd, -1
        if fd >= 0:
            from ._shm import release

            release(fd)

    @property
    def attached(self) -> bool:
        return self._mapping is not None


_EXACT = frozenset((int, float, bool))


def coerce(name: object, value: object) -> int | float:
    """A stat value as int or float; TypeError naming the stat for anything else.

    int/float subclasses, numpy scalars (``__index__``) and other ``numbers.Real``
    are converted; strings, bytes, None, complex are refused.
    """
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if not isinstance(value, (str, bytes)):
        index = getattr(type(value), "__index__", None)
        if index is not None:
            return int(index(value))
        import numbers

        if isinstance(value, numbers.Real):
            return float(value)
    raise TypeError(f"stat {name!s} must be an int or float, got {type(value).__name__}")


def _scratch(slot_count: int, *, shared: bool = False) -> memoryview:
    """Anonymous private memory for a writer without a segment; untouched pages cost
    nothing, and after a fork the child's writes stay the child's.

    A new writer (a disabled handle, the unit tests) gets memory of its own, which it
    may read back. ``shared``: the one mapping for every detached writer (stopped or
    forked): never freed, since their writes are garbage nobody reads and a thread
    still writing there must never meet freed memory. A mapping per stop grew the host
    by one per start/stop cycle. A larger ring replaces it with a larger one; writers
    still using the old one keep it alive.
    """
    global _shared_scratch
    import mmap

    size = ring_size(slot_count)
    if not shared:
        return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE))
    scratch = _shared_scratch
    if scratch is None or scratch.nbytes < size:
        scratch = _shared_scratch = memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE))
    return scratch


_shared_scratch: memoryview | None = None

# Writer locks, weakly: the at-fork hook below re-makes each one unlocked in a child,
# because a fork while another thread held one (registering a stat name) would leave the
# child's copy locked for ever and its first new stat name would deadlock. A set of weak
# references (the way WeakSet works; `_weakrefset` is not loaded at startup, `_weakref`
# is) holds only the locks of writers still alive, so it never grows with sessions.
_writer_locks: set[weakref.ref[_thread.LockType]] = set()


def _fork_safe_lock() -> _thread.LockType:
    lock = _thread.allocate_lock()
    _writer_locks.add(_weakref.ref(lock, _writer_locks.discard))
    return lock


def _reinit_locks_in_child() -> None:
    for ref in tuple(_writer_locks):
        lock = ref()
        if lock is not None:
            lock._at_fork_reinit()  # type: ignore[attr-defined]  # as threading does


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_locks_in_child)


def _to_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")
