"""``show`` as pictures: the terminal timeline, ``--html`` and ``--png``, and a saved ring.

The dumps come from real hosts: one ramping its memory past a configured limit with
marks on the way (its hard, critical, manual and host-died dumps, and the ring its
postmortem saved), one stuck in a busy loop (unresponsive), and one whose host and
watchdog were both killed (recovered by ``gc``). The pages are parsed as XML, and
rendered by a real headless Chromium where the machine has one.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, Host, end_hosts, minimal_dump, run_cli

SVG = "{http://www.w3.org/2000/svg}"
MIB = 1 << 20
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARKS = ["load", "ramp"]  # marked by the ramping host, each seen by a sample
HOSTILE = "<script>alert('x')</script>\n\"quoted\" & \x01\uffff"


# -- real dumps, made once ------------------------------------------------------------------

def _status_samples(host: Host) -> int:
    reply = host.ask("status")
    return int(json.loads(reply.removeprefix("status "))["samples"])


def _seen_by_a_sample(host: Host) -> None:
    """Return once the watchdog has sampled twice since now: what was marked before is in
    its timeline. Waits on the host's own status block, never on a clock."""
    start = _status_samples(host)
    while _status_samples(host) < start + 2:
        pass


def _one(directory: Path, trigger: str) -> Path:
    (found,) = [p for p in sorted(directory.glob("memory-*.json"))
                if json.loads(p.read_text())["trigger"] == trigger]
    return found


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dump of each trigger, by name, from real hosts; "ring" is the postmortem's ring."""
    root = tmp_path_factory.mktemp("pictures")
    hosts: list[Host] = []
    try:
        ramp = Host(root / "ramp", "--limit", "160MiB", "--label", "warm-up",
                    "--stats", json.dumps({"historyEntries": 0}))
        hosts.append(ramp)
        ramp.wait_ready()
        for label in MARKS:
            assert ramp.ask(f"mark {json.dumps(label)}") == "marked"
            _seen_by_a_sample(ramp)
            assert ramp.ask("grow 16") == "grown"
        assert ramp.ask("pressure 1") == "level critical"  # marks pressure:0
        assert ramp.ask("dump").startswith("dumped ")
        ramp.send("kill")
        ramp.finish()

        stuck = Host(root / "stuck", "--hang-after", "0.5", "--label", "tool:loop")
        hosts.append(stuck)
        stuck.wait_ready()
        assert stuck.ask("spin 2") == "spun"
        stuck.send("stop")
        assert stuck.finish() == 0

        orphan = Host(root / "orphan", "--no-restart", "--stats", json.dumps({"turns": 9}))
        hosts.append(orphan)
        orphan.wait_ready()
        orphan.kill_both()
        gc = run_cli("gc", env={"WATCHDOG_CORE_DIR": str(root / "elsewhere")})
        assert gc.returncode == 0, gc.stderr
    finally:
        end_hosts(hosts)
    found = {trigger: _one(root / "ramp", trigger)
             for trigger in ("hard", "critical", "manual", "host-died")}
    found["unresponsive"] = _one(root / "stuck", "unresponsive")
    found["recovered"] = _one(root / "orphan", "recovered")
    (found["ring"],) = (root / "ramp").glob("*.ring")
    return found


def _load(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _show(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("show", *argv, env={"PYTHONIOENCODING": "utf-8", **(env or {})})


# -- the text of show -----------------------------------------------------------------------

VERDICTS = {
    "hard": r"the host was alive at level hard, \d+% of its 160\.0 MiB limit \(configured\)",
    "critical": r"the host was alive at level critical, \d+% of its 160\.0 MiB limit",
    "manual": r"the host was alive at level critical, \d+% of its 160\.0 MiB limit",
    "host-died": r"the host was killed \(SIGKILL\), (certain|likely, not certain)",
    "unresponsive": r"the host was unresponsive \(main-thread-stuck\) at level normal",
    "recovered": r"the host (was killed|ended)",
}


@pytest.mark.parametrize("trigger", list(VERDICTS))
def test_show_says_the_verdict_first_then_the_figures_then_the_timeline(
        dumps: dict[str, Path], trigger: str) -> None:
    shown = _show(str(dumps[trigger]))
    dump = _load(dumps[trigger])
    assert shown.returncode == 1, shown.stderr  # each of them is trouble to report
    assert shown.stderr == ""
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"{trigger} dump of session {dump['sessionId']} at ")
    assert re.fullmatch(r"  verdict     " + VERDICTS[trigger] + r".*", lines[1]), lines[1]
    for field in ("  level ", "  memory ", "  host ", "  activity ", "  suggestion "):
        assert any(line.startswith(field) for line in lines), field
    timeline = dump["timeline"]
    assert isinstance(timeline, list)
    chart = shown.stdout[shown.stdout.index("  timeline    "):]
    if len(timeline) > 1:
        assert f"({len(timeline)} samples)" in chart.splitlines()[0]
        assert "\u2588" in chart or "\u2581" in chart  # blocks, the output being UTF-8
    elif timeline:
        assert chart.startswith("  timeline    one sample: ")
    else:
        assert chart.startswith("  timeline    no samples")


def test_the_ramp_puts_its_marks_on_the_timeline_once_each(dumps: dict[str, Path]) -> None:
    raw = dumps["critical"].read_text()
    assert '"mark": null' not in raw  # absent, not null, where the label stayed the same
    points = _load(dumps["critical"])["timeline"]
    assert isinstance(points, list)
    marks = [p["mark"] for p in points if "mark" in p]
    assert marks == ["warm-up", *MARKS, "pressure:0"]
    assert points[0].get("mark") == "warm-up"  # the label in force at the first point
    rss = [p["rss"] for p in points]
    assert rss[-1] > rss[0] + 64 * MIB  # a real ramp
    shown = _show(str(dumps["critical"])).stdout
    listed = re.findall(r"^(?:  marks {7}| {14})-\d+\.\d s (.*)$", shown, re.MULTILINE)
    assert listed == ["warm-up", *MARKS, "pressure:0"]
    tick_row = next(line for line in shown.splitlines()
                    if line.strip() and set(line.strip()) <= {"\u25b2", " "})
    assert tick_row.count("\u25b2") >= 2


def test_show_of_the_saved_ring_reads_its_header_stats_and_marks(
        dumps: dict[str, Path]) -> None:
    postmortem = _load(dumps["host-died"])
    shown = _show(str(dumps["ring"]))
    assert shown.returncode == 1, shown.stderr  # its watchdog graded it critical
    out = shown.stdout
    assert out.startswith(f"ring of session {postmortem['sessionId']} in ")
    host = postmortem["host"]
    assert isinstance(host, dict)
    assert f"  host        pid {host['pid']}, watchdog pid " in out
    assert re.search(r"  status      critical \(ratio 0\.\d{3} of 160\.0 MiB, configured\), "
                     r"rss \d+\.\d MiB\n", out)
    assert "  stat        historyEntries = " in out
    ring_marks = re.findall(r"  mark        #\d+ (.*)\n", out)
    assert ring_marks == ["warm-up", *MARKS, "pressure:0"]
    assert "  activity    pressure:0\n" in out


# -- --html -----------------------------------------------------------------------------------

def _page(dump: Path, out: Path, *more: str) -> str:
    made = _show(str(dump), "--html", str(out), *more)
    assert made.returncode in (0, 1), made.stderr
    assert made.stdout == f"{out}\n" and made.stderr == ""
    return out.read_text(encoding="utf-8")


def _svg(page: str) -> ET.Element:
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    return ET.fromstring(page[start:end])  # well-formed XML, or this raises


def _polyline_points(svg: ET.Element) -> int:
    lines = svg.findall(f".//{SVG}polyline")
    assert len(lines) == 1
    return len(lines[0].get("points", "").split())


def _marks(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == "mark"]


def test_the_page_of_a_real_ramp_draws_every_point_mark_and_dump(
        dumps: dict[str, Path], tmp_path: Path) -> None:
    page = _page(dumps["critical"], tmp_path / "critical.html")
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "default-src 'none'" in page  # no network, no script, even if asked
    svg = _svg(page)
    dump = _load(dumps["critical"])
    timeline = dump["timeline"]
    assert isinstance(timeline, list)
    assert _polyline_points(svg) == len(timeline)
    marks = _marks(svg)
    assert len(marks) == 4
    assert all(g.find(f"{SVG}line") is not None for g in marks)
    titles = [g.findtext(f"{SVG}title") or "" for g in marks]
    assert [t.split(": ", 1)[1] for t in titles] == ["warm-up", *MARKS, "pressure:0"]
    classes = {e.get("class") for e in svg.iter()}
    assert {"band soft", "band hard", "band critical", "limit", "dump"} <= classes
    # The other dumps of the session beside it are points too, and the dump says the
    # session's own thresholds.
    siblings = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "sibling"]
    assert siblings and "Other dumps of this session" in page
    assert "the session&#x27;s, as the dump says them" in page
    assert "The host was alive at level critical" in page


def test_an_older_dump_takes_its_thresholds_from_the_ring_beside_it(
        dumps: dict[str, Path], tmp_path: Path) -> None:
    """Dumps written before they said their thresholds: the saved ring of the session
    beside them has the session's config."""
    older = _load(dumps["critical"])
    del older["thresholds"]
    copy = dumps["critical"].with_name(dumps["critical"].name.replace(".json", "1.json"))
    copy.write_text(json.dumps(older))
    try:
        page = _page(copy, tmp_path / "older.html")
    finally:
        copy.unlink()
    assert "the session&#x27;s, from memory-" in page


def _points(n: int, label_every: int = 0) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(n):
        point: dict[str, object] = {"t": round(-60 + i * 60 / n, 3),
                                    "rss": (40 + i // 2) * MIB, "ratio": 0.5}
        if label_every and i % label_every == 0:
            point["mark"] = f"step {i // label_every}"
        out.append(point)
    return out


def _write(directory: Path, doc: dict[str, object],
           name: str = "memory-s-20261129T000000.000000Z.json") -> Path:
    from watchdog_core._diagnostics import Diagnostics

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(Diagnostics.model_validate(doc).to_json())
    return path


def _memory(rss: int, limit: int = 256 * MIB) -> dict[str, object]:
    return {"rss": rss, "heapUsed": rss, "heapLimit": limit, "ratio": rss / limit,
            "limitSource": "configured"}


def test_a_full_timeline_of_240_points_and_40_marks(tmp_path: Path) -> None:
    points = _points(240, label_every=6)
    path = _write(tmp_path / "d", minimal_dump(timeline=points, memory=_memory(160 * MIB),
                                               level="soft"))
    svg = _svg(_page(path, tmp_path / "full.html"))
    assert _polyline_points(svg) == 240
    assert len(_marks(svg)) == 40
    labelled = [g for g in _marks(svg) if g.find(f"{SVG}text") is not None]
    assert 0 < len(labelled) < 40  # the crowd is thinned on the plot, all are in the table


def test_one_sample_and_no_sample_render(tmp_path: Path) -> None:
    one = _write(tmp_path / "one", minimal_dump(
        timeline=[{"t": -0.2, "rss": 1 * MIB, "ratio": 0.25, "mark": "start"}]))
    svg = _svg(_page(one, tmp_path / "one.html"))
    assert _polyline_points(svg) == 1
    assert [c.get("class") for c in svg.iter(f"{SVG}circle")].count("sample") == 1
    assert len(_marks(svg)) == 1
    assert "one sample" in _show(str(one)).stdout
    empty = _write(tmp_path / "empty", minimal_dump())
    page = _page(empty, tmp_path / "empty.html")
    assert not _svg(page).findall(f".//{SVG}polyline")
    assert "no samples" in page and "no samples" in _show(str(empty)).stdout


def test_every_string_of_the_dump_is_escaped(tmp_path: Path) -> None:
    doc = minimal_dump(
        sessionId=HOSTILE, suggestion=HOSTILE, lastActivity=HOSTILE, session={HOSTILE: 1},
        timeline=[{"t": -1.0, "rss": MIB, "ratio": 0.2, "mark": HOSTILE},
                  {"t": -0.5, "rss": 2 * MIB, "ratio": 0.2, "mark": "fine"}],
        host={"pid": 1, "alive": False, "argv": [HOSTILE], "python": HOSTILE,
              "exit": {"kind": "crashed", "signal": HOSTILE, "exception": HOSTILE,
                       "evidence": [HOSTILE], "confidence": "likely"}},
        riskDetails=[{"id": HOSTILE, "severity": HOSTILE, "message": HOSTILE, "value": 1,
                      "threshold": 1}],
        memory={**_memory(MIB), "limitSource": HOSTILE})
    page = _page(_write(tmp_path / "d", doc), tmp_path / "evil.html")
    assert "<script" not in page.lower() and "\x01" not in page and "\uffff" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;\\x0a&quot;quoted&quot; &amp; " \
           "\\x01\\uffff" in page
    svg = _svg(page)
    (evil,) = [g for g in _marks(svg) if "alert" in (g.findtext(f"{SVG}title") or "")]
    assert (evil.findtext(f"{SVG}text") or "").startswith("<script>alert('x')</script>\\x")
    assert _tags(page) == _tags(_page(_write(tmp_path / "calm", minimal_dump(
        timeline=doc["timeline"], host=doc["host"], riskDetails=doc["riskDetails"],
        session={"x": 1}, lastActivity="x")), tmp_path / "calm.html"))  # nothing broke out


def _tags(page: str) -> set[tuple[str, tuple[str, ...]]]:
    """Each kind of element of ``page``, with the names of its attributes."""
    from html.parser import HTMLParser

    found: set[tuple[str, tuple[str, ...]]] = set()

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.add((tag, tuple(sorted(name for name, _ in attrs))))

    Tags().feed(page)
    return found


def test_the_page_is_written_whole_and_refused_where_it_cannot_go(tmp_path: Path) -> None:
    path = _write(tmp_path / "d", minimal_dump(timeline=_points(10)))
    out = tmp_path / "out"
    out.mkdir()
    target = out / "page.html"
    target.write_text("an older page")
    _page(path, target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(os.listdir(out)) == ["page.html"]  # no temporary file left behind
    assert (target.stat().st_mode & 0o777) == 0o600  # as private as the dump
    for argv, says in (
            (["--html", str(out)], f"--html {out} is a directory, not a file"),
            (["--html", str(tmp_path / "no" / "such.html")], "no such directory"),
            (["--html", ""], "--html must name a file"),
            (["--json", "--html", str(target)], "one or the other")):
        refused = _show(str(path), *argv)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and says in refused.stderr, refused.stderr
        assert refused.stderr.startswith("watchdog-core: error: ")


def test_a_ring_has_no_picture(dumps: dict[str, Path], tmp_path: Path) -> None:
    refused = _show(str(dumps["ring"]), "--html", str(tmp_path / "r.html"))
    assert refused.returncode == 2 and "is a ring" in refused.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine to render the "
                    "page (CI may not have one); the SVG is still checked as XML above")
@pytest.mark.parametrize("kind", ["full", "one-sample"])
def test_a_real_browser_renders_the_page(tmp_path: Path, kind: str) -> None:
    from matplotlib.image import imread

    points = _points(240, label_every=30) if kind == "full" else [
        {"t": -0.2, "rss": MIB, "ratio": 0.25}]
    rss = 230 * MIB if kind == "full" else MIB
    path = _write(tmp_path / "d", minimal_dump(timeline=points, level="critical",
                                               trigger="critical", memory=_memory(rss)))
    page = tmp_path / "page.html"
    _page(path, page)
    shot = tmp_path / "shot.png"
    _screenshot(page, shot, tmp_path / "profile")
    assert _png_size(shot.read_bytes()) == (1200, 900)
    pixels = imread(str(shot))[:, :, :3]
    # The critical band's colour (#ffb0ab) and the limit's (#b00020) are on the screen.
    for colour in ((0xFF, 0xB0, 0xAB), (0xB0, 0x00, 0x20)):
        near = (abs(pixels * 255 - colour) < 4).all(axis=2)
        assert near.sum() > 50, colour


# -- --png ------------------------------------------------------------------------------------

def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_of_a_real_dump_and_of_one_sample(dumps: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the test extra installs it; CI tests it for real
    target = tmp_path / "critical.png"
    made = _show(str(dumps["critical"]), "--png", str(target), "--html",
                 str(tmp_path / "both.html"))
    assert made.returncode == 1, made.stderr
    assert made.stdout == f"{tmp_path / 'both.html'}\n{target}\n"
    assert _png_size(target.read_bytes()) == (1000, 560)
    from matplotlib.image import imread

    assert imread(str(target)).shape[:2] == (560, 1000)
    one = _write(tmp_path / "one", minimal_dump(
        timeline=[{"t": -0.2, "rss": MIB, "ratio": 0.25, "mark": "$x^2$ " + HOSTILE}]))
    made = _show(str(one), "--png", str(tmp_path / "one.png"))
    assert made.returncode == 0 and made.stderr == "", made.stderr
    assert _png_size((tmp_path / "one.png").read_bytes()) == (1000, 560)


BLOCK_MATPLOTLIB = """
import sys

class NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoMatplotlib())
from watchdog_core.cli import main
sys.exit(main())
"""


def test_without_matplotlib_png_says_which_extra_to_install(tmp_path: Path) -> None:
    path = _write(tmp_path / "d", minimal_dump(timeline=_points(10)))
    html, png = tmp_path / "p.html", tmp_path / "p.png"
    done = subprocess.run([sys.executable, "-c", BLOCK_MATPLOTLIB, "show", str(path),
                           "--html", str(html), "--png", str(png)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("watchdog-core: error: --png needs matplotlib: "
                           "pip install 'watchdog-core[plot]'\n")
    assert not html.exists() and not png.exists()  # said before anything was written
    # The page alone needs nothing of it.
    done = subprocess.run([sys.executable, "-c", BLOCK_MATPLOTLIB, "show", str(path),
                           "--html", str(html)], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0 and html.exists(), done.stderr


def test_the_pictures_are_not_imported_until_asked() -> None:
    code = ("import sys, watchdog_core, watchdog_core.cli.show; "
            "print(sorted(m for m in sys.modules if m.startswith(('watchdog_core.cli._', "
            "'matplotlib'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.stdout.strip() == "[]"


# -- what a tester found ------------------------------------------------------------------------

def _marks_dump(directory: Path, n: int) -> Path:
    points = [{"t": round(-60 + i * 60 / n, 3), "rss": (100 + i // 10) * MIB, "ratio": 0.5,
               "mark": f"train step {i}"} for i in range(n)]
    return _write(directory, minimal_dump(timeline=points, memory=_memory(200 * MIB)))


@pytest.mark.parametrize("n", [240, 3000])
def test_a_crowd_of_marks_is_thinned_on_the_pictures_and_listed_whole(
        tmp_path: Path, n: int) -> None:
    page = _page(_marks_dump(tmp_path / "d", n), tmp_path / "marks.html")
    ticks = _marks(_svg(page))
    assert len(ticks) == 40  # thinned evenly: a tick per 6 (or 75) marks, not a hatching
    assert page.count("train step") >= n  # the table has each of them
    assert f"{n} marks: 40 of them drawn" in page


@pytest.mark.parametrize("ts", [[0.0, 0.0], [-0.001, 0.0]])
def test_samples_at_one_time_draw_on_every_picture(tmp_path: Path, ts: list[float]) -> None:
    """wd.dump() at once after the start holds t = -0.001 and 0.0; two samples at t = 0
    divided by zero in the page."""
    path = _write(tmp_path / "d", minimal_dump(
        timeline=[{"t": t, "rss": (30 + i) * MIB, "ratio": 0.1} for i, t in enumerate(ts)]))
    page = _page(path, tmp_path / "zero.html")
    assert _polyline_points(_svg(page)) == 2
    assert "seconds before the dump" in page
    text = _show(str(path))
    assert text.returncode == 0 and text.stderr == ""
    assert "the last 1.0 s (2 samples)" in text.stdout and "one sample" not in text.stdout
    axis = text.stdout.splitlines()[-1].split()
    assert axis == ["-1.00", "s", "-0.50", "s", "0", "s"], axis  # not "0 s 0 s 0 s"
    pytest.importorskip("matplotlib")
    made = _show(str(path), "--png", str(tmp_path / "zero.png"))
    assert made.returncode == 0 and made.stderr == "", made.stderr


def test_absurd_figures_draw_without_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    long = "x" * 400
    path = _write(tmp_path / "d", minimal_dump(
        timeline=[{"t": -1e300, "rss": 10, "ratio": 0.1}, {"t": -30, "rss": 10**18, "ratio": 1},
                  {"t": 5.0, "rss": 10**18, "ratio": 1}],
        thresholds={"soft": "NaN", "hard": -0.5, "critical": "Infinity"},
        memory=_memory(10**18, 1 << 30), session={long: 1}, suggestion=long, risks=[long]))
    made = _show(str(path), "--png", str(tmp_path / "a.png"), "--html", str(tmp_path / "a.html"))
    assert made.returncode == 0 and made.stderr == "", made.stderr  # no RuntimeWarning
    svg = _svg((tmp_path / "a.html").read_text())
    axis = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "axis"]
    assert "1000 PiB" in axis and all(len(label) <= 9 for label in axis), axis
    assert "seconds from the dump" in [t.text for t in svg.iter(f"{SVG}text")]
    shown = _show(str(path)).stdout
    assert "PiB" in shown and "1 sample of absurd times left out" in shown


def test_the_page_of_a_real_unresponsive_dump_shows_the_main_threads_stack(
        dumps: dict[str, Path], tmp_path: Path) -> None:
    page = _page(dumps["unresponsive"], tmp_path / "stuck.html")
    stacks = _load(dumps["unresponsive"])["extras"]
    assert isinstance(stacks, dict)
    stack = page[page.index("<h2>Stack of the main thread, 0x"):]
    stack = stack[: stack.index("</section>")]
    frames = re.findall(r"line \d+, in (\w+)", stack)
    assert frames[-1] == "spin" and "main" in frames  # most recent call last
    assert f"{dumps['unresponsive'].parent}/{stacks['stacks']}" in stack
    assert f"<th>stacks</th><td><code class=\"file\">{stacks['stacks']}</code>" in page


def test_the_page_of_a_real_descendant_death_says_it_beside_the_verdict(
        tmp_path: Path) -> None:
    child = f"{sys.executable} -c 'import time; time.sleep(30)' & sleep 1; kill -9 $!; wait"
    ran = subprocess.run([sys.executable, "-m", "watchdog_core", "run", "--dir",
                          str(tmp_path / "d"), "--no-cgroup", "--", "sh", "-c", child],
                         capture_output=True, text=True, timeout=60, check=False,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert ran.returncode == 0, ran.stderr
    (dump,) = (tmp_path / "d").glob("memory-*.json")
    page = _page(dump, tmp_path / "dd.html")
    header = page[page.index("<header>"): page.index("</header>")]
    assert re.search(r'<p class="verdict descendant">Descendant python3? \(pid \d+\) was '
                     r"killed \(SIGKILL\)( at \d+\.\d MiB)?, certain</p>", header), header
    descendant = _load(dump)["descendant"]
    assert isinstance(descendant, dict)
    for fact in descendant["exit"]["evidence"]:  # its evidence, under it
        assert f"<li>{html.escape(fact)}</li>" in header
    assert "<tr><th>python</th><td>-</td></tr>" in page  # run's host is no Python


BROKEN_MATPLOTLIB = """
import sys

class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib.backends.backend_agg":
            raise RuntimeError("a font cache that cannot be read")
        return None

sys.meta_path.insert(0, Broken())
from watchdog_core.cli import main
sys.exit(main())
"""


def test_a_matplotlib_that_fails_to_start_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = _write(tmp_path / "d", minimal_dump(timeline=_points(10)))
    done = subprocess.run([sys.executable, "-c", BROKEN_MATPLOTLIB, "show", str(path),
                           "--png", str(tmp_path / "p.png")], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("watchdog-core: error: --png: matplotlib does not start "
                           "(RuntimeError: a font cache that cannot be read)\n")
    assert not (tmp_path / "p.png").exists()


def _on_a_terminal(columns: int, *argv: str) -> str:
    """What ``show`` prints on a real pseudo-terminal ``columns`` wide."""
    import fcntl
    import pty
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    env.pop("COLUMNS", None)
    try:
        child = subprocess.Popen([sys.executable, "-m", "watchdog_core", "show", *argv],
                                 stdout=follower, stderr=follower, env=env)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            out += chunk
        assert child.wait(timeout=60) == 0
    finally:
        os.close(leader)
    return out.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [40, 50, 120])
def test_the_chart_fits_a_real_terminal(tmp_path: Path, columns: int) -> None:
    path = _write(tmp_path / "d", minimal_dump(timeline=_points(240, label_every=60),
                                               memory=_memory(160 * MIB)))
    shown = _on_a_terminal(columns, str(path))
    chart = shown[shown.index("  timeline    "):].splitlines()
    if columns == 40:  # too narrow for 20 columns of plot: one line
        assert chart[0].startswith("  timeline    240 samples over 59.8 s, rss up to ")
        assert not any("\u2502" in line for line in chart)
    else:
        plot = min(60, columns - 21)
        assert "0 \u2514" + "\u2500" * plot + "\n" in shown
        assert all(len(line) < columns for line in chart[1:]), chart


def _screenshot(page: Path, shot: Path, profile: Path) -> None:
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,900", f"--user-data-dir={profile}", page.as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        browser.wait(timeout=120)
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)  # its helpers too, if any lingered
        except ProcessLookupError:
            pass
        browser.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine to render the "
                    "page (CI may not have one)")
def test_long_unbroken_strings_stay_in_their_column(tmp_path: Path) -> None:
    """A risk, a suggestion, a stat's name of 400 characters without a space: wrapped
    inside the page's columns, never drawn over its right margin."""
    from matplotlib.image import imread

    long = "x" * 400
    path = _write(tmp_path / "d", minimal_dump(
        timeline=_points(10), session={long: 1}, suggestion="do " + long, risks=[long],
        riskDetails=[{"id": long, "severity": "high", "message": long, "value": 1,
                      "threshold": 1}], lastActivity=long))
    page = tmp_path / "long.html"
    _page(path, page)
    shot = tmp_path / "shot.png"
    _screenshot(page, shot, tmp_path / "profile")
    pixels = imread(str(shot))[:, :, :3]
    # The body's padding on the right, left of where a scroll bar may be: the page's
    # background (#fafafa) only.
    margin = pixels[:, -24:-16] * 255
    assert (abs(margin - 0xFA) < 2).all()
