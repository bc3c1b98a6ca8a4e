"""The default session id: the program's name and 6 random hex characters,
so that two agents in `watchdog-core ls` can be told apart (docs/design.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from watchdog_core._config import readable_session_id, validate_session_id

HOST = """
import sys
from watchdog_core import start_watchdog
wd = start_watchdog(diagnostics_dir=DIR)
print("id", wd.session_id, flush=True)
wd.stop()
"""


def _run(argv: list[str], cwd: Path, *, stdin: str | None = None) -> str:
    """Run a real host as ``python ARGV``; its default session id."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WATCHDOG_CORE_DISABLE", None)
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=60, check=True, env=env)
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("id ")]
    session_id = line[len("id "):]
    assert validate_session_id(session_id) == session_id
    return session_id


def _host_code(tmp_path: Path) -> str:
    return HOST.replace("DIR", repr(str(tmp_path / "diag")))


def _assert_shape(session_id: str, stem: str) -> None:
    assert re.fullmatch(re.escape(stem) + r"-[0-9a-f]{6}", session_id), session_id


@pytest.mark.parametrize(("script", "stem"), [
    ("agent.py", "agent"),
    ("my agent é.py", "my-agent"),
    (".hidden.py", "hidden"),
    ("--dashes.py", "dashes"),
    ("ü.py", "python"),
    ("a" * 100 + ".py", "a" * 57),
])
def test_a_script_names_the_session(tmp_path: Path, script: str, stem: str) -> None:
    (tmp_path / script).write_text(_host_code(tmp_path), encoding="utf-8")
    session_id = _run([f"./{script}"], tmp_path)
    _assert_shape(session_id, stem)
    assert len(session_id) <= 64


def test_python_m_names_the_session_after_the_module(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(_host_code(tmp_path))
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(_host_code(tmp_path))
    (pkg / "__main__.py").write_text(_host_code(tmp_path))
    _assert_shape(_run(["-m", "agent"], tmp_path), "agent")
    _assert_shape(_run(["-m", "pkg.tool"], tmp_path), "tool")
    _assert_shape(_run(["-m", "pkg"], tmp_path), "pkg")


def test_a_folder_run_as_a_program_is_named_after_the_folder(tmp_path: Path) -> None:
    app = tmp_path / "myapp"
    app.mkdir()
    (app / "__main__.py").write_text(_host_code(tmp_path))
    _assert_shape(_run(["myapp"], tmp_path), "myapp")


def test_c_and_stdin_have_no_name_and_say_python(tmp_path: Path) -> None:
    code = _host_code(tmp_path)
    _assert_shape(_run(["-c", code], tmp_path), "python")
    _assert_shape(_run(["-"], tmp_path, stdin=code), "python")
    _assert_shape(_run([], tmp_path, stdin=code), "python")  # stdin without "-"


def test_two_hosts_of_one_program_differ() -> None:
    ids = {readable_session_id("agent") for _ in range(50)}
    assert len(ids) > 45  # 24 random bits each


@pytest.mark.parametrize(("stem", "expected"), [
    ("agent", "agent"), ("", "python"), ("...", "python"), ("-.-x", "x"),
    ("a b\tc", "a-b-c"), ("a/b\\c", "a-b-c"), ("name\udcff", "name"), ("x" * 80, "x" * 57),
    ("a" * 56 + "é", "a" * 56), ("ok.v2_b-c", "ok.v2_b-c"),
])
def test_the_stem_is_cut_to_the_session_id_alphabet(stem: str, expected: str) -> None:
    session_id = readable_session_id(stem)
    assert validate_session_id(session_id) == session_id
    _assert_shape(session_id, expected)
