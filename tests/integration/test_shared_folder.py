"""A diagnostics folder others control, or one no file can be made in: refused, yet
the postmortem is kept, and ``ls`` and ``gc`` find it.

The fallback chain (docs/design.md, "Where files go"): the folder asked for; a private
``watchdog-core-{uid}`` folder inside it; the default state folder; only then no dumps.
Real folders, real read-only mounts, real hosts, real SIGKILLs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, segment_exists
from watchdog_core import _shm

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


def _run(env: dict[str, str], *args: str,
         prefix: list[str] | None = None) -> dict:  # type: ignore[type-arg]
    full = {k: v for k, v in os.environ.items()
            if k not in ("WATCHDOG_CORE_DIR", "XDG_STATE_HOME", "WATCHDOG_CORE_DISABLE")}
    full.update(env, PYTHONPATH=str(ROOT))
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", SCRIPT, *args],
                          capture_output=True, text=True, timeout=60, check=True, env=full,
                          cwd="/")
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


# A folder we own but cannot write in ----------------------------------------------------


@contextlib.contextmanager
def _read_only(folder: Path, how: str) -> Iterator[None]:
    """``folder`` as a read-only mount of our own: a fresh tmpfs, or a bind mount of an
    empty 0700 folder; unmounted on the way out."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    folder.mkdir(mode=0o700)
    if how == "tmpfs":
        steps = [["mount", "-t", "tmpfs", "-o", "ro,mode=700", "tmpfs", str(folder)]]
    else:
        steps = [["mount", "--bind", str(folder), str(folder)],
                 ["mount", "-o", "remount,bind,ro", str(folder)]]
    mounted = False
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot mount here: {done.stderr.strip()}")
            mounted = True
        yield
    finally:
        if mounted:  # lazily: a host that failed the test may still hold it
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "WATCHDOG_CORE_DIR"}
    full.update(env or {}, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "watchdog_core", *argv], capture_output=True,
                          text=True, timeout=120, check=False, env=full)


@pytest.mark.parametrize("how", ["tmpfs", "bind"])
def test_a_read_only_folder_gives_way_to_the_state_folder(start_host, tmp_path: Path,
                                                          how: str) -> None:
    """Ours and 0700, so safe, but nothing can be created in it: the postmortem goes to
    the state folder instead of being lost with the ring left in /dev/shm."""
    read_only = tmp_path / "ro"
    state = tmp_path / "state"
    used = state / "watchdog-core" / "diagnostics"
    with _read_only(read_only, how):
        host = start_host("--session", "read-only", directory=read_only,
                          env={"XDG_STATE_HOME": str(state)})
        shm = str(host.wait_ready()["shm"])
        try:
            answer = host.ask("dump")
            assert Path(answer[len("dumped "):]).parent == used, host.stderr
            _kill_and_finish(host)
        finally:
            _shm.unlink_segment(shm)  # left behind only by a failure
        assert _postmortem(used)["host"]["exit"]["signal"] == "SIGKILL"
        (warning,) = _warnings(host.stderr)
        assert f"{read_only} is read-only" in warning
        assert f"{read_only / f'watchdog-core-{UID}'}" in warning  # tried, and refused too
        assert warning.endswith(f"dumps go to {used}")
        assert "cannot write diagnostics" not in host.stderr
        # ls follows the chain there, as the session did.
        listed = json.loads(_cli("ls", "--json", "--dir", str(read_only),
                                 env={"XDG_STATE_HOME": str(state)}).stdout)
        # (ls also lists every live session's own folder on the machine: not ours.)
        ours = {str(read_only), str(used)}
        assert {d["directory"] for d in listed["dumps"]} & ours == {str(used)}
        assert listed["directories"][:2] == [str(read_only), str(used)]


NOBODY = 65534


def test_a_folder_we_may_not_write_gives_way() -> None:
    """Mode 0500: safe, ours, and no file can be made in it. Root writes there anyway,
    so as root the session runs as nobody (setpriv), in a folder nobody owns."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv(1) to run the session as nobody")
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    # Not under tmp_path: its parents are root's 0700, closed to nobody.
    home = Path(tempfile.mkdtemp(prefix="wdc-not-writable-"))
    try:
        home.chmod(0o755)
        locked, state = home / "locked", home / "state"
        locked.mkdir(mode=0o500)
        state.mkdir(mode=0o700)
        if prefix:
            for folder in (home, locked, state):
                os.chown(folder, NOBODY, NOBODY)
        out = _run({"WATCHDOG_CORE_DIR": str(locked), "XDG_STATE_HOME": str(state)},
                   prefix=prefix)
        used = state / "watchdog-core" / "diagnostics"
        assert out["dir"] == str(used)
        # The first warning is the chain's; as nobody, a watchdog may not be startable
        # here (root's interpreter), which a second warning would say.
        warning = out["warnings"][0]
        assert f"{locked} is not writable" in warning
        assert warning.endswith(f"dumps go to {used}")
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(home)


# ls and gc follow the same chain ----------------------------------------------------------


def test_ls_and_gc_look_where_the_fallback_put_the_dumps(start_host, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    state = tmp_path / "state"
    host = start_host("--session", "ls-shared", directory=shared,
                      env={"XDG_STATE_HOME": str(state)})
    host.wait_ready()
    manual = Path(host.ask("dump")[len("dumped "):])
    _kill_and_finish(host)
    private = shared / f"watchdog-core-{UID}"
    postmortem = next(p.name for p in private.glob("*.json") if p != manual)
    env = {"XDG_STATE_HOME": str(state)}
    for argv, extra in ((["--dir", str(shared)], {}), ([], {"WATCHDOG_CORE_DIR": str(shared)})):
        listed = _cli("ls", "--json", *argv, env={**env, **extra})
        assert listed.returncode in (0, 1), listed.stderr
        doc = json.loads(listed.stdout)
        assert doc["directory"] == str(shared) and str(private) in doc["directories"]
        found = {d["file"]: d["directory"] for d in doc["dumps"]}
        assert found[postmortem] == found[manual.name] == str(private)
        text = _cli("ls", *argv, env={**env, **extra}).stdout
        assert f"recent dumps in {private}:\n  {manual.name}  manual" in text
    # Retention runs where the dumps are: the older set goes, the postmortem stays.
    collected = _cli("gc", "--max-files", "1", "--json",
                     env={**env, "WATCHDOG_CORE_DIR": str(shared)})
    doc = json.loads(collected.stdout)
    assert doc["error"] is None and doc["directory"] == str(private), collected.stdout
    assert manual.name in doc["pruned"] and not manual.exists()
    assert (private / postmortem).exists()
    assert "refusing to write there" not in collected.stdout
    assert not state.exists()  # the private subfolder was accepted: nothing further


def test_ls_and_gc_dry_run_make_no_folder(tmp_path: Path) -> None:
    """Resolving is read-only: a refused folder with no private subfolder yet is listed
    as it is, and neither ls nor a dry run makes the subfolder (or the state folder)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    listed = _cli("ls", "--json", "--dir", str(shared), env=env)
    assert listed.returncode in (0, 1), listed.stderr
    assert json.loads(listed.stdout)["directories"][0] == str(shared)
    dry = _cli("gc", "--dry-run", "--json", "--dir", str(shared), env=env)
    assert json.loads(dry.stdout)["error"] is None, dry.stdout
    assert list(shared.iterdir()) == [] and not state.exists()
