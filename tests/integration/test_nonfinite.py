"""NaN and infinite stats: stored, shown, written as strict JSON, read back as floats."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from watchdog_core._diagnostics import json_safe_stats, json_schema, load

RENDERED = {"loss": "NaN", "peak": "Infinity", "low": "-Infinity", "n": 3}

# A training job whose loss turned NaN, asking for a dump, then killed.
HOST = """
import sys
from watchdog_core import start_watchdog
wd = start_watchdog(diagnostics_dir=sys.argv[1], interval=0.05)
wd.record(loss=float("nan"), peak=float("inf"), low=float("-inf"), n=3)
print(wd.dump(), flush=True)
sys.stdin.readline()
"""


def strict_json(text: str | bytes) -> dict[str, object]:
    """json.loads that refuses the bare NaN/Infinity tokens Python's json would accept."""

    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    document: dict[str, object] = json.loads(text, parse_constant=refuse)
    return document


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*argv, timeout=60)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The manual dump and the postmortem (with its .ring) of a real SIGKILLed host."""
    directory = tmp_path_factory.mktemp("nonfinite") / "diag"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WATCHDOG_CORE_DISABLE", None)
    proc = subprocess.Popen([sys.executable, "-c", HOST, str(directory)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        manual = proc.stdout.readline().strip()
        assert manual.endswith(".json"), (manual, proc.stderr and proc.stderr.read())
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # stderr EOF: the watchdog is gone too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    (postmortem,) = (p for p in directory.glob("*.json") if str(p) != manual)
    ring = postmortem.with_suffix(".ring")
    assert ring.exists(), err
    return {"manual": Path(manual), "postmortem": postmortem, "ring": ring}


@pytest.mark.parametrize("which", ["manual", "postmortem"])
def test_a_dump_is_strict_json_with_the_three_strings(dumps: dict[str, Path],
                                                      which: str) -> None:
    document = strict_json(dumps[which].read_bytes())
    assert document["session"] == RENDERED
    assert document["trigger"] == ("manual" if which == "manual" else "host-died")


@pytest.mark.parametrize("which", ["manual", "postmortem"])
def test_load_gives_the_floats_back(dumps: dict[str, Path], which: str) -> None:
    session = load(dumps[which].read_bytes()).session
    assert math.isnan(session["loss"])
    assert session["peak"] == math.inf
    assert session["low"] == -math.inf
    assert session["n"] == 3
    assert type(session["n"]) is int


@pytest.mark.parametrize("which", ["manual", "postmortem"])
def test_show_prints_them_and_round_trips(dumps: dict[str, Path], which: str) -> None:
    text = run("show", str(dumps[which]))
    assert text.returncode in (0, 1), text.stderr  # never 2: the file is ours and valid
    for line in ("loss = nan", "peak = inf", "low = -inf", "n = 3"):
        assert f"stat        {line}\n" in text.stdout
    if which == "postmortem":  # how sure the verdict is, for a person too
        assert "exit        killed SIGKILL (certain)\n" in text.stdout, text.stdout
    as_json = run("show", "--json", str(dumps[which]))
    assert as_json.returncode == text.returncode, as_json.stderr  # the same verdict
    assert strict_json(as_json.stdout) == strict_json(dumps[which].read_bytes())
    assert math.isnan(load(as_json.stdout).session["loss"])


def test_read_ring_json_is_strict_and_text_shows_them(dumps: dict[str, Path]) -> None:
    as_json = run("read-ring", str(dumps["ring"]), "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = strict_json(as_json.stdout)
    slots = document["slots"]
    assert isinstance(slots, list)
    assert slots[-1]["values"] == RENDERED
    text = run("read-ring", str(dumps["ring"]), "--last", "1")
    assert text.returncode == 0, text.stderr
    assert "loss=nan peak=inf low=-inf n=3" in text.stdout


# -- the helper and the schema: no process needed ------------------------------------------

def test_json_safe_stats_renders_only_non_finite_floats() -> None:
    big = 2**63 - 1  # an exact int64 stat must stay an int, not become a float
    stats = {"loss": math.nan, "peak": math.inf, "low": -math.inf, "n": 3, "big": big,
             "lr": 0.001, "zero": -0.0, "flag": True}
    safe = json_safe_stats(stats)
    assert safe == {"loss": "NaN", "peak": "Infinity", "low": "-Infinity", "n": 3, "big": big,
                    "lr": 0.001, "zero": -0.0, "flag": True}
    assert list(safe) == list(stats)  # names and their order kept
    json.dumps(safe, allow_nan=False)  # raises on anything JSON cannot carry
    assert math.isnan(stats["loss"])  # the input is left alone


def test_json_safe_stats_agrees_with_the_dump_file(dumps: dict[str, Path]) -> None:
    """Both writers (pydantic now, the stdlib json module later) render alike."""
    session = load(dumps["manual"].read_bytes()).session
    assert json_safe_stats(session) == RENDERED


@pytest.mark.parametrize("value", ['"nan"', '"inf"', '"3"', "true", "null"])
def test_other_strings_and_non_numbers_are_not_stats(dumps: dict[str, Path],
                                                     value: str) -> None:
    import pydantic

    raw = dumps["manual"].read_text().replace('"NaN"', value, 1)
    with pytest.raises(pydantic.ValidationError):
        load(raw)


def test_the_schema_allows_a_number_or_one_of_the_three_strings() -> None:
    session = json_schema()["properties"]["session"]  # type: ignore[index]
    values = session["additionalProperties"]
    assert {"type": "number"} in values["anyOf"]
    assert {"enum": ["NaN", "Infinity", "-Infinity"]} in values["anyOf"]
