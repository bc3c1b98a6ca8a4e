"""The schedule with a real watchdog: glances between samples, the kernel's wake-ups
(docs/design.md, "When the watchdog samples")."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest


def test_a_far_host_that_grows_is_remembered_as_it_grew(start_host, diag_dir) -> None:
    # Far from any limit the next full sample may be 2 s away; the glance at the interval
    # sees the RSS move and samples at once, so the postmortem is not of the host as it
    # was a second or two before it died.
    host = start_host("--interval", "0.25")
    host.wait_ready()  # just after the first sample: the next ones 2 s apart, far and flat
    time.sleep(2.9)
    before = json.loads(host.ask("status").split(" ", 1)[1])["rss"]
    assert host.ask("grow 96") == "grown"
    time.sleep(0.6)  # two glances, and no full sample due before 4 s
    os.kill(host.pid, signal.SIGKILL)
    host.finish()
    [dump] = host.dumps()
    assert dump["memory"]["rss"] >= before + (96 << 20), (before, dump["memory"])


def _eventfds(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if "eventfd" in os.readlink(fd))


@pytest.mark.cgroup
def test_a_host_in_a_memory_cgroup_arms_its_usage_thresholds(start_host,
                                                              memory_cgroup) -> None:
    if not (memory_cgroup / "cgroup.event_control").exists():
        pytest.skip("cgroup v2: no usage thresholds (memory.events wakes instead)")
    host = start_host("--interval", "1.0", cgroup=memory_cgroup)
    info = host.wait_ready()
    watchdog = int(info["watchdog_pid"])
    deadline = time.monotonic() + 20
    while _eventfds(watchdog) == 0:  # armed after the first sample
        assert time.monotonic() < deadline, "no usage threshold armed"
        time.sleep(0.05)
    # Straight past critical (160 MB of 200 MB) in one step, between two samples a
    # second apart: the critical dump is still written, from the threshold's wake-up
    # or the next sample, before the host is stopped.
    assert host.ask("grow 170") == "grown"
    deadline = time.monotonic() + 20
    while not any(d["trigger"] == "critical" for d in host.dumps()):
        assert time.monotonic() < deadline, "no critical dump"
        time.sleep(0.05)
    host.send("stop")
    assert host.finish() == 0
