"""The ring's binary layout (docs/ring-format.md): offsets, words, flags, encodings.

The host's writer is in ``_writer``, the one reader in ``_reader``.

The ring is a shared-memory segment: a fixed 8 KiB header followed by
``slot_count`` slots of 528 bytes. Each slot is guarded by its own seqlock
word: odd while the host writes the slot, even when it is complete, 0 when it
was never written. The sequence word is written on its own through a
``memoryview.cast("Q")`` (one aligned 8-byte store) because ``struct.pack_into``
copies byte by byte and a reader could see half a sequence number.

This module imports stdlib only: the host loads it in ``start_watchdog()``.
"""

from __future__ import annotations

import os
import struct

MAGIC = b"WDCRING\x00"
# Version 2: labels of 256 bytes (a test's node id, a tool call with its arguments' kind),
# in slots of 528 bytes and at offset 512 of the header. Version 1's 64-byte labels, in
# slots of 336 bytes and at 3072, are still read (``GEOMETRIES``); every ring written now
# is version 2.
VERSION = 2
HEADER_SIZE = 8192
MAX_STATS = 32
NAME_SIZE = 64
LABEL_SIZE = 256
SLOT_VALUES = 16  # offset of the values inside a slot
SLOT_LABEL = SLOT_VALUES + MAX_STATS * 8  # offset of the label (mark slots only)
SLOT_SIZE = SLOT_LABEL + LABEL_SIZE  # 528 bytes, a multiple of 8
SLOT_WORDS = SLOT_SIZE // 8
HEADER_WORDS = HEADER_SIZE // 8

KIND_RECORD = 1
KIND_MARK = 2
KIND_NAMES = {KIND_RECORD: "record", KIND_MARK: "mark"}

# Static part, written once at creation.
STATIC = struct.Struct("<8sIIIIIIIIqqqqd40s")
SESSION_ID_AT, SESSION_ID_SIZE = 128, 72

# Dynamic words: index into the mapping seen as unsigned 64-bit words.
W_NAME_COUNT = 32  # stat names registered (host)
W_FLAGS = 33  # FLAG_* bits (host)
W_HEARTBEAT = 34  # host heartbeat, CLOCK_MONOTONIC ns (host)
W_WATCHDOG_PID = 35  # pid of the watchdog attached to this ring (watchdog)
W_REQUEST = 36  # manual dump requests made (host)
W_REQUEST_DONE = 37  # manual dump requests answered (watchdog)
W_DUMPS = 38  # dumps written for this session (watchdog)
W_STATUS_SEQ = 39  # seqlock of the status block (watchdog)
W_LABEL_SEQ = 40  # seqlock of the last label (host)
W_RECORDS = 41  # records seen by the watchdog at its last sample (watchdog)
W_LAST_RECORD_NS = 42  # wall-clock ns at which the watchdog saw the newest record appear
W_PRESSURE_DUMPS = 43  # pressure dumps written (watchdog; survives a watchdog restart)
W_LAST_PRESSURE_NS = 44  # CLOCK_MONOTONIC ns of the last pressure dump (watchdog)
W_CRITICAL_WRITTEN = 45  # 1 once the first critical dump is written (watchdog)
W_RESTARTS = 46  # watchdogs restarted by the host after the first died (host)
W_STACK_REQUESTS = 47  # stack dumps asked of the host by signal (watchdog)
W_DEATH = 48  # how far the host's death has been handled: DEATH_* (watchdog)
W_VERDICT = 49  # the watchdog's verdict on that death, see _death.encode_verdict (watchdog)
W_NONCE = 50  # random, names the host's private files beside the dumps (host, once)
# hang_after only (docs/hangs.md): is the main thread stuck in one frame?
W_MAIN_FRAME_SINCE = 51  # CLOCK_MONOTONIC ns the main thread's innermost frame appeared (host)
W_MAIN_TID = 52  # the main thread's kernel thread id, for its CPU time (host, once)
W_MAIN_IDENT = 53  # the main thread's pthread id, as faulthandler prints it (host, once)
# `watchdog-core dump SESSION` (_outside): dumps asked for from outside the host.
W_OUTSIDE_REQUEST = 54  # requests made, under the requester lock (byte 2) (requesters)
W_OUTSIDE_DONE = 55  # the newest request answered (watchdog)
# For the host's announcements (_announce): is the dump for a rise on disk yet?
W_TICK_DONE = 56  # the newest sample whose pressure dump, if any, is written (watchdog)
W_PRESSURE_SAMPLE = 57  # the sample the newest pressure dump was written for (watchdog)
# Extras at the first critical dump (_extras): the watchdog asks, a host thread answers.
W_EXTRAS_REQUEST = 58  # extras asked of the host: 1 once asked, at most once per session
W_EXTRAS_DONE = 59  # the request answered: bits 0-31 its number, 4 bits per extra (host)
W_JOINED = 60  # the pid of a Python child of `watchdog-core run` that joined its ring (host)
# Dumps by trigger (watchdog), two 32-bit counts to a word, in DUMP_TRIGGERS order: what
# the metrics count (``_metrics``). Zero in a ring written before they were counted.
W_DUMPS_BY_TRIGGER = 61  # words 61-63
DUMP_TRIGGERS = ("hard", "critical", "unresponsive", "manual", "descendant-died")

# W_DEATH: each step is written before the next begins, so a recoverer taking over a
# ring whose watchdog died midway knows what is already done (docs/design.md).
DEATH_ALIVE = 0
DEATH_DYING = 1  # the kernel is tearing the host down; the last good reading is kept
DEATH_DEAD = 2  # the host is gone
DEATH_JUDGED = 3  # W_VERDICT holds the verdict
DEATH_PUBLISHED = 4  # the postmortem's first phase is on disk; DUMP_NAME holds its name
DEATH_WRITTEN = 5  # the postmortem is complete and the ring image saved beside it

# Header word at offset 36 (the u32 after the geometry): what this ring's writer does.
FEATURE_LOCKS = 1  # host and watchdog hold the segment's locks for their lifetimes
FEATURE_RUN = 2  # made by `watchdog-core run`, whose host (its child) holds no lock

FLAG_EXITING = 1  # atexit ran: the interpreter is shutting down
FLAG_STOPPED = 2  # stop() was called: a clean end, no postmortem
FLAG_EXCEPTION = 4  # sys.excepthook saw an uncaught exception; its type is in the header
FLAG_CRASH_FILE = 8  # faulthandler writes to the session's crash file
FLAG_STACK_SIGNAL = 16  # faulthandler dumps stacks on the stack signal
FLAG_FOREIGN_FAULTHANDLER = 32  # the host had enabled faulthandler itself: left alone
FLAG_STACK_SIGNAL_TAKEN = 64  # the host already handles the stack signal: not registered
FLAG_SIGTERM = 128  # catch_sigterm: SIGTERM arrived (the handler then re-raises it)
FLAG_THREAD_EXCEPTION = 256  # a thread died of an uncaught exception (the host lives on)
FLAG_STACK_SIGNAL_LOST = 512  # the host installed its own handler for the stack signal
FLAG_HOST_SENTRY = 1024  # at its uncaught exception the host had an active Sentry client

# Status block, written by the watchdog under W_STATUS_SEQ.
STATUS_AT = 768
STATUS = struct.Struct("<qdqqqddqqq")
LIMIT_SOURCES = ("none", "configured", "ram", "available", "cgroup-v2", "cgroup-v1",
                 "rlimit-as", "rlimit-data")

NAMES_AT = 1024  # MAX_STATS entries of NAME_SIZE bytes, UTF-8, NUL padded
LABEL_AT = 512  # last mark() label, LABEL_SIZE bytes, under W_LABEL_SEQ (words 64-95)
EXCEPTION_AT, EXCEPTION_SIZE = 3200, 128  # uncaught exception type name
DUMP_NAME_AT, DUMP_NAME_SIZE = 3328, 256  # file name of the newest dump (watchdog)
CONFIG_AT = 3584
CONFIG = struct.Struct("<dddqdqddIdIqq")
REASON_AT, REASON_SIZE = 3712, 64  # reason of the pending manual dump request (host)
THREAD_EXCEPTION_AT, THREAD_EXCEPTION_SIZE = 3776, 128  # a dead thread's exception type
OUTSIDE_DUMP_AT, OUTSIDE_DUMP_SIZE = 3904, 192  # the dump answering W_OUTSIDE_DONE
EXTRAS_STEM_AT, EXTRAS_STEM_SIZE = 848, 160  # the stem of the dump extras are asked for
EXTRAS_NEED_AT = 1008  # u64: bytes a tracemalloc snapshot was judged to need (host)
EXTRAS_HEADROOM_AT = 1016  # u64: bytes left under the limit when it was judged (host)
# The extras start_watchdog(extras=...) may ask for; the config's options bits 1, 2.
EXTRAS = ("stacks", "tracemalloc")
DIR_AT, DIR_SIZE = 4096, 4096  # absolute diagnostics directory, NUL padded

_PREFIX = struct.Struct("<IHH")  # mask, value count, kind: the start of every slot


class Geometry:
    """What differs between the ring versions a reader knows: where labels are, how long
    they are, and so how long a slot is."""

    __slots__ = ("version", "label_size", "label_at", "slot_size", "slot_words")

    def __init__(self, version: int, label_size: int, label_at: int) -> None:
        self.version, self.label_size, self.label_at = version, label_size, label_at
        self.slot_size = SLOT_LABEL + label_size
        self.slot_words = self.slot_size // 8

    def ring_size(self, slot_count: int) -> int:
        return HEADER_SIZE + slot_count * self.slot_size


GEOMETRIES = {1: Geometry(1, 64, 3072), VERSION: Geometry(VERSION, LABEL_SIZE, LABEL_AT)}
CURRENT = GEOMETRIES[VERSION]


class RingError(ValueError):
    """A ring image that is not one we can read: wrong magic, version, or geometry."""


def ring_size(slot_count: int) -> int:
    return HEADER_SIZE + slot_count * SLOT_SIZE


def slot_format(count: int, mask: int) -> str:
    """The struct format of ``count`` values; bit i of ``mask`` marks value i as float64."""
    return "".join("d" if mask >> i & 1 else "q" for i in range(count))


def _put_str(buf: memoryview, at: int, size: int, text: str | bytes) -> None:
    raw = os.fsencode(text) if isinstance(text, str) else text
    buf[at : at + size] = raw[: size - 1].ljust(size, b"\0")


def encode_label(label: str) -> bytes:
    """UTF-8, cut to LABEL_SIZE bytes on a character boundary, NUL padded."""
    raw = label.encode("utf-8", "replace")
    if len(raw) > LABEL_SIZE:
        raw = raw[:LABEL_SIZE].decode("utf-8", "ignore").encode()
    return raw.ljust(LABEL_SIZE, b"\0")


class RingConfig:
    """What the watchdog needs to know about the session, kept in the header so a
    restarted watchdog or an orphan recovery reads the same settings."""

    __slots__ = ("soft", "hard", "critical", "memory_limit", "dump_cooldown",
                 "max_dumps", "hang_after", "idle_after", "include_children",
                 "history_share", "stack_signal", "max_files", "max_bytes", "extras")

    def __init__(self, soft: float, hard: float, critical: float, memory_limit: int | None,
                 dump_cooldown: float, max_dumps: int, hang_after: float | None,
                 idle_after: float | None, include_children: bool,
                 history_share: float = 0.25, stack_signal: int = 0,
                 max_files: int = 100, max_bytes: int = 256 << 20,
                 extras: tuple[str, ...] = ()) -> None:
        self.soft, self.hard, self.critical = soft, hard, critical
        self.memory_limit = memory_limit
        self.dump_cooldown = dump_cooldown
        self.max_dumps = max_dumps
        self.hang_after = hang_after
        self.idle_after = idle_after
        self.include_children = include_children
        self.history_share = history_share
        self.stack_signal = stack_signal
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.extras = extras  # names from EXTRAS

    def pack(self) -> bytes:
        options = int(self.include_children) | sum(
            2 << i for i, name in enumerate(EXTRAS) if name in self.extras)
        return CONFIG.pack(self.soft, self.hard, self.critical, self.memory_limit or 0,
                           self.dump_cooldown, self.max_dumps, self.hang_after or 0.0,
                           self.idle_after or 0.0, options,
                           self.history_share, self.stack_signal, self.max_files,
                           self.max_bytes)

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> RingConfig:
        (soft, hard, critical, limit, cooldown, dumps, hang, idle, opts, share,
         stack_signal, max_files, max_bytes) = CONFIG.unpack(raw)
        return cls(soft, hard, critical, limit or None, cooldown, dumps, hang or None,
                   idle or None, bool(opts & 1), share, stack_signal, max_files, max_bytes,
                   tuple(name for i, name in enumerate(EXTRAS) if opts & 2 << i))


_LEVELS = ("normal", "soft", "hard", "critical")


def write_status(buf: memoryview, words: memoryview, raw: bytes) -> None:
    """The watchdog's status block, under its seqlock (word W_STATUS_SEQ)."""
    seq = words[W_STATUS_SEQ]
    words[W_STATUS_SEQ] = seq | 1
    buf[STATUS_AT : STATUS_AT + len(raw)] = raw
    words[W_STATUS_SEQ] = (seq | 1) + 1


def encode_status(level: int, ratio: float, rss: int, heap_used: int, limit: int | None,
                  growth: float, seconds_to_limit: float | None, source: str,
                  sampled_unix_ns: int, samples: int) -> bytes:
    return STATUS.pack(level, ratio, rss, heap_used, limit or 0, growth,
                       float("nan") if seconds_to_limit is None else seconds_to_limit,
                       LIMIT_SOURCES.index(source) if source in LIMIT_SOURCES else 0,
                       sampled_unix_ns, samples)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def count_dump(words: memoryview, trigger: str) -> None:
    """One more dump of ``trigger`` (one of DUMP_TRIGGERS; others are not counted here).
    The watchdog is the only writer, so a read-modify-write of the word is safe."""
    if trigger not in DUMP_TRIGGERS:
        return
    index = DUMP_TRIGGERS.index(trigger)
    word, shift = W_DUMPS_BY_TRIGGER + index // 2, 32 * (index % 2)
    count = (words[word] >> shift) & 0xFFFFFFFF
    if count < 0xFFFFFFFF:
        words[word] += 1 << shift


def dump_counts(words: memoryview) -> dict[str, int]:
    """The dumps written by trigger, every trigger of DUMP_TRIGGERS present."""
    return {trigger: (words[W_DUMPS_BY_TRIGGER + i // 2] >> (32 * (i % 2))) & 0xFFFFFFFF
            for i, trigger in enumerate(DUMP_TRIGGERS)}
