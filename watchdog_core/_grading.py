"""Each sample of the host, graded: the limits it is measured against, its level,
its growth, and the timeline a dump shows (docs/design.md).

Pure bookkeeping over the probes' figures; the watchdog writes the result into
the ring's status block and keeps the last good one for the postmortem.
"""

from __future__ import annotations

from collections import deque

from . import _levels, _limits
from ._levels import PressureLevel
from ._limits import EffectiveLimit
from ._ring import RingConfig, encode_status
from ._sampling import HostSample, SystemProbe

TIMELINE_SECONDS = 60.0
# The sampling schedule (docs/design.md, "When the watchdog samples").
MAX_DELAY = 2.0  # seconds: the longest a far and flat host goes unsampled
NEAR_SECONDS = 10.0  # a host this close to hard at its growth rate is sampled at the interval
BURST = 300 * 1024 * 1024  # bytes a second a host is assumed able to allocate unseen
# One sample of the timeline: (seconds, rss bytes, ratio, the last mark() label or None).
TimelineSample = tuple[float, int, float, str | None]


class Reading:
    """One graded sample: what the host used, against which limit, at what level."""

    __slots__ = ("host", "effective", "level", "growth", "seconds_to_limit",
                 "system_available", "psi", "leak_bytes_per_hour", "fd_limit")

    def __init__(self, *, host: HostSample, effective: EffectiveLimit, level: PressureLevel,
                 growth: float, seconds_to_limit: float | None, system_available: int | None,
                 psi: dict[str, float], leak_bytes_per_hour: float | None = None,
                 fd_limit: int | None = None) -> None:
        self.host, self.effective, self.level = host, effective, level
        self.growth, self.seconds_to_limit = growth, seconds_to_limit
        self.system_available, self.psi = system_available, psi
        self.leak_bytes_per_hour = leak_bytes_per_hour
        self.fd_limit = fd_limit

    def status_block(self, samples: int) -> bytes:
        """This reading as the ring's status block (what ``wd.level`` and ``ls`` read)."""
        return encode_status(int(self.level), self.effective.ratio, self.host.rss,
                             self.host.rss_anon, self.effective.limit, self.growth,
                             self.seconds_to_limit, self.effective.source, self.host.wall_ns,
                             samples)


def sampling_delay(reading: Reading, config: RingConfig, interval: float) -> float:
    """Seconds from ``reading`` to the next sample.

    The interval while the host is above soft, or would reach hard within NEAR_SECONDS
    at its growth rate. Otherwise as long as a burst of BURST bytes a second would take
    to bring it to soft, within [interval, MAX_DELAY]: a host that starts allocating
    that fast is sampled again before it reaches soft, and from there at the interval.
    Every limit counts, not only the tightest ratio: a small cgroup at 40 % may have
    less room in bytes than the machine's RAM at 45 %.
    """
    if interval >= MAX_DELAY or reading.level >= PressureLevel.SOFT:
        return interval
    pairs = reading.effective.pairs
    if not pairs:
        return MAX_DELAY  # nothing to approach
    to_soft = min(config.soft * p.limit - p.usage for p in pairs)
    to_hard = min(config.hard * p.limit - p.usage for p in pairs)
    growth = reading.growth
    if to_soft <= 0 or (growth > 0 and to_hard / growth < NEAR_SECONDS):
        return interval
    return min(MAX_DELAY, max(interval, to_soft / max(BURST, growth)))


class Grading:
    """Grades the samples of one host, in order."""

    def __init__(self, config: RingConfig, system: SystemProbe) -> None:
        self.config = config
        self.system = system
        self.grader = _levels.LevelGrader(config.soft, config.hard, config.critical)
        self.growth = _levels.GrowthEstimator()
        self.leak = _levels.GrowthEstimator(window=_levels.LEAK_WINDOW, spacing=10.0)
        # (monotonic seconds, rss, ratio, the host's last mark() label then)
        self.timeline: deque[TimelineSample] = deque()
        self.samples = 0

    def grade(self, host: HostSample, label: str | None = None) -> Reading:
        """A sample of a living host (never one taken while it was torn down);
        ``label`` is the host's last ``mark()`` label as this sample saw it."""
        system = self.system
        info = system.meminfo()
        rlimits = system.rlimits()
        effective = _limits.limit_pairs(
            rss=host.rss, vms=host.vms, data=host.data, configured=self.config.memory_limit,
            info=info, cgroups=system.cgroups(), limits=rlimits,
        )
        self.growth.add(host.t, host.rss)
        self.leak.add(host.t, host.rss)
        level = self.grader.update(effective.ratio)
        reading = Reading(host=host, effective=effective, level=level,
                          growth=self.growth.slope(),
                          seconds_to_limit=self._seconds_to_limit(effective),
                          system_available=info.get("MemAvailable"), psi=system.psi(),
                          leak_bytes_per_hour=self._leak_rate(), fd_limit=rlimits.get("nofile"))
        if self.timeline and self.timeline[-1][3] == label:
            label = self.timeline[-1][3]  # one string for a run of samples, not a copy each
        self.timeline.append((host.t, host.rss, effective.ratio, label))
        while self.timeline and self.timeline[0][0] < host.t - TIMELINE_SECONDS:
            self.timeline.popleft()
        self.samples += 1
        return reading

    def timeline_before(self, now: float) -> list[TimelineSample]:
        """The last TIMELINE_SECONDS of (seconds before ``now``, rss, ratio, label)."""
        return [(t - now, rss, ratio, label) for t, rss, ratio, label in self.timeline]

    def _seconds_to_limit(self, effective: EffectiveLimit) -> float | None:
        if effective.winner is None:
            return None
        # Remaining headroom of the winning pair, crossed at the RSS growth rate.
        slope = self.growth.slope()  # computed once per sample, cached
        if slope <= 0:
            return None
        return max(0.0, (effective.winner.limit - effective.winner.usage) / slope)

    def _leak_rate(self) -> float | None:
        """Bytes per hour of sustained growth, once LEAK_WINDOW seconds are covered."""
        if self.leak.span() < _levels.LEAK_WINDOW * 0.95:
            return None
        return self.leak.slope() * 3600
