"""Pressure levels, hysteresis, growth rate and risks (docs/pressure.md).

Pure logic over numbers: no psutil, no I/O, so every rule here is unit-tested
with plain values. The risks and their thresholds are documented in docs/diagnostics.md.
"""

from __future__ import annotations

import enum
import math
from collections import deque

HYSTERESIS = 0.05
GROWTH_WINDOW = 60.0  # seconds of RSS history behind growthBytesPerSecond
FAST_GROWTH_SECONDS = 300.0
LARGE_HISTORY_SHARE = 0.25  # estimatedHistoryBytes above this share of RSS is a risk
FD_LEAK_SHARE, FD_LEAK_COUNT = 0.80, 1000
THREAD_LEAK_COUNT = 256
LEAK_WINDOW = 600.0  # seconds of sustained growth before a leak is suspected
LEAK_BYTES_PER_HOUR = 100 * 1024 * 1024


class PressureLevel(enum.IntEnum):
    """How close the host is to the limit it will die of. Ordered: compare with <, >."""

    NORMAL = 0
    SOFT = 1
    HARD = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        """The lower-case name used in dumps and the ring: ``"hard"``."""
        return self.name.lower()

    @classmethod
    def from_name(cls, name: str) -> PressureLevel:
        return cls[name.upper()]


class LevelGrader:
    """Turns a ratio into a level; falling back needs the ratio 0.05 below the threshold.

    >>> g = LevelGrader(0.5, 0.65, 0.8)
    >>> [g.update(r).label for r in (0.66, 0.62, 0.59, 0.81)]
    ['hard', 'hard', 'soft', 'critical']
    """

    def __init__(self, soft: float, hard: float, critical: float,
                 hysteresis: float = HYSTERESIS) -> None:
        self.thresholds = (soft, hard, critical)
        self.hysteresis = hysteresis
        self.level = PressureLevel.NORMAL

    def update(self, ratio: float) -> PressureLevel:
        raw = PressureLevel.NORMAL
        for level, threshold in zip(
            (PressureLevel.SOFT, PressureLevel.HARD, PressureLevel.CRITICAL), self.thresholds,
            strict=True,
        ):
            if ratio >= threshold:
                raw = level
        if raw >= self.level:
            self.level = raw
            return raw
        # Going down: stay at a level until the ratio is clearly below its threshold.
        level = self.level
        while level > raw and ratio < self.thresholds[level - 1] - self.hysteresis:
            level = PressureLevel(level - 1)
        self.level = level
        return level


class GrowthEstimator:
    """Least-squares slope of RSS over the last ``window`` seconds.

    Once it holds ``EARLY_POINTS`` points, a point closer than ``spacing`` seconds to
    the one before replaces the newest instead of adding one, so the fit costs the
    same (at most window/spacing + EARLY_POINTS points) at any sampling interval,
    while a host that grows fast in its first second still gets a slope. The slope is
    computed once per change.
    """

    EARLY_POINTS = 16

    def __init__(self, window: float = GROWTH_WINDOW, spacing: float = 0.5) -> None:
        self.window = window
        self.spacing = spacing
        self._points: deque[tuple[float, float]] = deque()
        self._slope: float | None = None

    def add(self, t: float, rss: float) -> None:
        points = self._points
        if len(points) >= self.EARLY_POINTS and t - points[-2][0] < self.spacing:
            points[-1] = (t, rss)
        else:
            points.append((t, rss))
        while points and points[0][0] < t - self.window:
            points.popleft()
        self._slope = None

    def span(self) -> float:
        """Seconds between the oldest and the newest point."""
        points = self._points
        return points[-1][0] - points[0][0] if len(points) > 1 else 0.0

    def slope(self) -> float:
        """Bytes per second; 0.0 with fewer than 3 points or no time spread."""
        if self._slope is None:
            self._slope = self._fit()
        return self._slope

    def _fit(self) -> float:
        points = self._points
        n = len(points)
        if n < 3:
            return 0.0
        mean_t = sum(t for t, _ in points) / n
        mean_v = sum(v for _, v in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if var <= 0:
            return 0.0
        return sum((t - mean_t) * (v - mean_v) for t, v in points) / var

    def seconds_to_limit(self, usage: float, limit: float | None) -> float | None:
        """Seconds until ``usage`` reaches ``limit`` at the current slope; None if not
        growing or no limit."""
        slope = self.slope()
        if limit is None or slope <= 0:
            return None
        return max(0.0, (limit - usage) / slope)


class Risk:
    __slots__ = ("id", "severity", "message", "value", "threshold")

    def __init__(self, id: str, severity: str, message: str, value: float,
                 threshold: float) -> None:
        self.id, self.severity, self.message = id, severity, message
        self.value, self.threshold = value, threshold

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "severity": self.severity, "message": self.message,
                "value": self.value, "threshold": self.threshold}


def assess_risks(
    *,
    ratio: float,
    level: PressureLevel,
    hard: float,
    rss: int,
    seconds_to_limit: float | None,
    session: dict[str, int | float],
    fds: int | None = None,
    fd_limit: int | None = None,
    threads: int | None = None,
    swap: int | None = None,
    psi_some_avg10: float | None = None,
    history_share: float = LARGE_HISTORY_SHARE,
    leak_bytes_per_hour: float | None = None,
) -> list[Risk]:
    """The risks a dump lists, each with the figure and the threshold it crossed."""
    risks: list[Risk] = []
    severity = level.label if level >= PressureLevel.HARD else "warning"
    if ratio >= hard:
        risks.append(Risk("heap_used_ratio_high", severity,
                          f"memory use is {ratio:.0%} of the effective limit", ratio, hard))
    if seconds_to_limit is not None and seconds_to_limit < FAST_GROWTH_SECONDS:
        risks.append(Risk("fast_growth", severity,
                          f"at the current growth rate the limit is {seconds_to_limit:.0f} s away",
                          seconds_to_limit, FAST_GROWTH_SECONDS))
    history = session.get("estimatedHistoryBytes")
    # A NaN or infinite estimate says nothing about the history's size: no risk from it.
    if (isinstance(history, (int, float)) and math.isfinite(history) and rss > 0
            and history > history_share * rss):
        risks.append(Risk("large_session_history", "warning",
                          f"the session history is {history / rss:.0%} of resident memory",
                          history / rss, history_share))
    if leak_bytes_per_hour is not None and leak_bytes_per_hour > LEAK_BYTES_PER_HOUR:
        risks.append(Risk("memory_leak_suspected", "warning",
                          f"RSS grew {leak_bytes_per_hour / 1048576:.0f} MiB/h for "
                          f"{LEAK_WINDOW / 60:.0f} minutes", leak_bytes_per_hour,
                          LEAK_BYTES_PER_HOUR))
    if fds is not None:
        limit = FD_LEAK_COUNT if not fd_limit else min(FD_LEAK_COUNT, FD_LEAK_SHARE * fd_limit)
        if fds > limit:
            risks.append(Risk("fd_leak", "warning", f"{fds} open file descriptors", fds, limit))
    if threads is not None and threads > THREAD_LEAK_COUNT:
        risks.append(Risk("thread_leak", "warning", f"{threads} threads", threads,
                          THREAD_LEAK_COUNT))
    if swap:
        risks.append(Risk("swap_in_use", "warning", f"{swap} bytes of the host are swapped out",
                          swap, 0))
    if psi_some_avg10 is not None and psi_some_avg10 >= 10.0:
        risks.append(Risk("system_memory_pressure", "warning",
                          f"tasks stalled on memory {psi_some_avg10:.1f}% of the last 10 s",
                          psi_some_avg10, 10.0))
    return risks


DEFAULT_SUGGESTIONS = {
    "normal": "Memory use is within limits; this dump is for reference.",
    "soft": "Memory use is rising; consider trimming caches or session history soon.",
    "hard": "Memory use is high: compact or truncate the session history, drop caches, "
            "or raise the memory limit before the process is killed.",
    "critical": "The process is about to hit its memory limit: save work now, shrink the "
                "session (compact history, end idle tools), or restart with a higher limit.",
}


def default_suggestion(level: str, trigger: str, limit_source: str | None,
                       exit_kind: str | None = None, limit: int | None = None,
                       confidence: str = "certain") -> str:
    """A sentence that fits the trigger and level (docs/diagnostics.md); it hedges
    where the verdict is only likely."""
    if trigger in ("host-died", "recovered"):
        size = f" of {limit / 1048576:.0f} MiB" if limit else ""
        where = f" ({limit_source} limit{size})" if limit_source and limit_source != "none" else ""
        if exit_kind == "oom-killed" and confidence != "certain":
            return (f"The host was probably killed for running out of memory{where}; the "
                    "evidence is circumstantial (host.exit.evidence): if it was, raise that "
                    "limit or cap the session's history and caches.")
        if exit_kind == "oom-killed":
            return (f"The host was killed for running out of memory{where}: raise that limit "
                    "or cap the session's history and caches.")
        if exit_kind == "crashed":
            return ("The host crashed in native code: attach this file and the crash "
                    "traceback to the bug report.")
        if exit_kind == "exited":
            return "The host exited with an error: see host.exit for the exception or code."
        return ("The host died without shutting down cleanly: attach this file to the bug "
                "report; host.exit.evidence says what the watchdog could check.")
    if trigger == "unresponsive":
        return "The host stopped responding: the stacks show where it is stuck."
    if trigger == "descendant-died":
        if exit_kind == "oom-killed":
            return ("A process of the watched tree was killed for running out of memory: "
                    "`descendant` names it; give the tree more memory or fewer parallel "
                    "workers.")
        if exit_kind == "crashed":
            return ("A process of the watched tree crashed in native code: `descendant` "
                    "names it; its own core dump or log says where.")
        return ("A process of the watched tree was killed outright (SIGKILL): `descendant` "
                "names it; a supervisor's timeout or an operator may have done it.")
    return DEFAULT_SUGGESTIONS.get(level, DEFAULT_SUGGESTIONS["normal"])
