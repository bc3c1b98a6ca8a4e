"""Orphans that cannot be written yet, retried by every new watchdog and every `gc`.

A retry must neither print another session's trouble on every new host's stderr nor
grow the postmortem it finishes; `gc`, run by the user, says what stands in the way.
Real tmpfs mounts, real hosts, real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, segment_exists
from watchdog_core import _reader, _ring, _shm

RECOVERED = "recovered by pid "


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own: it can be made read-only and grown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=700", "tmpfs",
                           str(mount_point)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _gc(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchdog_core", "gc", *argv],
                          capture_output=True, text=True, check=False, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _outcome(gc: subprocess.CompletedProcess[str], shm: str) -> dict[str, object]:
    (found,) = [o for o in json.loads(gc.stdout)["orphans"] if o["segment"] == shm]
    return found  # type: ignore[no-any-return]


def _death_state(shm: str) -> int:
    mapping = _shm.open_segment(shm)
    try:
        with _reader.RingImage(mapping) as image:
            return image.death_state
    finally:
        mapping.close()


def _remount(point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


def test_a_new_watchdog_is_quiet_about_another_sessions_unwritable_orphan(
        start_host, disk: Path, tmp_path: Path) -> None:
    directory = disk / "diag"
    lost = start_host("--session", "orphan-read-only", "--no-restart", "--slots", "16",
                      directory=directory)
    shm = str(lost.wait_ready()["shm"])
    own = tmp_path / "own"
    try:
        lost.kill_both()  # no postmortem: the ring is an orphan
        assert segment_exists(shm) and _death_state(shm) < _ring.DEATH_JUDGED
        _remount(disk, "ro")
        newcomer = start_host("--session", "newcomer", directory=own)
        newcomer.wait_ready()
        # Its own trouble is still said: its folder turned read-only under it.
        subprocess.run(["mount", "--bind", str(own), str(own)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(own)], check=True)
            assert newcomer.ask("dump") == "dumped None"
        finally:
            subprocess.run(["umount", str(own)], check=True)
        newcomer.send("stop")
        assert newcomer.finish() == 0
        # Its scan did try the orphan (the verdict is in the header now), and said nothing.
        assert _death_state(shm) >= _ring.DEATH_JUDGED
        assert segment_exists(shm)
        assert f"cannot write diagnostics to {directory}" not in newcomer.stderr
        assert f"cannot write diagnostics to {own}: " in newcomer.stderr
        # gc, run by the user, says it.
        collected = _gc("--json")
        assert collected.returncode == 1
        assert _outcome(collected, shm)["outcome"] == "kept"
        assert f"cannot write diagnostics to {directory}: Read-only file system" in (
            collected.stderr)
        _remount(disk, "rw")
        assert _outcome(_gc("--json"), shm)["outcome"] == "written"
        assert not segment_exists(shm)
    finally:
        _shm.unlink_segment(shm)


def test_retries_of_a_ring_that_does_not_fit_keep_one_recovery_note(start_host,
                                                                   disk: Path) -> None:
    """The JSON fits, the 2.1 MiB ring image does not: every retry leaves one note, and
    gc says the postmortem is there but its ring image is not."""
    directory = disk / "diag"
    host = start_host("--session", "ring-too-big", directory=directory)
    shm = str(host.wait_ready()["shm"])
    try:
        os.kill(host.pid, signal.SIGKILL)
        host.finish()
        (first,) = host.dumps()
        assert first["collectionComplete"] is False and segment_exists(shm)
        path = str(directory / next(p.name for p in directory.glob("*.json")))
        for _ in range(3):
            retried = _gc("--json")
            assert retried.returncode == 1
            assert _outcome(retried, shm) == {"segment": shm, "postmortem": path,
                                             "outcome": "partial"}
        said = _gc()
        assert said.returncode == 1
        assert "cannot write the postmortem" not in said.stdout
        assert (f"wrote the postmortem of {shm} to {path}, but not yet its ring image "
                "(see the line above); the ring stays in shared memory") in said.stdout
        assert "cannot save the ring image" in said.stderr
        (dump,) = host.dumps()
        evidence = dump["host"]["exit"]["evidence"]  # type: ignore[index]
        assert [e.startswith(RECOVERED) for e in evidence].count(True) == 1, evidence
        assert dump["collectionComplete"] is False
        _remount(disk, "size=8m")
        assert _outcome(_gc("--json"), shm)["outcome"] == "written"
        (done,) = host.dumps()
        evidence = done["host"]["exit"]["evidence"]  # type: ignore[index]
        assert done["collectionComplete"] is True
        assert [e.startswith(RECOVERED) for e in evidence].count(True) == 1, evidence
        assert not segment_exists(shm)
    finally:
        _shm.unlink_segment(shm)
