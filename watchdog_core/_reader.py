"""Reading a ring: the seqlock reader, live or saved (SPEC 8, docs/ring-format.md).

Everyone reads through here (the watchdog, the CLI, tools/read_ring.py), never
through a tracked ``SharedMemory``. Hostile input is expected: every count and
offset is checked, and a slot that cannot be right is counted torn, not returned.
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
    FLAG_SIGTERM,
    FLAG_STACK_SIGNAL,
    FLAG_STACK_SIGNAL_TAKEN,
    FLAG_STOPPED,
    FLAG_THREAD_EXCEPTION,
    HEADER_SIZE,
    HEADER_WORDS,
    KIND_MARK,
    KIND_NAMES,
    LABEL_AT,
    LABEL_SIZE,
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
    SLOT_SIZE,
    SLOT_VALUES,
    SLOT_WORDS,
    STATIC,
    STATUS,
    STATUS_AT,
    THREAD_EXCEPTION_AT,
    THREAD_EXCEPTION_SIZE,
    VERSION,
    W_DUMPS,
    W_FLAGS,
    W_HEARTBEAT,
    W_LABEL_SEQ,
    W_LAST_RECORD_NS,
    W_NAME_COUNT,
    W_RESTARTS,
    W_STATUS_SEQ,
    W_WATCHDOG_PID,
    RingConfig,
    RingError,
    _cstr,
    ring_size,
    slot_format,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
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
    """A decoded ring: header fields, stat names, and the slots that read whole."""

    def __init__(self, data: bytes | memoryview, *, live: memoryview | None = None) -> None:
        """Decode ``data``. With ``live`` (the segment itself), each slot's sequence is
        re-read after copying it, so a slot rewritten during the read counts as torn."""
        self._data = memoryview(data)
        self._live = live
        self._live_words = live.cast("Q") if live is not None else None
        self._validate_header()
        self._decode_header()

    def release(self) -> None:
        """Drop the views of the data and the live segment (so a mapping can close)."""
        if self._live_words is not None:
            self._live_words.release()
            self._live_words = None
        self._live = None
        self._data.release()

    def __enter__(self) -> RingImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # header ---------------------------------------------------------------------

    def _validate_header(self) -> None:
        data = self._data
        if len(data) < HEADER_SIZE:
            if len(data) >= 8 and bytes(data[:8]) != MAGIC:
                raise RingError("not a watchdog-core ring (bad magic)")
            raise RingError(f"truncated ring: {len(data)} bytes, the header alone is "
                            f"{HEADER_SIZE}")
        (magic, version, header_size, slots, slot_size, max_stats, name_size,
         label_size) = struct.unpack_from("<8sIIIIIII", data, 0)
        if magic != MAGIC:
            raise RingError("not a watchdog-core ring (bad magic)")
        if version != VERSION:
            raise RingError(f"unsupported ring version {version} (this reader knows {VERSION})")
        if (header_size, slot_size, max_stats, name_size, label_size) != (
            HEADER_SIZE, SLOT_SIZE, MAX_STATS, NAME_SIZE, LABEL_SIZE
        ):
            raise RingError("corrupt ring header: geometry does not match version 1")
        if not 1 <= slots <= 1 << 20:
            raise RingError(f"corrupt ring header: {slots} slots")
        if len(data) < ring_size(slots):
            raise RingError(f"truncated ring: {len(data)} bytes for {slots} slots "
                            f"(needs {ring_size(slots)})")

    def _decode_header(self) -> None:
        data = self._data
        fields = STATIC.unpack_from(data, 0)
        self.slot_count: int = fields[3]
        self.host_pid: int = fields[9]
        self.host_start_ticks: int = fields[10]
        self.created_unix_ns: int = fields[11]
        self.created_mono_ns: int = fields[12]
        self.interval: float = fields[13]
        self.boot_id = _cstr(fields[14])
        self.session_id = _cstr(bytes(data[SESSION_ID_AT : SESSION_ID_AT + SESSION_ID_SIZE]))
        self.diagnostics_dir = _cstr(bytes(data[DIR_AT : DIR_AT + DIR_SIZE]))
        # Both become parts of paths the reader may write to: check them like user input.
        try:
            validate_session_id(self.session_id, "session id")
        except ValueError:
            raise RingError(f"corrupt ring header: bad session id {self.session_id!r}") from None
        if not self.diagnostics_dir.startswith("/") or "\ufffd" in self.diagnostics_dir:
            raise RingError("corrupt ring header: the diagnostics directory is not an "
                            "absolute path")
        self.config = RingConfig.unpack(data[CONFIG_AT : CONFIG_AT + CONFIG.size])
        words = data[: HEADER_SIZE].cast("Q")
        self.flags: int = words[W_FLAGS]
        self.watchdog_pid: int = words[W_WATCHDOG_PID]
        self.heartbeat_ns: int = words[W_HEARTBEAT]
        self.dumps: int = words[W_DUMPS]
        self.restarts: int = words[W_RESTARTS]
        self.last_record_unix_ns: int = words[W_LAST_RECORD_NS]
        count = words[W_NAME_COUNT]
        self.corrupt_names = count > MAX_STATS
        count = min(count, MAX_STATS)
        self.names = [
            _cstr(bytes(data[NAMES_AT + i * NAME_SIZE : NAMES_AT + (i + 1) * NAME_SIZE]))
            for i in range(count)
        ]
        self.exception = (
            _cstr(bytes(data[EXCEPTION_AT : EXCEPTION_AT + EXCEPTION_SIZE])) or None
            if self.flags & FLAG_EXCEPTION else None
        )
        self.thread_exception = (
            _cstr(bytes(data[THREAD_EXCEPTION_AT : THREAD_EXCEPTION_AT + THREAD_EXCEPTION_SIZE]))
            or None if self.flags & FLAG_THREAD_EXCEPTION else None
        )
        self.last_dump = read_dump_name(data)
        self.request_reason = _cstr(bytes(data[REASON_AT : REASON_AT + REASON_SIZE])) or None
        self.last_label = self._read_label()
        self.status = self._read_status()

    def _read_label(self) -> str | None:
        for _ in range(100):
            seq = self._word(W_LABEL_SEQ)
            raw = bytes(self._data[LABEL_AT : LABEL_AT + LABEL_SIZE])
            if seq & 1 == 0 and seq == self._word(W_LABEL_SEQ):
                return _cstr(raw) if seq else None
        return None

    def _read_status(self) -> Status | None:
        return read_status(self._data, self._live_words)

    def _word(self, index: int) -> int:
        source = self._live_words if self._live_words is not None else self._data.cast("Q")
        return int(source[index])

    @property
    def exiting(self) -> bool:
        return bool(self.flags & FLAG_EXITING)

    @property
    def stopped(self) -> bool:
        return bool(self.flags & FLAG_STOPPED)

    # slots ------------------------------------------------------------------------

    def slots(self, last: int | None = None) -> tuple[list[Slot], int]:
        """The slots that read whole, oldest first, and the number of torn ones.

        A torn slot (sequence odd, changed during the copy, or contents that cannot
        be right) is counted and skipped, never returned as data.
        """
        data = self._data
        live, live_words = self._live, self._live_words
        words = data.cast("Q")
        seqs = sorted(
            ((int(words[HEADER_WORDS + k * SLOT_WORDS]), k) for k in range(self.slot_count)),
            reverse=True,
        )
        words.release()
        out: list[Slot] = []
        torn = 0
        for seq, k in seqs:
            if seq == 0:
                break  # sorted: the rest were never written
            if last is not None and len(out) >= last:
                break
            at = HEADER_SIZE + k * SLOT_SIZE
            if live is not None and live_words is not None:
                # The seqlock protocol: sequence, payload, sequence again, all from the
                # live segment; a changed or odd sequence means a writer was there.
                word = HEADER_WORDS + k * SLOT_WORDS
                before = int(live_words[word])
                raw = bytes(live[at : at + SLOT_SIZE])
                after = int(live_words[word])
                whole = before == after == int.from_bytes(raw[:8], "little")
            else:
                raw = bytes(data[at : at + SLOT_SIZE])
                after = int.from_bytes(raw[:8], "little")
                whole = True
            slot = self._decode_slot(raw, after) if whole else None
            if slot is None or slot.index % self.slot_count != k:
                torn += 1
                continue
            out.append(slot)
        out.reverse()
        return out, torn

    def _decode_slot(self, raw: bytes, seq: int) -> Slot | None:
        if seq & 1:
            return None
        mask, count, kind = _PREFIX.unpack_from(raw, 8)
        if count > len(self.names) or kind not in KIND_NAMES:
            return None
        values = struct.unpack_from("<" + slot_format(count, mask), raw, SLOT_VALUES)
        label = _cstr(raw[SLOT_LABEL : SLOT_LABEL + LABEL_SIZE]) if kind == KIND_MARK else None
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


def read_dump_name(buf: memoryview) -> str | None:
    return _cstr(bytes(buf[DUMP_NAME_AT : DUMP_NAME_AT + DUMP_NAME_SIZE])) or None


def flag_names(flags: int) -> list[str]:
    names = ((FLAG_EXITING, "exiting"), (FLAG_STOPPED, "stopped"), (FLAG_EXCEPTION, "exception"),
             (FLAG_CRASH_FILE, "crash-file"), (FLAG_STACK_SIGNAL, "stack-signal"),
             (FLAG_FOREIGN_FAULTHANDLER, "foreign-faulthandler"),
             (FLAG_STACK_SIGNAL_TAKEN, "stack-signal-taken"), (FLAG_SIGTERM, "sigterm"),
             (FLAG_THREAD_EXCEPTION, "thread-exception"))
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







def newest_index(words: Sequence[int], slot_count: int) -> int:
    """The index of the newest complete-or-in-progress slot, -1 for an empty ring.

    Cheap enough for the watchdog's every sample: one pass over the sequence words.
    """
    top = max(words[HEADER_WORDS : HEADER_WORDS + slot_count * SLOT_WORDS : SLOT_WORDS],
              default=0)
    return (top + 1) // 2 - 1
