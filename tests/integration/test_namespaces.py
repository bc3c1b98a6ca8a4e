"""Rings of hosts in other pid namespaces sharing /dev/shm are never touched.

Docker's ``--ipc=host`` (which PyTorch images recommend), a pod's shared memory
volume and ``hostIPC`` put hosts whose pids mean nothing to each other into one
``/dev/shm``. Liveness comes from the segments' locks, so a new session's recovery
never judges a live ring of another namespace an orphan.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REAPER, segment_exists


def _namespaces_possible() -> str | None:
    if os.geteuid() != 0:
        return "creating pid namespaces needs root"
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"unshare --pid does not work here: {done.stderr.strip()}"
    return None


_WHY_NOT = _namespaces_possible()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")

# The namespace's init is an init such as `docker run --init` gives (the reaper, which
# reaps orphans too as pid 1): the host is its child, pid 2 in both namespaces, and its
# death does not end the namespace before the watchdog is done. --kill-child ends the
# namespace with the test.
NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
             sys.executable, str(REAPER)]


def test_two_namespaces_sharing_dev_shm_leave_each_others_rings_alone(start_host,
                                                                     tmp_path) -> None:
    first = start_host("--session", "twin", "--stats", json.dumps({"turns": 1}),
                       "--label", "first", prefix=NAMESPACE, directory=tmp_path / "a")
    a = first.wait_ready()
    second = start_host("--session", "twin", "--stats", json.dumps({"turns": 2}),
                        prefix=NAMESPACE, directory=tmp_path / "b")
    b = second.wait_ready()
    # Same pid in each namespace, same session id: the names must still differ.
    assert a["pid"] == b["pid"] and a["shm"] and b["shm"], (a, b)
    assert a["shm"] != b["shm"]
    # A dump answered after the second watchdog's first loop: its look for orphans,
    # which runs once after its first sample, is over.
    assert second.ask("dump").endswith(".json")
    assert segment_exists(str(a["shm"])) and segment_exists(str(b["shm"]))
    assert [d["trigger"] for d in first.dumps()] == []
    first.send("kill")
    first.finish()
    (dump,) = first.dumps()
    assert dump["trigger"] == "host-died"  # by its own watchdog, never "recovered"
    exit_ = dump["host"]["exit"]
    assert (exit_["kind"], exit_["signal"], exit_["confidence"]) == ("killed", "SIGKILL",
                                                                     "certain")
    assert dump["session"] == {"turns": 1} and dump["lastActivity"] == "first"
    assert segment_exists(str(b["shm"]))
    second.send("stop")
    assert second.finish() == 0
    assert [d["trigger"] for d in second.dumps()] == ["manual"]
    assert not segment_exists(str(a["shm"])) and not segment_exists(str(b["shm"]))
