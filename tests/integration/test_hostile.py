"""Hostile and broken environments: nothing followed, nothing lost, no crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

START = """
import sys, warnings
warnings.simplefilter("always")
from watchdog_core import start_watchdog
with warnings.catch_warnings(record=True) as caught:
    wd = start_watchdog(diagnostics_dir=sys.argv[1])
print(len(caught), caught[0].message if caught else "", flush=True)
wd.record(a=1)
wd.dump()
sys.stdin.readline()
"""


def run_start(directory: Path) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", START, str(directory)], input="\n",
                          capture_output=True, text=True, timeout=60, check=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return proc.stdout, proc.stderr


@pytest.mark.parametrize("kind", ["symlink", "world-writable", "foreign-owner"])
def test_an_unsafe_directory_is_refused_with_one_warning(tmp_path: Path, kind: str,
                                                         monkeypatch) -> None:
    # Refused, never written into; the dumps go to a private subfolder inside it (or,
    # for a symlink, which may lead anywhere, to the state folder), as the one warning
    # says. tests/integration/test_shared_folder.py follows a postmortem there.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    target = tmp_path / "diag"
    if kind == "symlink":
        target.symlink_to(real)
    elif kind == "world-writable":
        target.mkdir()
        target.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("making a directory owned by another user needs root")
        target.mkdir(mode=0o700)
        os.chown(target, 65534, 65534)
    out, _ = run_start(target)
    count, message = out.split(" ", 1)
    assert count == "1", out
    assert "dumps go to" in message
    assert list(real.iterdir()) == []  # nothing written through the link
    if kind == "world-writable":  # ours to make a subfolder in; nothing else
        assert [p.name for p in target.iterdir()] == [f"watchdog-core-{os.geteuid()}"]
    elif kind == "foreign-owner":  # root may write there, and still only the subfolder
        assert [p.name for p in target.iterdir()] in ([], [f"watchdog-core-{os.geteuid()}"])


def test_a_planted_symlink_at_a_crash_file_name_is_not_followed(tmp_path: Path) -> None:
    """The host's private files are created with O_EXCL | O_NOFOLLOW."""
    from watchdog_core._safedir import create_private_file, open_dir

    directory = tmp_path / "diag"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    dfd = open_dir(str(directory))
    (directory / ".crash-s-1.txt").symlink_to(victim)
    fd = create_private_file(dfd, ".crash-s-1.txt")  # replaces the link, never writes through
    os.write(fd, b"crash")
    os.close(fd)
    os.close(dfd)
    assert victim.read_text() == "keep"
    assert not (directory / ".crash-s-1.txt").is_symlink()


SECRET_ARGV = ["--token=tok-SEKRET-1", "--password", "pw-SEKRET-2",
               "OPENAI_API_KEY=sk-SEKRETSEKRETSEKRETSEKRET3"]


def test_no_secret_or_private_content_reaches_any_file(start_host, diag_dir: Path) -> None:
    """argv and environment hold secrets, memory holds private text: none of it lands."""
    env = {"MY_SECRET_TOKEN": "env-SEKRET-4", "DATABASE_URL": "postgres://u:env-SEKRET-5@h/db",
           "HOST_PRIVATE_HISTORY": "user: MARKER-PRIVATE-HISTORY-6 my bank password is..."}
    host = start_host("--stats", json.dumps({"historyEntries": 3}), "--label", "tool:edit",
                      *SECRET_ARGV, env=env)
    info = host.wait_ready()
    host.send("dump")
    assert host.proc.stdout is not None
    host.proc.stdout.readline()
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    files = [p for p in diag_dir.iterdir() if p.is_file()]
    assert any(p.suffix == ".ring" for p in files) and len(files) >= 3
    for path in files:
        content = path.read_bytes()
        for needle in (b"SEKRET", b"MARKER-PRIVATE"):
            assert needle not in content, (path.name, needle)
    dumps = host.dumps()
    argv = dumps[-1]["host"]["argv"]
    assert "--token=<redacted>" in argv and "OPENAI_API_KEY=<redacted>" in argv


def test_a_full_dev_shm_gives_a_disabled_handle_not_a_sigbus(tmp_path: Path) -> None:
    """A private 64 KiB /dev/shm in a mount namespace: the ring cannot be reserved."""
    if os.geteuid() != 0 or not Path("/usr/bin/unshare").exists():
        pytest.skip("needs root and unshare(1) to mount a private /dev/shm")
    code = ("import warnings, sys; warnings.simplefilter('always');\n"
            "from watchdog_core import start_watchdog\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    wd = start_watchdog(diagnostics_dir=sys.argv[1])\n"
            "wd.record(a=1); wd.mark('still fine')\n"
            "print(wd.enabled, len(w), w[0].message if w else '')\n")
    script = (f'mount -t tmpfs -o size=64k tmpfs /dev/shm && exec "{sys.executable}" -c "$0" '
              f'"{tmp_path / "d"}"')
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           code], check=False, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0 and "mount" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    enabled, count, message = proc.stdout.strip().split(" ", 2)
    assert (enabled, count) == ("False", "1")
    assert "cannot create shared memory segment" in message


@pytest.fixture
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs of our own: a disk that can be filled and made read-only."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _ask_dump(host) -> str:  # type: ignore[no-untyped-def]
    host.send("dump")
    return str(host.proc.stdout.readline().strip())


def test_a_full_disk_is_reported_once_and_the_next_dump_succeeds(start_host, small_tmpfs) -> None:
    directory = small_tmpfs / "diag"
    host = start_host("--stats", json.dumps({"turns": 1}), directory=directory)
    host.wait_ready()
    filler = _fill(small_tmpfs)
    assert _ask_dump(host) == "dumped None"
    assert _ask_dump(host) == "dumped None"
    assert [p.name for p in directory.iterdir() if not p.name.startswith(".crash")
            and not p.name.startswith(".stacks")] == []  # no partial file, no temp file
    filler.unlink()
    line = _ask_dump(host)
    assert line.startswith("dumped ") and line.endswith(".json")
    assert json.loads(Path(line.split(" ", 1)[1]).read_text())["collectionComplete"] is True
    host.send("stop")
    assert host.finish() == 0
    assert host.stderr.count("No space left on device") == 1, host.stderr


def test_a_read_only_directory_is_survived(start_host, small_tmpfs) -> None:
    directory = small_tmpfs / "diag"
    host = start_host(directory=directory)
    host.wait_ready()
    # A read-only bind mount over the directory (a remount of the whole tmpfs is refused
    # while the host holds its crash file open for writing).
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
    try:
        assert _ask_dump(host) == "dumped None"
        assert _ask_dump(host) == "dumped None"
        host.send("record " + json.dumps({"turns": 2}))  # the host is unaffected
        assert host.proc.stdout is not None
        assert host.proc.stdout.readline().strip() == "recorded"
    finally:
        subprocess.run(["umount", str(directory)], check=True)
    assert _ask_dump(host).endswith(".json")
    host.send("stop")
    assert host.finish() == 0
    assert host.stderr.count("Read-only file system") == 1, host.stderr


def test_a_ring_the_host_scribbled_over_still_gets_a_postmortem(start_host, diag_dir) -> None:
    host = start_host("--stats", json.dumps({"turns": 5}), "--label", "before-the-bug")
    info = host.wait_ready()
    assert host.ask("corrupt") == "corrupted"
    os.kill(int(info["pid"]), signal.SIGKILL)
    host.finish()
    (dump,) = host.dumps()
    assert dump["trigger"] == "host-died"
    assert "bad session id" in dump["ring"]["corrupt"]
    assert dump["sessionId"] != "../../"  # names come from the header as it was at start
    assert all(".." not in p.name for p in diag_dir.iterdir())
    read = subprocess.run([sys.executable, "-m", "watchdog_core", "read-ring",
                           str(diag_dir / dump["ring"]["file"])], capture_output=True, text=True,
                          check=False, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert read.returncode == 2 and read.stderr.count("\n") == 1  # the saved image is corrupt


def _fill(mount_point: Path) -> Path:
    filler = mount_point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # to the last block
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _gc() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchdog_core", "gc", "--json"],
                          capture_output=True, text=True, check=False, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_a_disk_full_at_death_keeps_the_evidence_until_gc_writes_it(start_host,
                                                                     small_tmpfs) -> None:
    """Nothing fits at the moment of death: the segment and the crash file stay, with
    the watchdog's verdict in the ring header; gc writes the postmortem later."""
    directory = small_tmpfs / "diag"
    host = start_host("--slots", "16", "--stats", json.dumps({"turns": 4}), "--label",
                      "doomed", directory=directory)
    info = host.wait_ready()
    filler = _fill(small_tmpfs)
    os.kill(host.pid, signal.SIGKILL)
    host.finish()
    assert "stays in shared memory" in host.stderr
    from tests.conftest import segment_exists

    assert segment_exists(str(info["shm"]))
    assert [p.name for p in directory.iterdir() if p.name.startswith(".crash-")]
    assert not list(directory.glob("memory-*"))
    still_full = _gc()  # says so, keeps everything, exits 1
    assert still_full.returncode == 1, still_full.stderr
    assert {o["segment"]: o["outcome"] for o in json.loads(still_full.stdout)["orphans"]}[
        str(info["shm"])] == "kept"
    assert segment_exists(str(info["shm"]))
    filler.unlink()
    done = _gc()
    assert done.returncode == 0, done.stderr
    orphans = {o["segment"]: o["postmortem"] for o in json.loads(done.stdout)["orphans"]}
    path = Path(orphans[str(info["shm"])])
    dump = json.loads(path.read_text())
    assert dump["trigger"] == "recovered" and dump["collectionComplete"] is True
    exit_ = dump["host"]["exit"]
    # The watchdog's own verdict, read from the ring: exact, not a guess.
    assert (exit_["kind"], exit_["signal"], exit_["confidence"]) == ("killed", "SIGKILL",
                                                                     "certain")
    assert any("verdict written into the ring" in e for e in exit_["evidence"])
    assert dump["session"] == {"turns": 4} and dump["lastActivity"] == "doomed"
    assert (directory / dump["ring"]["file"]).exists()
    assert not segment_exists(str(info["shm"]))
    assert not [p for p in directory.iterdir() if p.name.startswith(".crash-")]


def test_a_postmortem_whose_ring_did_not_fit_is_completed_later(start_host,
                                                                small_tmpfs) -> None:
    """The JSON fits but the 2.1 MiB ring image does not: the first phase stays on disk
    and the segment with it; once there is room, gc finishes that same file."""
    directory = small_tmpfs / "diag"
    host = start_host("--stats", json.dumps({"turns": 5}), directory=directory)
    info = host.wait_ready()
    os.kill(host.pid, signal.SIGKILL)
    host.finish()
    (first,) = host.dumps()
    assert first["trigger"] == "host-died" and first["collectionComplete"] is False
    from tests.conftest import segment_exists

    assert segment_exists(str(info["shm"]))
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_tmpfs)], check=True)
    done = _gc()
    assert done.returncode == 0, done.stderr
    (dump,) = host.dumps()  # the same file, completed: no second postmortem
    assert dump["timestamp"] == first["timestamp"]
    assert dump["collectionComplete"] is True and dump["trigger"] == "host-died"
    assert (directory / dump["ring"]["file"]).exists()
    assert any(e.startswith("recovered by pid") for e in dump["host"]["exit"]["evidence"])
    assert (dump["host"]["exit"]["kind"], dump["host"]["exit"]["confidence"]) == ("killed",
                                                                                  "certain")
    assert not segment_exists(str(info["shm"]))


def test_an_exception_raised_on_a_full_disk_says_its_frames_were_lost(start_host,
                                                                       small_tmpfs) -> None:
    """The frames of an uncaught exception go to a file beside the dumps as the host
    dies: on a full disk they cannot, and the postmortem (written by gc once there is
    room) says so instead of showing an empty list as if there were none."""
    directory = small_tmpfs / "diag"
    host = start_host("--slots", "16", directory=directory)
    info = host.wait_ready()
    filler = _fill(small_tmpfs)
    host.send("raise-deep")
    assert host.finish() == 1
    filler.unlink()
    done = _gc()
    assert done.returncode == 0, done.stderr
    orphans = {o["segment"]: o["postmortem"] for o in json.loads(done.stdout)["orphans"]}
    exit_ = json.loads(Path(orphans[str(info["shm"])]).read_text())["host"]["exit"]
    assert (exit_["kind"], exit_["exitCode"], exit_["exception"]) == ("exited", 1,
                                                                      "JSONDecodeError")
    assert exit_["frames"] == []
    assert any("frames were not saved" in e for e in exit_["evidence"]), exit_["evidence"]
