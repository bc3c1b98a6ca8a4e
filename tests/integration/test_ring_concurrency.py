"""Slots never tear: threads writing at once, a reader racing a writer
(docs/ring-format.md, "Reading")."""

from __future__ import annotations

import mmap
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT
from watchdog_core import _reader, _ring, _shm, _writer
from watchdog_core._host import start_watchdog

WRITER = """
import sys
from watchdog_core import start_watchdog
wd = start_watchdog(diagnostics_dir=sys.argv[1], ring_slots=16)
rec = wd.recorder("a", "b", "c", "d")
print(wd.shm_name, flush=True)
sys.stdin.readline()
for i in range(1, int(sys.argv[2]) + 1):
    rec(i, 2 * i, 3 * i, -i)
print("done", flush=True)
sys.stdin.readline()
wd.stop()
"""


def test_two_threads_recording_at_once_never_tear_a_slot(tmp_path) -> None:
    wd = start_watchdog(diagnostics_dir=tmp_path / "diag", ring_slots=64)
    try:
        rec = wd.recorder("a", "b")
        barrier = threading.Barrier(2)

        def write(sign: int) -> None:
            barrier.wait()
            for i in range(1, 50_001):
                rec(sign * i, sign * i)  # a slice assignment: a and b always agree

        threads = [threading.Thread(target=write, args=(s,)) for s in (1, -1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        image = _reader.RingImage(bytes(wd._w.buf))
        slots, torn = image.slots()
        assert torn == 0
        assert len(slots) == 64
        assert [s.index for s in slots] == list(range(100_000 - 64, 100_000))
        assert all(s.values["a"] == s.values["b"] for s in slots)
    finally:
        wd.stop()


def test_reader_racing_a_writer_never_returns_a_torn_slot(tmp_path) -> None:
    writes = 300_000
    env = {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "d"), str(writes)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    name = proc.stdout.readline().strip()
    mapping = _shm.open_segment(name)
    view = memoryview(mapping)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    seen = torn_total = reads = 0
    try:
        # Read as fast as we can while the writer runs; a 16-slot ring is overwritten
        # every 16 writes, so the reader meets slots being written all the time.
        done = threading.Event()
        threading.Thread(target=lambda: (proc.stdout.readline(), done.set()),  # type: ignore[union-attr]
                         daemon=True).start()
        while not done.is_set():
            with _reader.RingImage(view) as image:
                slots, torn = image.slots()
            reads += 1
            torn_total += torn
            for s in slots:
                i = s.values["a"]
                assert s.values == {"a": i, "b": 2 * i, "c": 3 * i, "d": -i}, s.values
                seen += 1
    finally:
        proc.communicate("stop\n", timeout=60)
        view.release()
        mapping.close()
    assert proc.returncode == 0
    assert reads > 10 and seen > 0
    # Reported for the curious: how often the race was met and handled.
    print(f"{reads} reads, {seen} whole slots checked, {torn_total} torn slots skipped")


# Big slots: 32 stats, every one derived from the record's index, so a slot that mixes
# two records shows it. 4096 slots like the default ring: a copy of the whole ring takes
# long enough for the writer to land in it.
HAMMER = """
import sys, threading
from watchdog_core import start_watchdog
wd = start_watchdog(diagnostics_dir=sys.argv[1], ring_slots=4096)
rec = wd.recorder(*[f"s{k}" for k in range(32)])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print(wd.shm_name, flush=True)
i = 0
while not stop.is_set():
    for _ in range(4096):
        rec(*[i * (k + 1) for k in range(32)])
        i += 1
    if i == 2 * 4096:
        print("wrapped", flush=True)
wd.stop()
"""
HAMMER_NAMES = [f"s{k}" for k in range(32)]


def test_live_dumps_racing_a_fast_writer_only_ever_see_whole_records(tmp_path) -> None:
    """The watchdog's dump path, RingImage(live view) then slots(last=...), taken
    thousands of times while a real process records as fast as it can. A reader that
    decoded a copy of the ring without re-checking each slot returned the newest slot
    half old, half new (record i beside record i - 4096) a few times per thousand."""
    snapshots = 4000
    proc = subprocess.Popen([sys.executable, "-c", HAMMER, str(tmp_path / "d")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdin is not None
    name = proc.stdout.readline().strip()
    mapping = _shm.open_segment(name)
    view = memoryview(mapping)
    words = view.cast("Q")
    checked = torn_total = 0
    try:
        assert proc.stdout.readline().strip() == "wrapped"  # the ring is full and lapping
        first = _reader.newest_index(words, 4096)
        for _ in range(snapshots):
            with _reader.RingImage(view) as image:
                newest, torn = image.slots(last=1)
                recent, torn_recent = image.slots(last=64)
            torn_total += torn + torn_recent
            assert len(newest) == 1 and len(recent) == 64
            for s in newest + recent:
                i = s.index
                assert list(s.values.values()) == [i * m for m in range(1, 33)], (i, s.values)
                checked += 1
            assert list(newest[0].values) == HAMMER_NAMES
        # The writer was still writing when the last snapshot was taken: it raced them all.
        assert _reader.newest_index(words, 4096) > first
    finally:
        proc.communicate("stop\n", timeout=60)
        words.release()
        view.release()
        mapping.close()
    assert proc.returncode == 0
    print(f"{snapshots} snapshots, {checked} whole slots checked, {torn_total} torn skipped")


def ring(slots: int) -> tuple[mmap.mmap, _writer.RingWriter]:
    mapping = mmap.mmap(-1, _ring.ring_size(slots))
    writer = _writer.RingWriter(mapping, slots)
    writer.init_header(session_id="live", host_pid=1, host_start_ticks=0, created_unix_ns=0,
                       created_mono_ns=0, interval=0.25, boot_id="b", diagnostics_dir="/d",
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    return mapping, writer


def record(writer: _writer.RingWriter, **stats: int) -> None:
    for name in stats:
        writer.add_name(name)
    writer.values[:] = [stats.get(n, 0) for n in writer.names]
    writer.commit(_ring.KIND_RECORD)


def test_an_image_of_a_live_buffer_reads_slots_when_asked_and_lets_it_close() -> None:
    mapping, writer = ring(16)
    record(writer, a=1)
    image = _reader.RingImage(mapping)
    assert image.newest().values == {"a": 1}
    record(writer, a=2, b=3)  # after the image was made, with a stat it has not seen
    assert image.newest().values == {"a": 2, "b": 3}
    assert image.names == ["a", "b"]
    writer.detach()  # drops the writer's views and tries to close the mapping
    assert not mapping.closed  # the image still holds a view
    with pytest.raises(BufferError):
        mapping.close()
    image.release()
    image.release()
    with pytest.raises(ValueError):
        image.slots()
    mapping.close()
    assert mapping.closed


def test_slots_last_n_reads_only_the_newest_n() -> None:
    """A saved image goes through the same reader: the newest slot reads, and the
    scribbled older ones are never reached unless all slots are asked for."""
    mapping, writer = ring(16)
    for i in range(100):
        record(writer, i=i)
    raw = bytearray(mapping)
    for k in range(16):
        if k != 99 % 16:
            raw[_ring.HEADER_SIZE + k * _ring.SLOT_SIZE + 14] = 9  # no such slot kind
    slots, torn = _reader.RingImage(bytes(raw)).slots(last=1)
    assert [s.values for s in slots] == [{"i": 99}] and torn == 0
    slots, torn = _reader.RingImage(bytes(raw)).slots()
    assert [s.index for s in slots] == [99] and torn == 15
    writer.detach()
