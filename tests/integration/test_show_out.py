"""Where `show --html OUT` and `--png OUT` may write, and the text of a descendant's
death: what a breaker found."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DUMP_NAME, ROOT, minimal_dump, run_cli


def _dump(directory: Path, **fields: object) -> Path:
    path = directory / DUMP_NAME
    path.write_text(json.dumps(minimal_dump(**fields)))
    return path


@pytest.mark.parametrize("option", ["--html", "--png"])
def test_a_device_or_fifo_is_never_replaced(tmp_path: Path, option: str) -> None:
    dump = _dump(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in ("/dev/null", "/dev/full", str(fifo)):
        before = os.stat(target).st_mode
        result = run_cli("show", str(dump), option, target)
        assert result.returncode == 2, result.stdout
        assert "is not a regular file" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert os.stat(target).st_mode == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("option", ["--html", "--png"])
def test_the_dump_itself_is_never_replaced(tmp_path: Path, option: str) -> None:
    dump = _dump(tmp_path)
    before = dump.read_bytes()
    for target in (str(dump), f"{tmp_path}/./{dump.name}"):
        result = run_cli("show", str(dump), option, target)
        assert result.returncode == 2 and "is the dump itself" in result.stderr
    os.link(dump, tmp_path / "hardlink.json")
    result = run_cli("show", str(dump), option, str(tmp_path / "hardlink.json"))
    assert result.returncode == 2 and "is the dump itself" in result.stderr
    assert dump.read_bytes() == before


def test_one_file_for_two_pictures_and_odd_names_are_refused(tmp_path: Path) -> None:
    dump = _dump(tmp_path)
    same = str(tmp_path / "same.out")
    result = run_cli("show", str(dump), "--html", same, "--png", same)
    assert result.returncode == 2 and "name the same file" in result.stderr
    assert not Path(same).exists()
    for name in ("-", f"{tmp_path}/missing/"):
        result = run_cli("show", str(dump), "--html", name)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "missing").exists() and not (tmp_path / "-").exists()


def test_a_symlink_out_is_replaced_never_followed(tmp_path: Path) -> None:
    dump = _dump(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "page.html"
    link.symlink_to(victim)
    result = run_cli("show", str(dump), "--html", str(link))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and "<svg" in link.read_text()


def test_a_bad_mplbackend_is_not_a_traceback(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    dump = _dump(tmp_path)
    for backend in ("nonsense", "module://matplotlib_inline.backend_inline"):
        result = run_cli("show", str(dump), "--png", str(tmp_path / "t.png"),
                         env={"MPLBACKEND": backend})
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_says_which_descendant_died_and_how(tmp_path: Path) -> None:
    descendant = {"pid": 4321, "name": "tail", "rss": 180 << 20,
                  "exit": {"kind": "oom-killed", "signal": "SIGKILL", "confidence": "certain",
                           "evidence": ["kernel: the OOM killer named pid 4321"]}}
    dump = _dump(tmp_path, trigger="descendant-died", descendant=descendant,
                 host={"pid": 4242, "alive": True, "argv": ["make"], "python": None})
    result = run_cli("show", str(dump))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (line,) = [x for x in lines if x.startswith("  descendant  ")]
    assert "tail (pid 4321), rss 180.0 MiB: oom-killed SIGKILL (certain)" in line
    assert any("the OOM killer named pid 4321" in x for x in lines)
    assert "python -," in result.stdout
    unnamed = dict(descendant, pid=None, name="?", rss=None)
    dump = _dump(tmp_path, trigger="descendant-died", descendant=unnamed)
    assert "? (pid ?), rss -" in run_cli("show", str(dump)).stdout


def test_a_real_descendant_death_reads_whole(tmp_path: Path) -> None:
    """A real run whose shell's child is SIGKILLed: show prints the descendant."""
    child = f"{sys.executable} -c 'import time; time.sleep(30)' & sleep 1; kill -9 $!; wait"
    ran = subprocess.run([sys.executable, "-m", "watchdog_core", "run", "--dir",
                          str(tmp_path), "--no-cgroup", "--", "sh", "-c", child],
                         capture_output=True, text=True, timeout=60, check=False,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert ran.returncode == 0, ran.stderr
    (dump,) = tmp_path.glob("memory-*.json")
    shown = run_cli("show", str(dump))
    assert "descendant  python" in shown.stdout or "descendant  python3" in shown.stdout
    assert "killed SIGKILL (certain)" in shown.stdout
    page = run_cli("show", str(dump), "--html", str(tmp_path / "page.html"))
    assert page.returncode == 0, page.stderr
    # The line is the tree's summed RSS (no cgroup here), and the page says so.
    assert "RSS of the host and its descendants, summed" in (
        tmp_path / "page.html").read_text()
