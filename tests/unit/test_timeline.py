"""The timeline's marks (watchdog -> dump) and its pictures' arithmetic, in one process."""

from __future__ import annotations

import io
import itertools
import json
import math
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import minimal_dump
from watchdog_core import _reader, _ring, _writer
from watchdog_core._config import SessionConfig
from watchdog_core._diagnostics import Diagnostics, TimelinePoint
from watchdog_core._host import Watchdog
from watchdog_core._report import MAX_TIMELINE_POINTS, _timeline_points
from watchdog_core.cli import _chart, _timeline

MIB = 1 << 20
SVG = "{http://www.w3.org/2000/svg}"
RULE, CORNER = "\u2500", "\u2514"


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
    assert [p.get("mark") for p in points] == [None] * 3 + [
        "load", None, None, None, "epoch 1", None, "load", None, None]


def test_the_first_point_carries_the_label_in_force() -> None:
    points = _timeline_points(_samples(["warm-up", "warm-up", "go"]))
    assert [p.get("mark") for p in points] == ["warm-up", None, "go"]


def test_a_mark_between_kept_points_lands_on_the_next_kept_one() -> None:
    """1000 samples keep 240 points, evenly spread; a label that changed on a sample left
    out is noted on the next point kept, once."""
    labels: list[str | None] = ["a"] * 501 + ["b"] * 499
    samples = _samples(labels)
    points = _timeline_points(samples)
    assert len(points) == MAX_TIMELINE_POINTS
    assert (points[0]["t"], points[-1]["t"]) == (round(samples[0][0], 3),
                                                 round(samples[-1][0], 3))
    kept = {round(t, 3) for t, *_ in samples}
    assert all(p["t"] in kept for p in points)
    assert all(round(samples[501][0], 3) != p["t"] for p in points)  # the change is left out
    marked = [(p["t"], p.get("mark")) for p in points if p.get("mark") is not None]
    assert [m for _, m in marked] == ["a", "b"]
    assert marked[1][0] == min(p["t"] for p in points if p["t"] > samples[501][0])


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


# -- what a tester found: degenerate spans, crowds of marks, absurd figures -------------------

def _dump(**fields: object) -> Diagnostics:
    return Diagnostics.model_validate(minimal_dump(**fields))


def _svg_of(dump: Diagnostics, timeline: _timeline.Timeline) -> ET.Element:
    from watchdog_core.cli import _svg

    return ET.fromstring(_svg.svg(dump, timeline))  # well-formed XML, or this raises


@pytest.mark.parametrize("ts", [[0.0, 0.0], [-0.001, 0.0], [-0.5] * 50, [0.0] * 50])
def test_samples_at_one_time_are_drawn_over_the_least_span(ts: list[float]) -> None:
    """Two samples at t = 0 divided by zero in the page; the chart said "one sample" and
    "the last 0.0 s"; 50 samples at one time drew nothing."""
    points = [(t, 30 * MIB) for t in ts]
    tl = _timeline.Timeline(points, [], rss=30 * MIB, limit=64 * MIB, ratio=0.47)
    low, high = tl.x_range()
    assert high - low == pytest.approx(_timeline.MIN_SPAN) and low <= min(ts)
    svg = _svg_of(_dump(), tl)
    samples = [c for c in svg.iter(f"{SVG}circle") if c.get("class") == "sample"]
    assert 1 <= len(samples) <= 2  # a dot for each place, not nothing
    lines = _chart.draw(tl, columns=200)
    assert lines[0] == ("  timeline    rss against the 64.0 MiB limit, the last 1.0 s "
                        f"({len(ts)} samples)\n")
    assert "\u2588" in "".join(lines)  # a full block: drawn
    assert lines[-1].split() == ["-1.00", "s", "-0.50", "s", "0", "s"]


def test_the_samples_say_their_span() -> None:
    def samples(ts: list[float]) -> str:
        return _timeline.Timeline([(t, MIB) for t in ts], [], rss=MIB, limit=None,
                                  ratio=0.0).samples()

    assert samples([]) == "no samples" and samples([-1.0]) == "one sample"
    assert samples([0.0, 0.0]) == "2 samples at one time"
    assert samples([-0.001, 0.0]) == "2 samples over 1 ms"
    assert samples([-59.8, 0.0]) == "2 samples over 59.8 s"


def test_absurd_times_are_left_out_and_said() -> None:
    points = [(-1e300, MIB), (-math.inf, MIB), (-30.0, 2 * MIB), (5.0, 3 * MIB), (1e300, MIB)]
    marks = [_timeline.Mark(-1e300, MIB, "ancient"), _timeline.Mark(-30.0, 2 * MIB, "ok")]
    tl = _timeline.Timeline(points, marks, rss=3 * MIB, limit=None, ratio=0.0)
    assert tl.points == [(-30.0, 2 * MIB), (5.0, 3 * MIB)] and tl.left_out == 3
    assert [m.label for m in tl.marks] == ["ok"]
    assert tl.x_range() == (-30.0, 5.0)
    assert tl.x_title() == "seconds from the dump"  # a point after the dump
    text = "".join(_chart.draw(tl, columns=200))
    assert "3 samples of absurd times left out" in text and "e+" not in text
    svg = _svg_of(_dump(), tl)
    labels = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "axis"]
    assert all(len(label) <= 9 for label in labels), labels
    assert "seconds from the dump" in [t.text for t in svg.iter(f"{SVG}text")]
    assert _timeline.seconds(-604800.0) == "-604800 s"


def test_a_huge_rss_is_labelled_in_a_unit_that_fits() -> None:
    tl = _timeline.Timeline([(-1.0, 10**18), (0.0, 10**18)], [], rss=10**18,
                            limit=1 << 30, ratio=9e8)
    top, step, unit = tl.y_axis()
    assert unit == "PiB"
    labels = [_timeline.byte_label(k * step, unit) for k in range(round(top / step) + 1)]
    assert labels[-1] == "1000 PiB" and all(len(label) <= 9 for label in labels)
    assert _timeline.size(10**18) == "888.18 PiB" and _timeline.size(3 << 40) == "3.00 TiB"
    assert _timeline.size(3 << 30) == "3.00 GiB" and _timeline.size(5 * MIB) == "5.0 MiB"


@pytest.mark.parametrize(("thresholds", "bands"), [
    ((0.5, 0.65, 0.8), [("soft", 0.5, 0.65), ("hard", 0.65, 0.8), ("critical", 0.8, 1.0)]),
    ((math.nan, -0.5, math.inf), [("hard", 0.0, 1.0)]),
    ((0.9, 0.5, 0.7), [("critical", 0.9, 1.0)]),  # never below the one before
    ((-math.inf, 2.0, math.nan), []),  # hard clamped to the limit: no height
])
def test_absurd_thresholds_are_drawable_bands(thresholds: tuple[float, float, float],
                                              bands: list[tuple[str, float, float]]) -> None:
    tl = _timeline.Timeline([(-1.0, 50 * MIB), (0.0, 60 * MIB)], [], rss=60 * MIB,
                            limit=64 * MIB, ratio=0.9, thresholds=thresholds)
    assert tl.bands() == [*bands, ("over", 1.0, math.inf)]
    svg = _svg_of(_dump(), tl)
    from watchdog_core.cli import _svg

    rects = [r for r in svg.iter(f"{SVG}rect") if (r.get("class") or "").startswith("band")]
    assert len(rects) == len(bands) + 1
    for rect in rects:  # inside the plot, whatever the thresholds
        top, height = float(rect.get("y", "nan")), float(rect.get("height", "nan"))
        assert top >= _svg.TOP and top + height <= _svg.BOTTOM + 0.05 and height > 0


def test_a_dump_saying_absurd_thresholds_says_so_on_the_pictures() -> None:
    dump = _dump(thresholds={"soft": "NaN", "hard": -0.5, "critical": "Infinity"})
    assert "drawn left out where not a number" in _timeline.from_dump(dump).thresholds_from


def test_many_marks_are_thinned_evenly_to_a_readable_few() -> None:
    def marks(n: int) -> list[_timeline.Mark]:
        return [_timeline.Mark(-60 + i * 60 / n, MIB, f"train step {i}") for i in range(n)]

    for n in (10, 40, 41, 240, 3000):
        tl = _timeline.Timeline([(-60.0, MIB), (0.0, MIB)], marks(n), rss=MIB, limit=None,
                                ratio=0.0)
        drawn = tl.drawn_marks()
        assert len(drawn) == min(n, _timeline.MAX_DRAWN_MARKS)
        numbers = [k for k, _ in drawn]
        assert numbers[0] == 1 and numbers[-1] == n and numbers == sorted(set(numbers))
        gaps = [b - a for a, b in itertools.pairwise(numbers)]
        assert max(gaps) - min(gaps) <= 1  # evenly
        svg = _svg_of(_dump(), tl)
        ticks = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "mark"]
        assert len(ticks) == len(drawn)
        titles = [g.findtext(f"{SVG}title") or "" for g in ticks]
        assert titles[-1].startswith(f"mark {n}, ")  # numbered as in the table


def _text_boxes(figure: object) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Every text drawn on ``figure``, with its box in pixels as the renderer puts it."""
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    figure.draw_without_rendering()  # type: ignore[attr-defined]  # ticks laid out
    boxes = []
    for artist in figure.findobj(Text):  # type: ignore[attr-defined]
        if not artist.get_visible() or not artist.get_text().strip():
            continue
        box = artist.get_window_extent(renderer)
        boxes.append((artist.get_text(), (box.x0, box.y0, box.x1, box.y1)))
    return boxes


@pytest.mark.parametrize("n", [240, 3000])
def test_the_png_labels_never_overlap_nor_leave_the_figure(n: int) -> None:
    pytest.importorskip("matplotlib")
    from watchdog_core.cli import _png

    points = [(-60 + i * 60 / n, (100 + i) * MIB) for i in range(n)]
    marks = [_timeline.Mark(t, rss, f"train step {i}") for i, (t, rss) in enumerate(points)]
    tl = _timeline.Timeline(points, marks, rss=points[-1][1], limit=1 << 30, ratio=0.8,
                            siblings=[_timeline.Sibling(-30.0, 200 * MIB, "hard", "hard", "x"),
                                      _timeline.Sibling(-29.5, 200 * MIB, "soft", "soft", "y")])
    long = "a-long-unbroken-session-id-" * 12
    dump = _dump(sessionId=long, risks=[long, long],
                 memory={"rss": 1, "heapUsed": 1, "heapLimit": 1 << 30, "ratio": 0.8,
                         "limitSource": long})
    figure = _png.draw(dump, tl)
    boxes = _text_boxes(figure)
    width, height = _png.FIGURE_PIXELS
    ticks = [label for label, _ in boxes if label.startswith("train step")]
    assert 10 <= len(ticks) <= _timeline.MAX_DRAWN_MARKS
    for label, (x0, y0, x1, y1) in boxes:
        assert min(x0, y0) >= 0 and x1 <= width and y1 <= height, label
    for (a, (ax0, ay0, ax1, ay1)), (b, (bx0, by0, bx1, by1)) in itertools.combinations(
            boxes, 2):
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a, b)
    lines = [line.get_xdata() for line in figure.axes[0].get_lines()]
    assert sum(len(set(x)) == 1 and len(x) == 2 for x in lines) <= _timeline.MAX_DRAWN_MARKS


def test_the_png_of_absurd_figures_warns_of_nothing() -> None:
    """pytest's filterwarnings=error: a RuntimeWarning of matplotlib fails this."""
    pytest.importorskip("matplotlib")
    from watchdog_core.cli import _png

    tl = _timeline.Timeline([(-1e300, 10), (-30.0, 10**18), (5.0, 10**18)], [],
                            rss=10**18, limit=1 << 30, ratio=9e8,
                            thresholds=(math.nan, -0.5, math.inf))
    data = _png.png(_dump(), tl)
    assert data.startswith(b"\x89PNG")
    figure = _png.draw(_dump(), tl)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "1000 PiB" in labels and all(len(label) <= 9 for label in labels)
    assert figure.axes[0].get_xlabel() == "seconds from the dump"


# -- the chart in a terminal's width --------------------------------------------------------

@pytest.mark.parametrize("columns", [41, 50, 80, 200])
def test_the_chart_fits_the_terminal(columns: int) -> None:
    lines = _chart.draw(_ramp(), columns=columns)
    assert all(len(line.rstrip("\n")) < columns for line in lines[1:]), lines  # a spare one
    plot = min(_chart.WIDTH, columns - _chart.MARGINS)
    assert f"{'0':>12} {CORNER}{RULE * plot}\n" in lines


def test_a_terminal_too_narrow_for_a_chart_gets_one_line() -> None:
    lines = _chart.draw(_ramp(), columns=40)
    assert lines[0] == ("  timeline    120 samples over 59.5 s, rss up to 139.0 MiB at -0.5 s "
                        "(87% of the 160.0 MiB limit)\n")
    assert not any("\u2502" in line for line in lines)
    assert all(len(line) <= 40 for line in lines[1:])  # the marks are cut to fit


def test_the_chart_is_as_wide_as_a_terminal_only_on_a_terminal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "45")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert _chart.terminal_columns() is None  # piped: 60 columns, as before
    assert RULE * _chart.WIDTH in "".join(_chart.draw(_ramp()))
    monkeypatch.setattr("sys.stdout", Terminal())
    assert _chart.terminal_columns() == 45
    assert f"{CORNER}{RULE * (45 - _chart.MARGINS)}\n" in "".join(_chart.draw(_ramp()))


# -- the page's words: a descendant, the stacks, the files beside the dump -------------------

DESCENDANT = {"pid": 4321, "name": "tail", "rss": 184 << 20,
              "exit": {"kind": "oom-killed", "signal": "SIGKILL", "confidence": "certain",
                       "evidence": ["kernel: the OOM killer named pid 4321 <tail>"]}}


def test_the_page_says_which_descendant_died_beside_the_verdict() -> None:
    from watchdog_core.cli import _page

    dump = _dump(trigger="descendant-died", descendant=DESCENDANT,
                 host={"pid": 4242, "alive": True, "argv": ["make"], "python": None})
    page = _page.page(dump, _timeline.from_dump(dump))
    header = page[page.index("<header>"): page.index("</header>")]
    assert ('<p class="verdict descendant">Descendant tail (pid 4321) was killed by the '
            "kernel&#x27;s OOM killer (SIGKILL) at 184.0 MiB, certain</p>") in header
    assert "<li>kernel: the OOM killer named pid 4321 &lt;tail&gt;</li>" in header
    assert "<tr><th>python</th><td>-</td></tr>" in page and "None" not in page
    unknown = Diagnostics.model_validate(minimal_dump(descendant={
        **DESCENDANT, "pid": None, "rss": None, "name": "?",
        "exit": {"kind": "unknown", "confidence": "unknown"}})).descendant
    assert unknown is not None
    assert _timeline.descendant_verdict(unknown) == (
        "descendant ? (pid unknown) ended, how is unknown")


STACKS = """Thread 0x00007f0000000002 (most recent call first):
  File "/app/worker.py", line 9 in wait

Current thread 0x00007f0000000001 (most recent call first):
  File "/app/loop.py", line 317 in spin
  File "/app/main.py", line 196 in main
  File "/app/main.py", line 398 in <module>
"""


def test_the_page_shows_the_main_threads_stack_and_the_files_beside_the_dump(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    from watchdog_core.cli import _page

    (tmp_path / "d.stacks.txt").write_text(STACKS)
    dump = _dump(trigger="unresponsive", responsiveness={
        "state": "unresponsive", "reason": "main-thread-stuck", "mainThread": "0x7f0000000001"},
        extras={"stacks": "d.stacks.txt"},
        extrasMissing={"tracemalloc": "not answered <in time>"})
    page = _page.page(dump, _timeline.from_dump(dump, str(tmp_path / "d.json")))
    assert "<h2>Stack of the main thread, 0x00007f0000000001</h2>" in page
    assert ('<pre>File &quot;/app/main.py&quot;, line 398, in &lt;module&gt;\n'
            'File &quot;/app/main.py&quot;, line 196, in main\n'
            'File &quot;/app/loop.py&quot;, line 317, in spin\n</pre>') in page
    assert f"(2 threads): <code class=\"file\">{tmp_path}/d.stacks.txt</code>" in page
    files = page[page.index("<h2>Files beside the dump</h2>"):]
    assert "<th>stacks</th><td><code class=\"file\">d.stacks.txt</code>" in files
    assert "<th>tracemalloc</th><td>missing: not answered &lt;in time&gt;</td>" in files
    (tmp_path / "d.stacks.txt").unlink()  # pruned: the page is still written, and says so
    page = _page.page(dump, _timeline.from_dump(dump, str(tmp_path / "d.json")))
    assert "<p>Cannot show them: no such file: " in page
    away = _dump(extras={"stacks": "../x.txt"}, responsiveness={
        "state": "unresponsive", "reason": "gil-held", "stacksMissing": None})
    assert "does not name a file beside the dump" in _page.page(
        away, _timeline.from_dump(away, str(tmp_path / "d.json")))


def test_the_page_shows_the_frames_the_dump_holds() -> None:
    from watchdog_core.cli import _page

    frames = [{"file": f"/app/m{i}.py", "line": i, "function": f"f{i}"} for i in range(25)]
    dump = _dump(host={"pid": 1, "alive": False, "argv": ["app"], "exit": {
        "kind": "crashed", "exception": "ValueError", "frames": frames, "framesOmitted": 3,
        "confidence": "certain"}},
        crashTraceback="Fatal Python error: Segmentation fault\n\n" + STACKS.replace(
            "Thread 0x00007f0000000002", "Thread 0x00007f0000000009"))
    page = _page.page(dump, _timeline.from_dump(dump))
    traceback = page[page.index("<h2>Traceback of ValueError</h2>"):]
    traceback = traceback[: traceback.index("</section>")]
    assert traceback.index("... 8 older frames") < traceback.index("m5.py") < traceback.index(
        "m24.py")  # the newest 20, most recent last, saying how many older ones
    crash = page[page.index("<h2>Crash</h2>"):]
    crash = crash[: crash.index("</section>")]
    assert "<p>Fatal Python error: Segmentation fault</p>" in crash
    assert crash.index("main.py") < crash.index("loop.py") and "worker.py" not in crash


def test_the_page_keeps_its_labels_inside_the_picture() -> None:
    from watchdog_core.cli import _svg

    # The dump at the plot's left (every sample after it): its label on its right.
    after = _timeline.Timeline([(0.5, 900 * MIB), (1.4, 910 * MIB)], [], rss=900 * MIB,
                               limit=1 << 30, ratio=0.88)
    svg = _svg_of(_dump(), after)
    (dump,) = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "dump"]
    label = dump.find(f"{SVG}text")
    assert label is not None and label.get("text-anchor") == "start"
    assert float(label.get("x", "0")) > _svg.LEFT
    # The right margin's labels: a line each short enough for the margin, the limit's
    # in two, never under one another.
    for limit in (1 << 30, 64 << 30):
        tl = _timeline.Timeline([(-1.0, 40 * MIB), (0.0, 900 * MIB)], [], rss=900 * MIB,
                                limit=limit, ratio=0.9)
        svg = _svg_of(_dump(), tl)
        margin = [t for t in svg.iter(f"{SVG}text") if t.get("x") == str(_svg.RIGHT + 6)]
        lines = [span.text or "" for t in margin for span in t.iter(f"{SVG}tspan")]
        assert any(line.startswith("limit") for line in lines)
        assert all(_svg.RIGHT + 6 + len(line) * _svg.BOLD <= _svg.WIDTH for line in lines), lines
        ys = sorted(float(t.get("y", "0")) for t in margin)
        assert all(b - a >= _svg.LINE for a, b in itertools.pairwise(ys))
