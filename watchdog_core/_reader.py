"""Reading a ring: one seqlock reader for live segments and saved images
(docs/ring-format.md, "Reading").

Everyone reads through ``RingImage`` (the watchdog, the CLI, tools/read_ring.py), never
through a tracked ``SharedMemory``, and a live segment and a saved image take the same
path. Hostile input is expected: every count and offset is checked, and a slot that
cannot be right is counted torn, not returned.
"""

from __future__ import annotations

import math
import struct

from ._config import validate_session_id
from ._ring import (
    _LEVELS,
    _PREFIX,
    CONFIG,
    CONFIG_AT,
    CURRENT,
    DIR_AT,
    DIR_SIZE,
    DUMP_NAME_AT,
    DUMP_NAME_SIZE,
    EXCEPTION_AT,
    EXCEPTION_SIZE,
    FLAG_CRASH_FILE,
    FLAG_EXCEPTION,
    FLAG_EXITING,
    FLAG_FOREIGN_FAULTHANDLER,
    FLAG_HOST_SENTRY,
    FLAG_SIGTERM,
    FLAG_STACK_SIGNAL,
    FLAG_STACK_SIGNAL_LOST,
    FLAG_STACK_SIGNAL_TAKEN,
    FLAG_STOPPED,
    FLAG_THREAD_EXCEPTION,
    GEOMETRIES,
    HEADER_SIZE,
    HEADER_WORDS,
    KIND_MARK,
    KIND_NAMES,
    LIMIT_SOURCES,
    MAGIC,
    MAX_STATS,
    NAME_SIZE,
    NAMES_AT,
    REASON_AT,
    REASON_SIZE,
    SESSION_ID_AT,
    SESSION_ID_SIZE,
    SLOT_LABEL,
    SLOT_VALUES,
    SLOT_WORDS,
    STATIC,
    STATUS,
    STATUS_AT,
    THREAD_EXCEPTION_AT,
    THREAD_EXCEPTION_SIZE,
    W_DEATH,
    W_DUMPS,
    W_FLAGS,
    W_HEARTBEAT,
    W_LABEL_SEQ,
    W_LAST_RECORD_NS,
    W_NAME_COUNT,
    W_NONCE,
    W_RESTARTS,
    W_STATUS_SEQ,
    W_VERDICT,
    W_WATCHDOG_PID,
    Geometry,
    RingConfig,
    RingError,
    _cstr,
    slot_format,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Sequence

class Slot:
    __slots__ = ("index", "kind", "values", "label")

    def __init__(self, index: int, kind: str, values: dict[str, int | float],
                 label: str | None) -> None:
        self.index, self.kind, self.values, self.label = index, kind, values, label

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"index": self.index, "kind": self.kind}
        if self.label is not None:
            out["label"] = self.label
        out["values"] = self.values
        return out


class RingImage:
    """A ring's header, decoded once, and its slots, read when asked.

    ``buffer`` is the live segment (a mapping or a memoryview of it) or the static
    bytes of a saved ``.ring`` image; both go through the same code
    (docs/ring-format.md, "Reading"). The header fields are a snapshot taken here.
    Over a live segment ``slots()`` and ``newest()`` read the slots at call time,
    each under its seqlock, so two calls may see different records.

    The image holds a view of ``buffer`` until ``release()`` (or the end of a
    ``with`` block): release it before closing a mapping. After that only the
    header fields remain; ``slots()`` raises ``ValueError``.

    ``header`` (a copy taken earlier) replaces the buffer's own header: the watchdog
    falls back to the header as it was at attach when the host scribbled over it.
    """

    def __init__(self, buffer: bytes | bytearray | memoryview | mmap.mmap,
                 header: bytes | None = None) -> None:
        view = memoryview(buffer).cast("B")
        words: memoryview | None = None
        try:
            # Copied once: every header field decodes from it.
            head = header if header is not None else bytes(view[:HEADER_SIZE])
            self.slot_count, self.geometry = _validate_header(head, len(view))
            words = view[: self.geometry.ring_size(self.slot_count)].cast("Q")
            self._buf, self._words = view, words
            self._decode_header(head)
        except BaseException:
            if words is not None:
                words.release()
            view.release()
            raise

    def release(self) -> None:
        """Drop the views of ``buffer`` (so a mapping can close). Idempotent."""
        self._words.release()
        self._buf.release()

    def __enter__(self) -> RingImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # header ---------------------------------------------------------------------

    def _decode_header(self, head: bytes) -> None:
        fields = STATIC.unpack_from(head, 0)
        self.host_pid: int = fields[9]
        self.host_start_ticks: int = fields[10]
        self.created_unix_ns: int = fields[11]
        self.created_mono_ns: int = fields[12]
        self.interval: float = fields[13]
        self.boot_id = _cstr(fields[14])
        self.session_id = _cstr(head[SESSION_ID_AT : SESSION_ID_AT + SESSION_ID_SIZE])
        self.diagnostics_dir = _cstr(head[DIR_AT : DIR_AT + DIR_SIZE])
        # Both become parts of paths the reader may write to: check them like user input.
        try:
            validate_session_id(self.session_id, "session id")
        except ValueError:
            raise RingError(f"corrupt ring header: bad session id {self.session_id!r}") from None
        if not self.diagnostics_dir.startswith("/") or "\ufffd" in self.diagnostics_dir:
            raise RingError("corrupt ring header: the diagnostics directory is not an "
                            "absolute path")
        self.config = RingConfig.unpack(head[CONFIG_AT : CONFIG_AT + CONFIG.size])
        words = memoryview(head).cast("Q")
        self.flags: int = words[W_FLAGS]
        self.watchdog_pid: int = words[W_WATCHDOG_PID]
        self.heartbeat_ns: int = words[W_HEARTBEAT]
        self.dumps: int = words[W_DUMPS]
        self.restarts: int = words[W_RESTARTS]
        self.last_record_unix_ns: int = words[W_LAST_RECORD_NS]
        self.features: int = fields[8]  # FEATURE_* bits of the ring's writer
        self.nonce: int = words[W_NONCE]  # names the host's private files
        self.death_state: int = words[W_DEATH]  # DEATH_*: how far its death was handled
        self.verdict_word: int = words[W_VERDICT]  # the watchdog's verdict, if judged
        words.release()
        self.names: list[str] = []
        self.corrupt_names = self._load_names() > MAX_STATS
        self.exception = (
            _cstr(head[EXCEPTION_AT : EXCEPTION_AT + EXCEPTION_SIZE]) or None
            if self.flags & FLAG_EXCEPTION else None
        )
        self.thread_exception = (
            _cstr(head[THREAD_EXCEPTION_AT : THREAD_EXCEPTION_AT + THREAD_EXCEPTION_SIZE])
            or None if self.flags & FLAG_THREAD_EXCEPTION else None
        )
        self.last_dump = read_dump_name(head)
        self.request_reason = _cstr(head[REASON_AT : REASON_AT + REASON_SIZE]) or None
        self.last_label = self._read_label()
        self.status = read_status(self._buf, self._words)

    def _load_names(self) -> int:
        """Read the stat names registered so far from ``buffer``; returns the raw count.

        Not from the header copy: the host writes a name's bytes before the count word
        that covers it, so reading the count first and the names after never meets a
        counted name that is not there yet (a copy of the whole header, taken in no
        particular order, could). A registered name never changes: those read stay.
        """
        raw = int(self._words[W_NAME_COUNT])
        buf = self._buf
        for column in range(len(self.names), min(raw, MAX_STATS)):
            at = NAMES_AT + column * NAME_SIZE
            self.names.append(_cstr(bytes(buf[at : at + NAME_SIZE])))
        return raw

    def _read_label(self) -> str | None:
        return read_label(self._buf, self._words, self.geometry)

    @property
    def exiting(self) -> bool:
        return bool(self.flags & FLAG_EXITING)

    @property
    def stopped(self) -> bool:
        return bool(self.flags & FLAG_STOPPED)

    # slots ------------------------------------------------------------------------

    def slots(self, last: int | None = None) -> tuple[list[Slot], int]:
        """The newest ``last`` slots that read whole (all of them with ``None``), oldest
        first, and the number of torn slots met on the way.

        The newest record is found from a few sequence words (``newest_index``);
        from it back, slot by slot, each is copied under its seqlock until ``last``
        are whole, so a dump copies one slot, not the ring. A torn slot (being written
        throughout the read, or with contents that cannot be right) is counted and
        skipped, never returned as data; a never-written one is neither.
        """
        count, slot_words = self.slot_count, self.geometry.slot_words
        newest = newest_index(self._words, count, slot_words=slot_words)
        want = count if last is None else max(0, min(last, count))
        out: list[Slot] = []
        torn = 0
        for back in range(min(count, newest + 1)):
            if len(out) >= want:
                break
            k = (newest - back) % count
            if not self._words[HEADER_WORDS + k * slot_words]:
                continue  # never written
            slot = self._read_slot(k)
            if slot is None:
                torn += 1
            else:
                out.append(slot)
        out.sort(key=_by_index)  # a retried slot may hold a record newer than the rest
        return out, torn

    def _read_slot(self, k: int) -> Slot | None:
        """Slot ``k`` under its seqlock: the sequence, a copy of the slot, the sequence
        again; kept only when both reads and the copy's own first word agree, are even
        and not 0. One that changes while read is read again: it then holds a newer
        record, as good as the one it replaced if it reads whole."""
        word = HEADER_WORDS + k * self.geometry.slot_words
        at = word << 3
        words, buf, size = self._words, self._buf, self.geometry.slot_size
        for _ in range(_SLOT_TRIES):
            before = int(words[word])
            raw = bytes(buf[at : at + size])
            after = int(words[word])
            if before != after or before & 1:
                continue  # a writer was in this slot during the copy
            if before == 0 or int.from_bytes(raw[:8], "little") != before:
                return None  # a sequence that held still but is wrong: corrupt
            slot = self._decode_slot(raw, before)
            if slot is None or slot.index % self.slot_count != k:
                return None
            return slot
        return None

    def _decode_slot(self, raw: bytes, seq: int) -> Slot | None:
        mask, count, kind = _PREFIX.unpack_from(raw, 8)
        if count > len(self.names):
            self._load_names()  # a name registered since this image was made
        if count > len(self.names) or kind not in KIND_NAMES:
            return None
        values = _values_struct(count, mask).unpack_from(raw, SLOT_VALUES)
        label = (_cstr(raw[SLOT_LABEL : SLOT_LABEL + self.geometry.label_size])
                 if kind == KIND_MARK else None)
        values_by_name = dict(zip(self.names, values, strict=False))  # count <= len(names)
        return Slot(seq // 2 - 1, KIND_NAMES[kind], values_by_name, label)

    def newest(self) -> Slot | None:
        slots, _ = self.slots(last=1)
        return slots[-1] if slots else None

    def header_dict(self) -> dict[str, object]:
        return {
            "sessionId": self.session_id,
            "hostPid": self.host_pid,
            "hostStartTicks": self.host_start_ticks,
            "bootId": self.boot_id,
            "created": self.created_unix_ns / 1e9,
            "slots": self.slot_count,
            "interval": self.interval,
            "diagnosticsDir": self.diagnostics_dir,
            "watchdogPid": self.watchdog_pid or None,
            "flags": flag_names(self.flags),
            "exception": self.exception,
            "lastLabel": self.last_label,
            "stats": list(self.names),
            "dumps": self.dumps,
            "lastDump": self.last_dump,
            "status": self.status.as_dict() if self.status else None,
        }


# Reads of one slot before it counts as torn. The host fills a slot in about a
# microsecond; one still odd or changing after three copies has a writer held up in it
# (preempted, say), and the reader moves on to the next older slot.
_SLOT_TRIES = 3


def _by_index(slot: Slot) -> int:
    return slot.index


_STRUCTS: dict[tuple[int, int], struct.Struct] = {}


def _values_struct(count: int, mask: int) -> struct.Struct:
    # A session has a handful of layouts; a hostile ring could have thousands, so the
    # cache is bounded. A plain dict: functools costs the host 1.6 ms to import.
    key = (count, mask)
    found = _STRUCTS.get(key)
    if found is None:
        if len(_STRUCTS) >= 64:
            _STRUCTS.clear()
        found = _STRUCTS[key] = struct.Struct("<" + slot_format(count, mask))
    return found


MAX_SLOTS = 1 << 20  # the most a ring may have (ring_slots is checked against it too)


def _validate_header(head: bytes, size: int) -> tuple[int, Geometry]:
    """Check the header copy ``head`` of a ring of ``size`` bytes; returns the slot count
    and the geometry of its version."""
    if len(head) < HEADER_SIZE:
        if len(head) >= 8 and head[:8] != MAGIC:
            raise RingError("not a watchdog-core ring (bad magic)")
        raise RingError(f"truncated ring: {len(head)} bytes, the header alone is "
                        f"{HEADER_SIZE}")
    (magic, version, header_size, slots, slot_size, max_stats, name_size,
     label_size) = struct.unpack_from("<8sIIIIIII", head, 0)
    if magic != MAGIC:
        raise RingError("not a watchdog-core ring (bad magic)")
    geometry = GEOMETRIES.get(version)
    if geometry is None:
        raise RingError(f"unsupported ring version {version} (this reader knows "
                        f"{', '.join(map(str, sorted(GEOMETRIES)))})")
    if (header_size, slot_size, max_stats, name_size, label_size) != (
        HEADER_SIZE, geometry.slot_size, MAX_STATS, NAME_SIZE, geometry.label_size
    ):
        raise RingError(f"corrupt ring header: geometry does not match version {version}")
    if not 1 <= slots <= MAX_SLOTS:
        raise RingError(f"corrupt ring header: {slots} slots")
    if size < geometry.ring_size(slots):
        raise RingError(f"truncated ring: {size} bytes for {slots} slots "
                        f"(needs {geometry.ring_size(slots)})")
    return int(slots), geometry


def read_status(buf: memoryview, live_words: memoryview | None = None) -> Status | None:
    """The watchdog's status block under its seqlock; None before the first sample."""
    words = live_words if live_words is not None else buf[:HEADER_SIZE].cast("Q")
    try:
        for _ in range(100):
            seq = int(words[W_STATUS_SEQ])
            raw = bytes(buf[STATUS_AT : STATUS_AT + STATUS.size])
            if seq & 1 == 0 and seq == int(words[W_STATUS_SEQ]):
                return Status(raw) if seq else None
        return None
    finally:
        if live_words is None:
            words.release()


def read_label(buf: memoryview, words: memoryview,
               geometry: Geometry = CURRENT) -> str | None:
    """The host's last ``mark()`` label, read under its seqlock (word W_LABEL_SEQ) from
    ``buf`` (the ring; ``words``, the same as 64-bit words): its label bytes alone, not
    the header, so the watchdog can afford it at every sample. None before the first
    mark, and when a writer held the label through every try. ``geometry``: the ring's
    version's (the watchdog's own ring is always the current one)."""
    at, size = geometry.label_at, geometry.label_size
    for _ in range(100):
        seq = int(words[W_LABEL_SEQ])
        raw = bytes(buf[at : at + size])
        if seq & 1 == 0 and seq == words[W_LABEL_SEQ]:
            return _cstr(raw) if seq else None
    return None


def read_dump_name(buf: bytes | memoryview) -> str | None:
    return _cstr(bytes(buf[DUMP_NAME_AT : DUMP_NAME_AT + DUMP_NAME_SIZE])) or None


def flag_names(flags: int) -> list[str]:
    names = ((FLAG_EXITING, "exiting"), (FLAG_STOPPED, "stopped"), (FLAG_EXCEPTION, "exception"),
             (FLAG_CRASH_FILE, "crash-file"), (FLAG_STACK_SIGNAL, "stack-signal"),
             (FLAG_FOREIGN_FAULTHANDLER, "foreign-faulthandler"),
             (FLAG_STACK_SIGNAL_TAKEN, "stack-signal-taken"), (FLAG_SIGTERM, "sigterm"),
             (FLAG_THREAD_EXCEPTION, "thread-exception"),
             (FLAG_STACK_SIGNAL_LOST, "stack-signal-lost"),
             (FLAG_HOST_SENTRY, "host-sentry"))
    return [name for bit, name in names if flags & bit]


class Status:
    """The watchdog's last grading of the host, as kept in the header."""

    __slots__ = ("level", "ratio", "rss", "heap_used", "heap_limit", "limit_source",
                 "growth", "seconds_to_limit", "sampled", "samples")

    def __init__(self, raw: bytes) -> None:
        (level, self.ratio, self.rss, self.heap_used, limit, self.growth, to_limit, source,
         sampled_ns, self.samples) = STATUS.unpack(raw)
        self.level: str = _LEVELS[level] if 0 <= level < len(_LEVELS) else "normal"
        self.heap_limit: int | None = limit or None
        self.limit_source: str = (LIMIT_SOURCES[source] if 0 <= source < len(LIMIT_SOURCES)
                                  else "none")
        # NaN stands for "not growing"
        self.seconds_to_limit: float | None = None if math.isnan(to_limit) else to_limit
        self.sampled: float = sampled_ns / 1e9

    def as_dict(self) -> dict[str, object]:
        return {"level": self.level, "ratio": self.ratio, "rss": self.rss,
                "heapUsed": self.heap_used, "heapLimit": self.heap_limit,
                "limitSource": self.limit_source, "growthBytesPerSecond": self.growth,
                "secondsToLimit": self.seconds_to_limit, "sampled": self.sampled,
                "samples": self.samples}







def newest_index(words: Sequence[int], slot_count: int, hint: int = -1, *,
                 slot_words: int = SLOT_WORDS) -> int:
    """The index of the newest complete-or-in-progress slot, -1 for an empty ring.

    Cheap enough for the watchdog's every sample: record ``i`` is always in slot
    ``i % slot_count``, so the slots' indices rise along the ring up to the newest and
    drop after it, and a binary search finds it in a dozen reads. A scan of every
    sequence word would touch every page of the ring at every sample, and keep all of
    a mostly unwritten segment resident (2.1 MiB for 4096 slots, per session).
    ``hint``, the newest index seen before, makes an unchanged ring two reads.
    """
    def held(slot: int) -> int:  # the index slot ``slot`` holds, -1 if never written
        return (words[HEADER_WORDS + slot * slot_words] + 1) // 2 - 1

    if hint >= 0 and held(hint % slot_count) == hint and (
            held((hint + 1) % slot_count) <= hint):
        return hint
    first = held(0)
    if first < 0:
        return -1
    # The last slot whose index is >= slot 0's: past it come the older lap's, or none.
    low, high = 0, slot_count - 1
    while low < high:
        middle = (low + high + 1) // 2
        if held(middle) >= first:
            low = middle
        else:
            high = middle - 1
    return held(low)
