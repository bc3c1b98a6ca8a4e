"""A diagnostics folder others control: refused, yet the postmortem is kept.

The fallback chain (docs/design.md, "Where files go"): the folder asked for; a private
``watchdog-core-{uid}`` folder inside it; the default state folder; only then no dumps.
Real folders, real hosts, real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, segment_exists

UID = os.geteuid()


def _postmortem(folder: Path) -> dict:  # type: ignore[type-arg]
    dumps = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    found = [d for d in dumps if d["trigger"] == "host-died"]
    assert len(found) == 1, dumps
    return found[0]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "RuntimeWarning" in line]


def _kill_and_finish(host) -> None:  # type: ignore[no-untyped-def]
    os.kill(host.pid, signal.SIGKILL)
    host.finish()
    assert not segment_exists(str(host.info["shm"]))


def _assert_private(folder: Path) -> None:
    assert folder.stat().st_mode & 0o7777 == 0o700
    assert {p.stat().st_mode & 0o7777 for p in folder.iterdir()} == {0o600}


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770], ids=["world", "sticky", "group"])
def test_a_shared_folder_gets_a_private_subfolder_and_the_postmortem(
        start_host, tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    host = start_host("--session", "shared-one", directory=shared,
                      env={"XDG_STATE_HOME": str(tmp_path / "state")})
    host.wait_ready()
    private = shared / f"watchdog-core-{UID}"
    # dump() answers Path(wd.diagnostics_dir) / name: the folder the handle names.
    answer = host.ask("dump")
    assert answer.startswith("dumped ") and Path(answer[len("dumped "):]).parent == private
    _kill_and_finish(host)

    dump = _postmortem(private)
    assert dump["host"]["exit"]["signal"] == "SIGKILL"
    _assert_private(private)
    assert [p.name for p in shared.iterdir()] == [private.name]
    assert not (tmp_path / "state").exists()
    (warning,) = _warnings(host.stderr)
    assert f"{shared} is writable by others (mode {mode:o})" in warning
    assert warning.endswith(f"dumps go to {private}")
    assert "postmortem written to " + str(private) in host.stderr


def _plant_foreign_dir(private: Path, bait: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a folder owned by another user needs root")
    private.mkdir(mode=0o700)
    os.chown(private, 65534, 65534)


def _plant_symlink(private: Path, bait: Path) -> None:
    private.symlink_to(bait)


def _plant_open_dir(private: Path, bait: Path) -> None:
    # Ours (an attacker cannot make that), but left open to everyone: refused as well.
    private.mkdir()
    private.chmod(0o777)


@pytest.mark.parametrize("plant", [_plant_foreign_dir, _plant_symlink, _plant_open_dir],
                         ids=["foreign-owner", "symlink", "open"])
def test_a_planted_subfolder_gives_way_to_the_state_folder(
        start_host, tmp_path: Path, plant) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    bait = tmp_path / "bait"  # where a symlink planted by an attacker points
    bait.mkdir(mode=0o700)
    private = shared / f"watchdog-core-{UID}"
    plant(private, bait)
    state = tmp_path / "state"
    host = start_host("--session", "planted", directory=shared,
                      env={"XDG_STATE_HOME": str(state)})
    host.wait_ready()
    used = state / "watchdog-core" / "diagnostics"
    answer = host.ask("dump")
    assert Path(answer[len("dumped "):]).parent == used
    _kill_and_finish(host)

    assert _postmortem(used)["host"]["exit"]["signal"] == "SIGKILL"
    _assert_private(used)
    for folder in (state, state / "watchdog-core"):  # made by us: 0700 too
        assert folder.stat().st_mode & 0o7777 == 0o700
    assert list(bait.iterdir()) == []
    assert [p.name for p in shared.iterdir()] == [private.name]
    if not private.is_symlink():
        assert list(private.iterdir()) == []
    (warning,) = _warnings(host.stderr)
    assert f"{shared} is writable by others" in warning and f"{private} " in warning
    assert warning.endswith(f"dumps go to {used}")


SCRIPT = """
import json, os, sys, warnings
warnings.simplefilter("always")
from watchdog_core import start_watchdog
if len(sys.argv) > 1:
    os.umask(int(sys.argv[1], 8))
with warnings.catch_warnings(record=True) as caught:
    wd = start_watchdog(session_id="script")
wd.record(a=1)
path = wd.dump()
print(json.dumps({"dir": wd.diagnostics_dir, "enabled": wd.enabled,
                  "dump": str(path) if path else None,
                  "warnings": [str(w.message) for w in caught]}), flush=True)
wd.stop()
"""


def _run(env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    full = {k: v for k, v in os.environ.items()
            if k not in ("WATCHDOG_CORE_DIR", "XDG_STATE_HOME", "WATCHDOG_CORE_DISABLE")}
    full.update(env, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True,
                          text=True, timeout=60, check=True, env=full)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_watchdog_core_dir_takes_the_same_fallback(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    private = shared / f"watchdog-core-{UID}"
    out = _run({"WATCHDOG_CORE_DIR": str(shared), "XDG_STATE_HOME": str(tmp_path / "s")})
    assert out["dir"] == str(private) and out["enabled"] is True
    assert Path(out["dump"]).parent == private
    (warning,) = out["warnings"]
    assert str(shared) in warning and warning.endswith(f"dumps go to {private}")


def test_when_every_folder_is_refused_one_warning_says_no_dumps(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / f"watchdog-core-{UID}").symlink_to(tmp_path)
    not_a_folder = tmp_path / "state-file"
    not_a_folder.write_text("")
    out = _run({"WATCHDOG_CORE_DIR": str(shared), "XDG_STATE_HOME": str(not_a_folder)})
    assert out["dir"] == str(shared) and out["enabled"] is True and out["dump"] is None
    (warning,) = out["warnings"]
    assert warning.startswith("watchdog-core: no dumps will be written: ")
    assert warning.count(";") >= 2  # why each of the three folders was refused


@pytest.mark.parametrize("umask", ["000", "277"])
def test_every_folder_made_is_0700_whatever_the_umask(tmp_path: Path, umask: str) -> None:
    """os.makedirs made the parents 0777 minus the umask: 0777 under umask 000."""
    home = tmp_path / "home"
    home.mkdir()
    out = _run({"HOME": str(home)}, umask)
    used = home / ".local" / "state" / "watchdog-core" / "diagnostics"
    assert out == {"dir": str(used), "enabled": True, "dump": out["dump"], "warnings": []}
    assert Path(out["dump"]).parent == used
    for folder in (home / ".local", home / ".local" / "state",
                   home / ".local" / "state" / "watchdog-core", used):
        assert folder.stat().st_mode & 0o7777 == 0o700, folder
    if umask == "000":  # a umask that takes the owner's bits makes files 0400 (left so)
        assert {p.stat().st_mode & 0o777 for p in used.glob("*.json")} == {0o600}


def test_a_folder_that_already_existed_keeps_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".local").mkdir(parents=True)
    (home / ".local").chmod(0o755)
    out = _run({"HOME": str(home)}, "000")
    assert out["warnings"] == []
    assert (home / ".local").stat().st_mode & 0o7777 == 0o755
    assert (home / ".local" / "state").stat().st_mode & 0o7777 == 0o700
