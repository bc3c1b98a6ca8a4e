"""When the watchdog samples next (docs/design.md, "When the watchdog samples")."""

from __future__ import annotations

import pytest

from watchdog_core._grading import BURST, MAX_DELAY, Reading, sampling_delay
from watchdog_core._levels import PressureLevel
from watchdog_core._limits import EffectiveLimit, LimitPair
from watchdog_core._ring import RingConfig
from watchdog_core._sampling import HostSample

MiB, GiB = 1 << 20, 1 << 30
CONFIG = RingConfig(0.50, 0.65, 0.80, None, 30.0, 3, None, None, False)


def reading(*pairs: tuple[str, int, int], growth: float = 0.0,
            level: PressureLevel = PressureLevel.NORMAL) -> Reading:
    """(source, usage, limit) pairs, as the grading would give them."""
    limits = [LimitPair(source, usage, limit) for source, usage, limit in pairs]
    return Reading(host=HostSample(), effective=EffectiveLimit(limits), level=level,
                   growth=growth, seconds_to_limit=None, system_available=None, psi={})


def test_above_soft_is_sampled_at_the_interval() -> None:
    r = reading(("cgroup-v1", 110 * MiB, 200 * MiB), level=PressureLevel.SOFT)
    assert sampling_delay(r, CONFIG, 0.25) == 0.25


def test_far_and_flat_waits_as_long_as_a_burst_takes_to_reach_soft() -> None:
    # 15 MB into a 200 MB cgroup: 85 MiB to soft, at 300 MiB/s.
    r = reading(("cgroup-v1", 15 * MiB, 200 * MiB))
    assert sampling_delay(r, CONFIG, 0.25) == pytest.approx(85 * MiB / BURST)
    # 1 GiB of 24 GiB of RAM: far more than 2 s away.
    assert sampling_delay(reading(("ram", GiB, 24 * GiB)), CONFIG, 0.25) == MAX_DELAY


def test_never_shorter_than_the_interval() -> None:
    r = reading(("configured", 99 * MiB, 200 * MiB))  # 1 MiB from soft
    assert sampling_delay(r, CONFIG, 0.25) == 0.25


def test_growth_that_reaches_hard_within_ten_seconds_keeps_the_interval() -> None:
    # 1 GiB of 24 GiB, growing 1.5 GiB/s: hard (15.6 GiB) within 10 s.
    r = reading(("ram", GiB, 24 * GiB), growth=1.5 * GiB)
    assert sampling_delay(r, CONFIG, 0.25) == 0.25
    slow = reading(("ram", GiB, 24 * GiB), growth=1.0 * GiB)  # 14.6 s to hard
    assert sampling_delay(slow, CONFIG, 0.25) == MAX_DELAY


def test_a_growth_faster_than_the_burst_shortens_the_delay() -> None:
    r = reading(("ram", GiB, 24 * GiB), growth=3 * GiB)  # hard 3.9 s away at this rate
    assert sampling_delay(r, CONFIG, 0.25) == 0.25
    r = reading(("cgroup-v1", 0, 1000 * GiB), growth=600 * MiB)  # far: 850 s to soft
    assert sampling_delay(r, CONFIG, 0.25) == MAX_DELAY


def test_the_limit_with_the_least_room_in_bytes_decides_not_the_highest_ratio() -> None:
    # RAM at 45 % has 2.6 GiB to soft; the cgroup at 40 % has 20 MiB.
    r = reading(("ram", int(0.45 * 24 * GiB), 24 * GiB), ("cgroup-v1", 80 * MiB, 200 * MiB))
    assert r.effective.source == "ram"
    assert sampling_delay(r, CONFIG, 0.05) == pytest.approx(20 * MiB / BURST)


def test_a_long_interval_is_kept_and_no_limit_waits_the_longest() -> None:
    assert sampling_delay(reading(("ram", GiB, 24 * GiB)), CONFIG, 5.0) == 5.0
    assert sampling_delay(reading(), CONFIG, 0.25) == MAX_DELAY
