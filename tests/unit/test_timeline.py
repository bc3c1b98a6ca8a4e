"""The timeline's marks (watchdog -> dump) and its pictures' arithmetic, in one process."""

from __future__ import annotations

import io
import itertools
import json
import math

import pytest

from tests.conftest import minimal_dump
from watchdog_core import _reader, _ring, _writer
from watchdog_core._config import SessionConfig
from watchdog_core._diagnostics import Diagnostics, TimelinePoint
from watchdog_core._host import Watchdog
from watchdog_core._report import MAX_TIMELINE_POINTS, _timeline_points
from watchdog_core.cli import _chart, _timeline

MIB = 1 << 20


def _handle() -> Watchdog:
    config = SessionConfig(diagnostics_dir="/tmp/unused", ring_slots=16)
    writer = _writer.RingWriter(None, 16)
    writer.init_header(session_id=config.session_id, host_pid=1, host_start_ticks=0,
                       created_unix_ns=0, created_mono_ns=0, interval=0.25, boot_id="b",
                       diagnostics_dir="/d",
                       config=_ring.RingConfig(0.5, 0.65, 0.8, None, 30, 3, None, None, False))
    return Watchdog(config, writer, None, None)


# -- the label, read by the watchdog at each sample -----------------------------------------

def test_read_label_is_the_last_mark_under_its_seqlock() -> None:
    wd = _handle()
    buf, words = wd._w.buf, wd._w.words
    assert _reader.read_label(buf, words) is None  # no mark yet
    wd.mark("load")
    wd.mark("epoch 1")
    assert _reader.read_label(buf, words) == "epoch 1"
    assert _reader.RingImage(bytes(buf)).last_label == "epoch 1"  # the same reader
    seq = words[_ring.W_LABEL_SEQ]
    words[_ring.W_LABEL_SEQ] = seq | 1  # a writer stuck inside it: no torn label
    assert _reader.read_label(buf, words) is None
    words[_ring.W_LABEL_SEQ] = seq


def _samples(labels: list[str | None]) -> list[tuple[float, int, float, str | None]]:
    n = len(labels)
    return [(-(n - i) * 0.05, MIB * (i + 1), 0.1, label) for i, label in enumerate(labels)]


def test_a_mark_goes_on_the_first_point_that_saw_it_only() -> None:
    labels = [None] * 3 + ["load"] * 4 + ["epoch 1"] * 2 + ["load"] * 3
    points = _timeline_points(_samples(labels))
    assert [p.mark for p in points] == [None] * 3 + ["load", None, None, None, "epoch 1",
                                                     None, "load", None, None]


def test_the_first_point_carries_the_label_in_force() -> None:
    points = _timeline_points(_samples(["warm-up", "warm-up", "go"]))
    assert [p.mark for p in points] == ["warm-up", None, "go"]


def test_a_mark_between_kept_points_lands_on_the_next_kept_one() -> None:
    """1000 samples keep 240 points, evenly spread; a label that changed on a sample left
    out is noted on the next point kept, once."""
    labels: list[str | None] = ["a"] * 501 + ["b"] * 499
    samples = _samples(labels)
    points = _timeline_points(samples)
    assert len(points) == MAX_TIMELINE_POINTS
    assert (points[0].t, points[-1].t) == (round(samples[0][0], 3), round(samples[-1][0], 3))
    kept = {round(t, 3) for t, *_ in samples}
    assert all(p.t in kept for p in points)
    assert all(round(samples[501][0], 3) != p.t for p in points)  # the change is left out
    marked = [(p.t, p.mark) for p in points if p.mark is not None]
    assert [m for _, m in marked] == ["a", "b"]
    assert marked[1][0] == min(p.t for p in points if p.t > samples[501][0])


def test_a_minute_of_samples_keeps_every_point_it_can() -> None:
    assert len(_timeline_points(_samples(["a"] * 241))) == MAX_TIMELINE_POINTS
    assert len(_timeline_points(_samples(["a"] * 240))) == 240


def test_a_point_without_a_mark_has_no_mark_key_and_old_dumps_still_load() -> None:
    assert "mark" not in json.loads(TimelinePoint(t=-1, rss=1, ratio=0.1).model_dump_json())
    assert json.loads(TimelinePoint(t=-1, rss=1, ratio=0.1, mark="x").model_dump_json(
        by_alias=True))["mark"] == "x"
    old = minimal_dump(timeline=[{"t": -1.0, "rss": 1, "ratio": 0.1}])
    dump = Diagnostics.model_validate(old)
    assert dump.timeline[0].mark is None
    assert '"mark"' not in dump.to_json().decode()


# -- the arithmetic of the pictures ------------------------------------------------------------

def test_the_default_bands_are_the_sessions_defaults() -> None:
    config = SessionConfig(diagnostics_dir="/tmp/unused", env={})
    assert (config.soft, config.hard, config.critical) == _timeline.DEFAULT_THRESHOLDS


@pytest.mark.parametrize(("rss", "limit"), [(178 * MIB, 160 * MIB), (40 * MIB, 160 * MIB),
                                            (3 << 30, 4 << 30), (1, None), (0, None)])
def test_the_y_axis_holds_the_data_and_the_limit_in_round_steps(rss: int,
                                                                limit: int | None) -> None:
    tl = _timeline.Timeline([(-1.0, rss), (0.0, rss)], [], rss=rss, limit=limit, ratio=0.9)
    top, step, unit = tl.y_axis()
    assert top >= max(rss, limit or 0) and top < 2 * max(rss, limit or 0, MIB)
    scale = (1 << 30) if unit == "GiB" else MIB
    in_unit = step / scale
    assert round(in_unit / 10 ** math.floor(math.log10(in_unit)), 6) in (1, 2, 2.5, 5)
    assert top / step == round(top / step) <= 6


def test_a_far_limit_leaves_the_axis_to_the_data() -> None:
    calm = _timeline.Timeline([(-1.0, 40 * MIB)], [], rss=40 * MIB, limit=64 << 30,
                              ratio=0.001)
    assert not calm.limit_in_view() and calm.y_axis()[0] < 64 * MIB
    # Near the limit by another measure (the address space, say): the limit is drawn.
    tight = _timeline.Timeline([(-1.0, 40 * MIB)], [], rss=40 * MIB, limit=64 << 30,
                               ratio=0.9)
    assert tight.limit_in_view()


def test_labels_placed_never_overlap_in_a_row() -> None:
    xs = [float(x) for x in range(0, 600, 7)]
    widths = [60.0] * len(xs)
    places = _timeline.place_labels(xs, widths, 3, 600)
    spans: dict[int, list[tuple[float, float]]] = {}
    for place, width in zip(places, widths, strict=True):
        if place is not None:
            spans.setdefault(place[0], []).append((place[1], place[1] + width))
    assert places[0] == (0, 0.0) and None in places  # the crowd does not all fit
    for row in spans.values():
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(row))
    assert max(end for row in spans.values() for _, end in row) <= 600


# -- the terminal chart ---------------------------------------------------------------------

def _ramp(n: int = 120) -> _timeline.Timeline:
    points = [(-(n - i) * 0.5, (20 + i) * MIB) for i in range(n)]
    marks = [_timeline.Mark(points[10][0], points[10][1], "load"),
             _timeline.Mark(points[80][0], points[80][1], "evil\x1b[2J\nlabel")]
    return _timeline.Timeline(points, marks, rss=points[-1][1], limit=160 * MIB, ratio=0.87)


def test_the_chart_draws_rss_under_the_limit_with_labelled_axes() -> None:
    lines = _chart.draw(_ramp())
    text = "".join(lines)
    assert lines[0].startswith("  timeline    rss against the 160.0 MiB limit, the last 60.0 s")
    rows = [line for line in lines if "\u2524" in line or "\u2502" in line]
    assert 8 <= len(rows) <= 10
    assert sum("MiB \u2524" in row for row in rows) >= 4
    (limit_row,) = [row for row in rows if row.rstrip().endswith(" limit")]
    assert "\u2504" in limit_row
    assert all(len(row.rstrip("\n").removesuffix(" limit")) <= 14 + _chart.WIDTH
               for row in rows)
    assert "-60.0 s" in text and "0 s\n" in text
    assert "  marks       -55.0 s load\n" in text
    assert "evil\\x1b[2J\\x0alabel" in text and "\x1b" not in text  # printable


def test_the_chart_falls_back_to_ascii_where_the_encoding_has_no_blocks() -> None:
    assert _chart.glyphs_for("utf-8") is _chart.BLOCKS
    assert _chart.glyphs_for(None) is _chart.BLOCKS
    for encoding in ("ascii", "latin-1", "cp1252"):
        assert _chart.glyphs_for(encoding) is _chart.ASCII
    text = "".join(_chart.draw(_ramp(), _chart.ASCII))
    text.encode("ascii")
    assert "#" in text and " limit\n" in text


def test_one_sample_and_no_sample_say_so() -> None:
    one = _timeline.Timeline([(-0.1, 5 * MIB)], [], rss=5 * MIB, limit=20 * MIB, ratio=0.25)
    assert _chart.draw(one) == [
        "  timeline    one sample: rss 5.0 MiB at -0.1 s (25% of the 20.0 MiB limit)\n"]
    none = _timeline.Timeline([], [], rss=None, limit=None, ratio=0.0)
    assert _chart.draw(none)[0].startswith("  timeline    no samples")


def test_show_prints_the_chart_in_the_encoding_of_its_output(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from watchdog_core.cli import main

    points = [{"t": -10 + i * 0.5, "rss": (i + 1) * MIB, "ratio": 0.1} for i in range(20)]
    path = tmp_path / "d.json"
    path.write_bytes(Diagnostics.model_validate(minimal_dump(timeline=points)).to_json())

    class Latin1(io.StringIO):
        encoding = "latin-1"

    out = Latin1()
    assert main(["show", str(path)], out) == 0
    out.getvalue().encode("latin-1")
    assert "+" in out.getvalue() and "#" in out.getvalue()


def test_the_other_dumps_are_this_sessions_within_the_hour(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def write(name: str, **fields: object) -> None:
        (tmp_path / name).write_bytes(Diagnostics.model_validate(minimal_dump(
            **fields)).to_json())

    write("memory-s-20261129T000000.000000Z.json",
          ring={"slots": 16, "records": 3, "file": "../elsewhere.ring"})
    write("memory-s-20261128T235950.000000Z.json", timestamp="2026-11-28T23:59:50.000000Z",
          trigger="hard")
    write("memory-s-20261128T215950.000000Z.json", timestamp="2026-11-28T21:59:50.000000Z")
    write("memory-s-x-20261128T235955.000000Z.json", sessionId="s-x")  # another session
    (tmp_path / "memory-s-20261128T235958.000000Z.json").write_text("{not json")
    own = Diagnostics.model_validate(minimal_dump(
        ring={"slots": 16, "records": 3, "file": "../elsewhere.ring"}))
    timeline = _timeline.from_dump(own, str(tmp_path / "memory-s-20261129T000000.000000Z.json"))
    assert [(s.t, s.trigger) for s in timeline.siblings] == [(-10.0, "hard")]
    assert timeline.thresholds_from == "the defaults"  # a ring named outside is not read
