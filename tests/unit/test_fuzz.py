"""Hostile bytes never crash the ring reader or the dump loader."""

from __future__ import annotations

import struct

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdog_core import _reader, _ring, _writer
from watchdog_core._diagnostics import load


def valid_image(slots: int = 16) -> bytes:
    writer = _writer.RingWriter(None, slots)
    writer.init_header(session_id="fuzz", host_pid=1, host_start_ticks=0, created_unix_ns=0,
                       created_mono_ns=0, interval=0.25, boot_id="b", diagnostics_dir="/d",
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    for i in range(40):
        writer.add_name(f"s{i % 5}")
        writer.values[:] = [i] * len(writer.values)
        writer.commit(_ring.KIND_RECORD)
    writer.commit(_ring.KIND_MARK, _ring.encode_label("tool"))
    return bytes(writer.buf)


VALID = valid_image()


def read_everything(data: bytes) -> None:
    try:
        image = _reader.RingImage(data)
    except _ring.RingError:
        return
    slots, torn = image.slots()
    assert torn >= 0
    for slot in slots:
        assert set(slot.values) <= set(image.names)
    image.header_dict()
    image.newest()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=20_000))
def test_random_bytes(data: bytes) -> None:
    read_everything(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=64))
def test_a_valid_ring_with_bytes_flipped(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for at, value in flips:
        data[at] = value
    read_everything(bytes(data))


@settings(max_examples=200, deadline=None)
@given(slots=st.integers(0, 2**32 - 1), names=st.integers(0, 2**64 - 1),
       cut=st.integers(0, len(VALID)))
def test_hostile_geometry_and_counts(slots: int, names: int, cut: int) -> None:
    data = bytearray(VALID)
    struct.pack_into("<I", data, 16, slots)  # slot count
    struct.pack_into("<Q", data, _ring.W_NAME_COUNT * 8, names)
    read_everything(bytes(data[:cut]))
    read_everything(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=4000), st.text(max_size=4000)))
def test_the_dump_loader_refuses_garbage_cleanly(raw: bytes | str) -> None:
    try:
        load(raw)
    except pydantic.ValidationError:
        pass
