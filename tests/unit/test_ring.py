"""The ring writer and reader in one process: layout, types, names, carried values."""

from __future__ import annotations

import struct

import pytest

from watchdog_core import _reader, _ring, _writer
from watchdog_core._config import SessionConfig
from watchdog_core._host import Watchdog


def handle(slots: int = 16) -> Watchdog:
    """A handle over private memory: the real hot path with no segment or watchdog."""
    config = SessionConfig(diagnostics_dir="/tmp/unused", ring_slots=slots)
    writer = _writer.RingWriter(None, slots)
    writer.init_header(session_id=config.session_id, host_pid=1, host_start_ticks=0,
                       created_unix_ns=0, created_mono_ns=0, interval=0.25, boot_id="b",
                       diagnostics_dir="/d",
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    return Watchdog(config, writer, None, None)


def image(wd: Watchdog) -> _reader.RingImage:
    return _reader.RingImage(bytes(wd._w.buf))


def test_each_record_writes_one_slot_with_the_full_state() -> None:
    wd = handle()
    wd.record(a=1, b=2)
    wd.record(b=3)
    wd.record(c=4.5)
    slots, torn = image(wd).slots()
    assert torn == 0
    assert [s.values for s in slots] == [{"a": 1, "b": 2}, {"a": 1, "b": 3},
                                         {"a": 1, "b": 3, "c": 4.5}]
    assert [s.index for s in slots] == [0, 1, 2]


def test_ints_stay_exact_beyond_2_pow_53() -> None:
    wd = handle()
    big = 2**63 - 1
    wd.record(counter=big, other=2**53 + 1)
    values = image(wd).newest().values
    assert values == {"counter": big, "other": 2**53 + 1}
    assert type(values["counter"]) is int


def test_a_float_turns_its_column_to_float64_without_touching_others() -> None:
    wd = handle()
    wd.record(x=1, y=2**60)
    wd.record(x=0.5)
    slots, _ = image(wd).slots()
    assert slots[-1].values == {"x": 0.5, "y": 2**60}
    assert type(slots[-1].values["y"]) is int
    assert slots[0].values == {"x": 1, "y": 2**60}  # old slots keep their own layout


def test_ints_beyond_int64_become_floats_rather_than_failing() -> None:
    wd = handle()
    wd.record(huge=2**70)
    assert image(wd).newest().values == {"huge": float(2**70)}


def test_bools_and_numpy_like_values() -> None:
    class Index:  # what numpy integers look like to us
        def __index__(self) -> int:
            return 7

    wd = handle()
    wd.record(flag=True, n=Index())
    assert image(wd).newest().values == {"flag": 1, "n": 7}


@pytest.mark.parametrize("bad", ["12", None, b"1", [1], 1j])
def test_non_numbers_raise_type_error_and_lose_nothing(bad: object) -> None:
    wd = handle()
    wd.record(a=1)
    with pytest.raises(TypeError, match="stat b"):
        wd.record(a=2, b=bad)  # type: ignore[arg-type]
    assert image(wd).newest().values == {"a": 1}
    wd.record(a=3)
    assert image(wd).newest().values == {"a": 3}


def test_the_33rd_name_raises_value_error() -> None:
    wd = handle()
    wd.record(**{f"s{i}": i for i in range(32)})
    with pytest.raises(ValueError, match="at most 32"):
        wd.record(s32=1)
    wd.record(s0=100)  # existing names still work
    assert image(wd).newest().values["s0"] == 100


def test_names_are_kept_verbatim() -> None:
    wd = handle()
    wd.record(**{"estimated history bytes": 1, "ünïcode": 2})
    assert image(wd).newest().values == {"estimated history bytes": 1, "ünïcode": 2}


def test_a_name_that_is_not_utf8_is_refused_and_loses_nothing() -> None:
    # "\udcff" and "\ud800" would both read back as U+FFFD: one stat, one value lost.
    wd = handle()
    wd.record(a=1)
    for name in ("x\udcff", "x\ud800"):
        with pytest.raises(ValueError, match="UTF-8"):
            wd.record(**{name: 2})
    wd.record(a=3)
    assert image(wd).newest().values == {"a": 3}


def test_recorder_mixes_with_record() -> None:
    wd = handle()
    wd.record(z=9)
    rec = wd.recorder("a", "b")
    rec(1, 2)
    wd.record(a=5)
    rec(3, 4.5)
    slots, _ = image(wd).slots()
    assert [s.values for s in slots] == [{"z": 9}, {"z": 9, "a": 1, "b": 2},
                                         {"z": 9, "a": 5, "b": 2}, {"z": 9, "a": 3, "b": 4.5}]


def test_recorder_over_non_contiguous_columns() -> None:
    wd = handle()
    wd.record(a=0, gap=0, b=0)
    rec = wd.recorder("b", "a")
    rec(1, 2)
    assert image(wd).newest().values == {"a": 2, "gap": 0, "b": 1}


def test_recorder_argument_errors() -> None:
    wd = handle()
    rec = wd.recorder("a", "b")
    with pytest.raises(TypeError, match="takes 2 values"):
        rec(1)
    with pytest.raises(TypeError, match="stat b"):
        rec(1, "x")
    with pytest.raises(ValueError, match="twice"):
        wd.recorder("a", "a")
    with pytest.raises(ValueError, match="at least one"):
        wd.recorder()


def test_mark_writes_a_slot_and_the_header_label() -> None:
    wd = handle()
    wd.record(a=1)
    wd.mark("tool:shell")
    wd.mark("x" * 300)  # cut to 256 bytes
    wd.mark("é" * 140)  # cut on a character boundary
    img = image(wd)
    slots, _ = img.slots()
    assert [s.kind for s in slots] == ["record", "mark", "mark", "mark"]
    assert slots[1].label == "tool:shell" and slots[1].values == {"a": 1}
    assert slots[2].label == "x" * 256
    assert slots[3].label == "é" * 128
    assert img.last_label == "é" * 128
    with pytest.raises(TypeError):
        wd.mark(5)  # type: ignore[arg-type]


def test_the_ring_wraps_and_keeps_the_newest() -> None:
    wd = handle(slots=16)
    for i in range(100):
        wd.record(i=i)
    slots, torn = image(wd).slots()
    assert torn == 0 and len(slots) == 16
    assert [s.values["i"] for s in slots] == list(range(84, 100))
    assert _reader.newest_index(wd._w.words, 16) == 99


@pytest.mark.parametrize("slots", [1, 2, 3, 16, 17])
def test_the_newest_index_is_found_at_every_fill_and_lap(slots: int) -> None:
    # The binary search against the plain answer, with and without a hint of every age:
    # empty, part full, exactly full, lapped once and many times, one in progress.
    words = [0] * (_ring.HEADER_WORDS + slots * _ring.SLOT_WORDS)
    for newest in range(-1, 5 * slots + 2):
        if newest >= 0:
            words[_ring.HEADER_WORDS + newest % slots * _ring.SLOT_WORDS] = 2 * newest + 2
        for hint in {-1, newest - 1, newest, max(-1, newest - slots - 1)}:
            assert _reader.newest_index(words, slots, hint=hint) == newest
        if newest >= 0:  # the next one being written counts, as before
            at = _ring.HEADER_WORDS + (newest + 1) % slots * _ring.SLOT_WORDS
            kept, words[at] = words[at], 2 * (newest + 1) + 1
            assert _reader.newest_index(words, slots, hint=newest) == newest + 1
            words[at] = kept


def test_a_slot_mid_write_is_torn_not_data() -> None:
    wd = handle()
    wd.record(a=1)
    wd.record(a=2)
    raw = bytearray(wd._w.buf)
    struct.pack_into("<Q", raw, _ring.HEADER_SIZE + _ring.SLOT_SIZE, 2 * 1 + 1)  # odd
    slots, torn = _reader.RingImage(bytes(raw)).slots()
    assert [s.values["a"] for s in slots] == [1] and torn == 1


def test_corrupt_slot_contents_are_counted_not_returned() -> None:
    wd = handle()
    wd.record(a=1)
    raw = bytearray(wd._w.buf)
    struct.pack_into("<IHH", raw, _ring.HEADER_SIZE + 8, 0, 30, 1)  # 30 values, 1 name
    slots, torn = _reader.RingImage(bytes(raw)).slots()
    assert slots == [] and torn == 1


def test_a_detached_writer_still_accepts_writes() -> None:
    wd = handle()
    rec = wd.recorder("a")
    wd._w.detach()
    wd.record(a=1)
    rec(2)
    wd.mark("after")


def _as_version_1(ring: bytes) -> bytes:
    """The same ring as version 1 wrote it: 64-byte labels, in slots of 336 bytes and at
    3072 in the header (the slot's values are where they were)."""
    old, new = _ring.GEOMETRIES[1], _ring.CURRENT
    slots = struct.unpack_from("<I", ring, 16)[0]
    header = bytearray(ring[: _ring.HEADER_SIZE])
    struct.pack_into("<I", header, 8, 1)
    struct.pack_into("<I", header, 20, old.slot_size)
    struct.pack_into("<I", header, 32, old.label_size)
    label = bytes(header[new.label_at : new.label_at + new.label_size])
    header[new.label_at : new.label_at + new.label_size] = bytes(new.label_size)
    header[old.label_at : old.label_at + old.label_size] = label[: old.label_size]
    body = b"".join(
        ring[at : at + _ring.SLOT_LABEL + old.label_size]
        for at in range(_ring.HEADER_SIZE, _ring.HEADER_SIZE + slots * new.slot_size,
                        new.slot_size))
    return bytes(header) + body


def test_a_version_1_ring_is_still_read() -> None:
    # Saved .ring files and orphans of version 1 (64-byte labels) stay readable.
    wd = handle(slots=16)
    wd.record(a=1, b=2.5)
    wd.mark("tool:shell")
    for i in range(20):  # wraps
        wd.record(a=i)
    wd.mark("epoch " + "x" * 100)
    ring = _as_version_1(bytes(wd._w.buf))
    img = _reader.RingImage(ring)
    assert img.geometry.version == 1 and len(ring) == _ring.GEOMETRIES[1].ring_size(16)
    slots, torn = img.slots()
    assert torn == 0
    assert [s.values["a"] for s in slots] == [*range(5, 20), 19]
    assert slots[-1].kind == "mark" and slots[-1].label == ("epoch " + "x" * 100)[:64]
    assert img.last_label == ("epoch " + "x" * 100)[:64]
    assert img.newest() is not None and img.newest().label == slots[-1].label


def test_an_unknown_version_is_refused_by_name() -> None:
    ring = bytearray(bytes(handle()._w.buf))
    struct.pack_into("<I", ring, 8, 9)
    with pytest.raises(_ring.RingError, match="unsupported ring version 9"):
        _reader.RingImage(bytes(ring))
