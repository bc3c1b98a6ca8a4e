"""Levels with hysteresis, growth, risks (docs/pressure.md)."""

from __future__ import annotations

import pytest

from watchdog_core._levels import (
    GrowthEstimator,
    LevelGrader,
    PressureLevel,
    assess_risks,
    default_suggestion,
)


def grade(ratios: list[float]) -> list[str]:
    g = LevelGrader(0.50, 0.65, 0.80)
    return [g.update(r).label for r in ratios]


def test_rising_levels() -> None:
    assert grade([0.1, 0.5, 0.65, 0.8, 0.99]) == ["normal", "soft", "hard", "critical",
                                                  "critical"]


def test_falling_needs_five_points_below_the_threshold() -> None:
    assert grade([0.81, 0.78, 0.76, 0.749, 0.62, 0.601, 0.599]) == [
        "critical", "critical", "critical", "hard", "hard", "hard", "soft"]


def test_a_drop_across_several_levels_at_once() -> None:
    assert grade([0.9, 0.1]) == ["critical", "normal"]
    assert grade([0.9, 0.47]) == ["critical", "soft"]  # 0.47 is within soft's hysteresis


def test_jump_straight_to_critical() -> None:
    assert grade([0.0, 0.85]) == ["normal", "critical"]


def test_growth_slope_and_time_to_limit() -> None:
    g = GrowthEstimator(window=60)
    for t in range(10):
        g.add(float(t), 1000.0 + 100.0 * t)
    assert g.slope() == pytest.approx(100.0)
    assert g.seconds_to_limit(1900.0, 2900.0) == pytest.approx(10.0)
    assert g.seconds_to_limit(1900.0, None) is None


def test_growth_window_forgets_old_points() -> None:
    g = GrowthEstimator(window=4)
    for t in range(10):
        g.add(float(t), 0.0 if t < 5 else 1000.0)  # flat for the last 4 s
    assert g.slope() == 0.0


def test_not_growing_has_no_time_to_limit() -> None:
    g = GrowthEstimator()
    for t in range(5):
        g.add(float(t), 1000.0 - t)
    assert g.seconds_to_limit(1000, 2000) is None


def test_risks() -> None:
    risks = assess_risks(ratio=0.82, level=PressureLevel.CRITICAL, hard=0.65, rss=1000,
                         seconds_to_limit=60.0, session={"estimatedHistoryBytes": 600},
                         fds=2000, fd_limit=1024, threads=300, swap=5, psi_some_avg10=20.0)
    ids = [r.id for r in risks]
    assert ids == ["heap_used_ratio_high", "fast_growth", "large_session_history", "fd_leak",
                   "thread_leak", "swap_in_use", "system_memory_pressure"]
    assert risks[0].severity == "critical" and risks[0].threshold == 0.65


def test_no_risks_when_all_is_well() -> None:
    assert assess_risks(ratio=0.1, level=PressureLevel.NORMAL, hard=0.65, rss=1000,
                        seconds_to_limit=None, session={"estimatedHistoryBytes": 10}) == []


@pytest.mark.parametrize("trigger", ["hard", "critical", "manual", "host-died", "unresponsive",
                                     "recovered"])
@pytest.mark.parametrize("level", ["normal", "soft", "hard", "critical"])
def test_every_trigger_and_level_has_a_suggestion(trigger: str, level: str) -> None:
    assert default_suggestion(level, trigger, "cgroup-v2").strip().endswith(".")


def test_oom_suggestion_names_the_limit() -> None:
    assert "cgroup-v1" in default_suggestion("critical", "host-died", "cgroup-v1", "oom-killed")


def test_a_sustained_leak_is_suspected() -> None:
    from watchdog_core._levels import LEAK_BYTES_PER_HOUR

    risks = assess_risks(ratio=0.2, level=PressureLevel.NORMAL, hard=0.65, rss=1 << 30,
                         seconds_to_limit=None, session={},
                         leak_bytes_per_hour=LEAK_BYTES_PER_HOUR * 1.5)
    assert [r.id for r in risks] == ["memory_leak_suspected"]
    assert assess_risks(ratio=0.2, level=PressureLevel.NORMAL, hard=0.65, rss=1 << 30,
                        seconds_to_limit=None, session={},
                        leak_bytes_per_hour=LEAK_BYTES_PER_HOUR * 0.5) == []


def test_the_history_share_is_configurable() -> None:
    kwargs = {"ratio": 0.2, "level": PressureLevel.NORMAL, "hard": 0.65, "rss": 1000,
                  "seconds_to_limit": None, "session": {"estimatedHistoryBytes": 300}}
    assert [r.id for r in assess_risks(**kwargs)] == ["large_session_history"]  # type: ignore[arg-type]
    assert assess_risks(**kwargs, history_share=0.5) == []  # type: ignore[arg-type]


def test_fd_leak_uses_the_share_of_the_fd_limit() -> None:
    risks = assess_risks(ratio=0.1, level=PressureLevel.NORMAL, hard=0.65, rss=1,
                         seconds_to_limit=None, session={}, fds=900, fd_limit=1024)
    assert [r.id for r in risks] == ["fd_leak"] and risks[0].threshold == 0.8 * 1024


def test_growth_span() -> None:
    g = GrowthEstimator(window=600, spacing=10)
    for t in range(0, 700, 5):
        g.add(float(t), float(t))
    assert 580 <= g.span() <= 600


def test_a_fast_start_has_a_slope_and_a_long_run_stays_small() -> None:
    g = GrowthEstimator(window=60, spacing=0.5)
    for i in range(6):  # six samples 50 ms apart, 10 MB each
        g.add(i * 0.05, i * 10e6)
    assert g.slope() == pytest.approx(200e6)
    for i in range(6, 6000):  # 5 minutes at 50 ms
        g.add(i * 0.05, 0.0)
    assert len(g._points) <= 60 / 0.5 + GrowthEstimator.EARLY_POINTS + 1


@pytest.mark.parametrize("estimate", [float("nan"), float("inf")])
def test_a_non_finite_history_estimate_is_no_risk(estimate: float) -> None:
    risks = assess_risks(ratio=0.1, level=PressureLevel.NORMAL, hard=0.65, rss=1000,
                         seconds_to_limit=None, session={"estimatedHistoryBytes": estimate})
    assert [r.id for r in risks] == []
