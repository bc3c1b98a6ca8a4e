"""The schedule with a real watchdog: glances between samples, the kernel's wake-ups
(docs/design.md, "When the watchdog samples")."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from watchdog_core._watchdog import GLANCE_STEP


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
    # Within one glance step of the end: a glance during the growth may take its sample
    # partway (a loaded machine), and a move smaller than the step after it is not
    # another. Without glances the dump said `before`, 96 MiB short.
    grown = before + (96 << 20)
    step = max(GLANCE_STEP, grown // 16)
    assert dump["memory"]["rss"] >= grown - step, (before, dump["memory"])


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


def _samples(shm: str) -> int:
    from watchdog_core import _reader, _shm

    mapping = _shm.open_segment(shm)
    try:
        buf = memoryview(mapping)
        status = _reader.read_status(buf, buf.cast("Q"))
        return status.samples if status else 0
    finally:
        del buf
        mapping.close()


@pytest.mark.cgroup
def test_a_usage_hovering_at_a_threshold_is_not_sampled_at_every_crossing(
        start_host, memory_cgroup) -> None:
    if not (memory_cgroup / "cgroup.event_control").exists():
        pytest.skip("cgroup v2: no usage thresholds")
    host = start_host("--interval", "0.25", cgroup=memory_cgroup)
    info = host.wait_ready()
    # A limit that puts soft 4 MiB above the usage now: 8 MiB taken and given back
    # crosses that threshold twice a cycle, thousands of times in a few seconds.
    usage = int((memory_cgroup / "memory.usage_in_bytes").read_text())
    limit = 2 * (usage + (4 << 20))
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(limit))
    deadline = time.monotonic() + 20
    while json.loads(host.ask("status").split(" ", 1)[1])["heapLimit"] != limit:
        assert time.monotonic() < deadline, "the new limit was never graded"
        time.sleep(0.05)
    time.sleep(0.5)  # the thresholds re-armed at it after that sample
    before = _samples(str(info["shm"]))
    assert host.ask("hover 8 3") == "hovered"
    taken = _samples(str(info["shm"])) - before
    # 12 at the interval, at most 60 at a fifth of it; every crossing sampled would be
    # a thousand.
    assert taken <= 80, taken
    host.send("stop")
    assert host.finish() == 0
