"""Our metrics in the Prometheus text format and OpenMetrics (docs/fleet.md): the
families, one session's series, and their text.

One definition for the two ways out: ``watchdog-core export`` (every live session of the
machine in one scrape) and the file each watchdog keeps in node_exporter's textfile
folder (``_textfile``). Written with the standard library, never through
prometheus_client, which the package does not depend on; the tests parse the text with
prometheus_client's own parsers. Stdlib only and no ``typing``: the watchdog loads it.

Labels are bounded on purpose: ``session`` (the session id), ``program`` (the host's
``/proc/<pid>/comm``, never its argv, which may hold secrets), ``limit_source`` (one of
a handful of words), ``trigger`` (one of five) and, once the host is gone, ``kind``,
``signal`` and ``confidence`` of its death.
"""

from __future__ import annotations

import math

from . import _attribution, _ring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._reader import Status

    Labels = tuple[tuple[str, str], ...]  # (name, value) pairs, in the order printed
    Series = list[tuple["Family", Labels, float]]  # (family, its own labels, value)


class Family:
    """A metric family: its name (with ``_total`` for a counter, as Prometheus names
    it), type, OpenMetrics unit (the name's suffix, or "") and help."""

    __slots__ = ("name", "kind", "unit", "help")

    def __init__(self, name: str, kind: str, unit: str, help: str) -> None:
        self.name, self.kind, self.unit, self.help = name, kind, unit, help


RSS = Family("watchdog_core_rss_bytes", "gauge", "bytes",
             "Resident set size of the host at the watchdog's last sample.")
LIMIT = Family("watchdog_core_limit_bytes", "gauge", "bytes",
               "The memory limit the host is graded against (no sample when it has none).")
RATIO = Family("watchdog_core_limit_used_ratio", "gauge", "ratio",
               "Memory in use over the limit, as the watchdog graded it (1 is the limit).")
LEVEL = Family("watchdog_core_level", "gauge", "",
               "Pressure level: 0 normal, 1 soft, 2 hard, 3 critical.")
GROWTH = Family("watchdog_core_growth_bytes_per_second", "gauge", "bytes_per_second",
                "Growth of memory in use, bytes per second (negative when shrinking).")
TO_LIMIT = Family("watchdog_core_time_to_limit_seconds", "gauge", "seconds",
                  "Seconds until the limit at the present growth (no sample when not "
                  "growing).")
AGE = Family("watchdog_core_last_sample_age_seconds", "gauge", "seconds",
             "Seconds since the watchdog's last sample of the host.")
SAMPLES = Family("watchdog_core_samples_total", "counter", "",
                 "Samples the watchdog has taken of the host.")
DUMPS = Family("watchdog_core_dumps_total", "counter", "",
               "Diagnostics files written for the session while the host lived, by trigger.")
HOST_EXIT = Family("watchdog_core_host_exit", "gauge", "",
                   "1 for a host that died uncleanly: how (kind, signal) and how surely "
                   "(confidence). Its postmortem is in the diagnostics folder.")
HOST_EXIT_TIME = Family("watchdog_core_host_exit_time_seconds", "gauge", "seconds",
                        "When the watchdog saw the host die, in seconds since the epoch.")

# What export prints of a live session; a textfile leaves AGE out: node_exporter gives
# every file's mtime as node_textfile_mtime_seconds, and the file is rewritten only on
# change (``_textfile``).
LIVE = (RSS, LIMIT, RATIO, LEVEL, GROWTH, TO_LIMIT, AGE, SAMPLES, DUMPS)
TEXTFILE = tuple(family for family in LIVE if family is not AGE)
EXIT = (HOST_EXIT, HOST_EXIT_TIME)


def live_series(status: Status, dumps: dict[str, int],
                sampled_age: float | None = None) -> Series:
    """A live session's series: (family, labels of the series beyond the session's,
    value), the session's own labels left to ``render``. A family without a value (no
    limit, not growing, ``sampled_age`` None) has no series."""
    values = (
        (RSS, status.rss), (LIMIT, status.heap_limit), (RATIO, status.ratio),
        (LEVEL, _ring._LEVELS.index(status.level)), (GROWTH, status.growth),
        (TO_LIMIT, status.seconds_to_limit), (AGE, sampled_age), (SAMPLES, status.samples),
    )
    series: Series = [(family, (), value) for family, value in values if value is not None]
    series += [(DUMPS, (("trigger", trigger),), dumps.get(trigger, 0))
               for trigger in _ring.DUMP_TRIGGERS]
    return series


def exit_series(kind: str, signal: str | None, confidence: str, when: float) -> Series:
    """A dead host's series: its verdict as labels of HOST_EXIT, and the time."""
    verdict = (("kind", kind), ("signal", signal or ""), ("confidence", confidence))
    return [(HOST_EXIT, verdict, 1), (HOST_EXIT_TIME, (), when)]


def session_labels(session: str, program: str, limit_source: str | None = None) -> Labels:
    labels: Labels = (("session", session), ("program", program))
    if limit_source is not None:
        labels += (("limit_source", limit_source),)
    return labels


def render(families: tuple[Family, ...], sessions: list[tuple[Labels, Series]],
           openmetrics: bool = False) -> str:
    """The text of ``sessions`` (each its labels and series): every family of
    ``families`` with its HELP and TYPE (and UNIT in OpenMetrics), even with no series,
    and its series together, as both formats require."""
    lines: list[str] = []
    for family in families:
        name = family.name
        if openmetrics and family.kind == "counter":
            name = name.removesuffix("_total")  # OpenMetrics names the family without it
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        if openmetrics and family.unit:
            lines.append(f"# UNIT {name} {family.unit}")
        for labels, series in sessions:
            for of, own, value in series:
                if of is family:
                    pairs = ",".join(f'{name}="{escape_label(label)}"'
                                     for name, label in labels + own)
                    lines.append(f"{family.name}{{{pairs}}} {format_value(value)}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def program_name(pid: int, start_ticks: int) -> str:
    """The host's command name (``/proc/<pid>/comm``, at most 15 bytes), or ``unknown``
    when the pid is not the host's here: another pid namespace numbers it, or it was
    reused (its start time differs from the one the ring holds). Never argv."""
    stat = _attribution.read_proc_stat(pid)
    if stat is None or (start_ticks and stat.start_ticks != start_ticks):
        return "unknown"
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read(64).rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "unknown"
    return comm or "unknown"


def escape_label(value: str) -> str:
    """A label value as both formats quote it: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
