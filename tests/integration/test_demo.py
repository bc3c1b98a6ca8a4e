"""``watchdog-core demo`` (docs/cli.md): the story of a real host that grows towards its
limit, is dumped on the way, is killed, and is explained by its postmortem."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from tests.conftest import run_cli
from watchdog_core.cli import demo, show

STATUS = re.compile(r"^  mem (\d+) MiB / 256 MiB \((\d+)%\)(.*)$")


def test_the_demo_tells_the_story(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = run_cli("demo", "--dir", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    ended = lines.index("the demo host ended with signal SIGKILL")
    story = lines[:ended]

    # The status line after every step, moving towards the limit.
    percents = [int(m[2]) for m in map(STATUS.match, story) if m]
    assert len(set(percents)) >= 5
    assert percents == sorted(percents)
    assert percents[-1] >= 80  # critical
    assert any("to limit" in line for line in story)

    # Each pressure dump said as it was written, while the host still grew.
    said = {}
    for at, line in enumerate(story):
        m = re.fullmatch(r"  pressure (hard|critical): dump written: (.+)", line)
        if m:
            said[m[1]] = (at, Path(m[2]))
    assert set(said) == {"hard", "critical"}
    for level, (_, path) in said.items():
        assert path.parent == directory and path.is_file()
        assert json.loads(path.read_text())["level"] == level
    hard_at = said["hard"][0]
    assert any(STATUS.match(line) for line in story[hard_at:])  # told between steps

    # The death, then its postmortem as show shows it.
    assert any(line.startswith("  watchdog-core: postmortem written to ") for line in story)
    rest = "\n".join(lines[ended:])
    m = re.search(r"^its postmortem, as `watchdog-core show (\S+)` shows it:\n"
                  r"host-died dump of session demo-\d+ ", rest, re.MULTILINE)
    assert m, rest
    postmortem = Path(m[1])
    assert json.loads(postmortem.read_text())["trigger"] == "host-died"
    assert re.search(r"^  exit +killed SIGKILL", rest, re.MULTILINE)
    assert "activity    demo:about-to-be-killed" in rest
    # The HTML page, once show makes one: said only when it was written.
    page = re.search(r"^the HTML page: (.+)$", rest, re.MULTILINE)
    if page:
        assert Path(page[1]) == postmortem.with_suffix(".html")
        assert Path(page[1]).is_file()
    assert lines[-1].startswith(f"3 dumps in {directory}; ")


def test_demo_json_prints_the_dumps_only(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    dumps = json.loads(result.stdout)  # nothing else on stdout
    assert [d["trigger"] for d in dumps].count("host-died") == 1
    assert {d["level"] for d in dumps if d["trigger"] != "host-died"} == {"hard", "critical"}


def test_the_html_page_is_made_once_show_takes_html(tmp_path: Path, monkeypatch) -> None:
    """The hook: ``show POSTMORTEM --html STEM.html`` when show's parser takes --html,
    nothing at all (and no error) while it does not."""
    postmortem = tmp_path / "memory-demo-1-20261129T000000.000000Z.json"
    written: list[argparse.Namespace] = []
    real_configure = show.configure

    def configure(parser: argparse.ArgumentParser) -> None:
        real_configure(parser)
        try:
            parser.add_argument("--html", metavar="OUT")
        except argparse.ArgumentError:
            pass  # show has it by now

    def run(args: argparse.Namespace, out: object) -> int:
        written.append(args)
        Path(args.html).write_text("<html></html>")
        return 1  # a dead host's dump: show's exit 1 is no failure of the demo

    monkeypatch.setattr(show, "configure", configure)
    monkeypatch.setattr(show, "run", run)
    page = demo.html_page(str(postmortem))
    assert page == str(tmp_path / "memory-demo-1-20261129T000000.000000Z.html")
    assert Path(page).is_file()
    assert written[0].file == str(postmortem)

    monkeypatch.setattr(show, "configure", lambda parser: parser.add_argument("file"))
    Path(page).unlink()
    assert demo.html_page(str(postmortem)) is None
    assert not Path(page).exists()


def test_a_limit_the_host_would_refuse_is_bad_input(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path), "--limit", "1KiB")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == ("watchdog-core: error: --limit 1KiB is below the least "
                             "memory_limit, 16 MiB\n")
    assert not list(tmp_path.iterdir())  # refused before a host started


def test_a_host_past_hard_at_its_first_sample_still_tells_it_all(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path), "--limit", "16MiB")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^  pressure critical: dump written: ", result.stdout, re.MULTILINE)
    assert re.search(r"^host-died dump of session demo-\d+ ", result.stdout, re.MULTILINE)
