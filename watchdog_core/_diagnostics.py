"""The diagnostics file, schema ``watchdog-core/diagnostics/v1`` (docs/diagnostics.md).

Attributes are snake_case; the file's keys are camelCase through aliases, and
the user's own stat names in ``session`` are kept verbatim.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    model_serializer,
)
from pydantic.alias_generators import to_camel

SCHEMA_ID = "watchdog-core/diagnostics/v1"

Trigger = Literal["hard", "critical", "host-died", "unresponsive", "manual", "recovered",
                  "descendant-died"]
LevelName = Literal["normal", "soft", "hard", "critical"]
ExitKind = Literal["oom-killed", "crashed", "killed", "exited", "unknown"]
Confidence = Literal["certain", "likely", "unknown"]
V = TypeVar("V")

# JSON has no NaN or infinities: a dump writes a non-finite stat as one of these strings
# (pydantic's ser_json_inf_nan="strings" convention), and reading it back gives the float.
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def json_safe_stats(stats: Mapping[str, V]) -> dict[str, V | str]:
    """``stats`` as JSON can carry them: a NaN or infinite float becomes ``"NaN"``,
    ``"Infinity"`` or ``"-Infinity"``, as in a dump's ``session``; the rest is unchanged."""
    return {name: _json_number(value) for name, value in stats.items()}


def _json_number(value: V) -> V | str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


def _stat_from_json(value: object) -> object:
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    # The ring keeps whole numbers as int64; one beyond that is no stat a host recorded
    # (and the float branch would otherwise take it, silently rounded).
    if isinstance(value, int) and not isinstance(value, bool) and not (
            INT64_MIN <= value <= INT64_MAX):
        raise ValueError("a whole-number stat is a 64-bit signed integer")
    return value


_NUMBER_OR_NON_FINITE = {"anyOf": [{"type": "number"}, {"enum": list(NON_FINITE)}]}

# Whole numbers as the ring, the kernel and every reader keep them: 64-bit signed. A file
# holding 10**400 is not a dump (a reader would overflow on it). Bytes and counts are
# never negative, except where they are copied from a ring's status block (rss, heap
# used, limit: a host that scribbled over its ring must not stop its postmortem) or from
# the limits as each source states them.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]  # bytes, frames, slots, records

# A float field as a dump writes it: a number, or a NON_FINITE string for NaN and the
# infinities (ser_json_inf_nan="strings"); reading accepts both. The schema says so.
Real = Annotated[float, WithJsonSchema(_NUMBER_OR_NON_FINITE)]

# A stat as a dump holds it: a number, or one of the NON_FINITE strings. Non-finite stats
# are stored and shown, never refused: a loss that turned NaN is what a black box is for.
# Strict otherwise: no other strings, no bools, no integer beyond int64.
StatValue = Annotated[
    StrictInt | StrictFloat,
    BeforeValidator(_stat_from_json),
    WithJsonSchema(_NUMBER_OR_NON_FINITE),
]

# The dump's time as _store.dump_timestamp writes it: ISO 8601, UTC, with a Z.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                        r"(\.[0-9]{1,6})?Z")


def _utc_timestamp(value: str) -> str:
    if not _TIMESTAMP.fullmatch(value):
        raise ValueError("should be an ISO 8601 UTC time such as 2026-11-29T10:15:00.123456Z")
    try:
        _dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S" + (".%fZ" if "." in value else "Z"))
    except ValueError:
        raise ValueError(f"{value} is no time of the calendar") from None
    return value


Timestamp = Annotated[
    str,
    AfterValidator(_utc_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "pattern": f"^{_TIMESTAMP.pattern}$"}),
]


class _Model(BaseModel):
    # A non-finite float in any field is written as a NON_FINITE string: never as null
    # (which a float field refuses on reading), nor as a bare NaN (which is not JSON).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="forbid", ser_json_inf_nan="strings")


class MemoryInfo(_Model):
    rss: Int64 | None = Field(description="host resident set size, bytes; null if the "
                                          "host died before the first sample")
    heap_used: Int64 | None = Field(description="anonymous resident memory (RssAnon), bytes")
    heap_limit: Int64 | None = Field(description="the effective limit, bytes")
    ratio: Real = Field(description="highest usage/limit ratio over every known limit")
    limit_source: str = Field(description="configured, ram, available, cgroup-v2, cgroup-v1, "
                                          "rlimit-as, rlimit-data, or none")
    vms: Count = 0
    uss: Count | None = None
    swap: Count = 0
    system_available: Count | None = None
    psi_some_avg10: Real | None = None
    psi_full_avg10: Real | None = None
    growth_bytes_per_second: Real = 0.0
    seconds_to_limit: Real | None = None
    limits: dict[str, Int64] = Field(default_factory=dict,
                                     description="every limit considered, by source, bytes")
    measure: Literal["process", "tree-rss", "cgroup"] | None = Field(
        None, description="what rss measures: the host process; tree-rss, the summed RSS of "
        "the host and its descendants (pages shared copy-on-write counted once per "
        "process, so it overstates); cgroup, the working set of a memory cgroup holding "
        "the tree alone (watchdog-core run)")


class Thresholds(_Model):
    """The session's level thresholds, as ratios of the effective limit."""

    soft: Real
    hard: Real
    critical: Real


class CodeFrame(_Model):
    """One frame of a traceback: where in the code, never what values it held."""

    file: str
    line: Int64 | None = None
    function: str


class HostExit(_Model):
    kind: ExitKind
    signal: str | None = None
    exit_code: Int64 | None = None
    exception: str | None = Field(None, description="type name of an uncaught exception")
    frames: list[CodeFrame] = Field(
        default_factory=list, description="where the uncaught exception was raised: its "
        "traceback's frames, outermost first, as file, line and function (no message, no "
        "values)")
    frames_omitted: Count = Field(0, description="older frames left out of ``frames`` (a "
                                "deep recursion keeps the innermost 64)")
    evidence: list[str] = Field(default_factory=list)
    confidence: Confidence = Field(
        "unknown", description="certain: a wait status (the parent's, the zombie's or the "
        "pidfd's) or the kernel naming the host's pid; likely: circumstantial (a shared "
        "cgroup's OOM counter, a ratio near the limit, notes the host left); unknown")


class Descendant(_Model):
    """A process of the watched tree that was killed or crashed while the host lived."""

    pid: Int64 | None = Field(description="null when it was killed before any sample saw "
                              "it and the kernel's log could not be read")
    name: str = Field(description="its command name (/proc/<pid>/comm), ? when unknown")
    rss: Count | None = Field(None, description="its RSS at the last sample before it "
                              "ended (the kernel's anon-rss for one no sample saw), bytes")
    exit: HostExit


class HostInfo(_Model):
    pid: Int64
    python: str | None = None
    argv: list[str] = Field(default_factory=list)
    alive: bool
    exit: HostExit | None = None
    threads: Count | None = None
    fds: Count | None = None
    cpu_seconds: Real | None = None


class RiskDetail(_Model):
    id: str
    severity: str
    message: str
    value: Real
    threshold: Real


class TimelinePoint(_Model):
    t: Real = Field(description="seconds relative to the dump's timestamp (negative)")
    rss: Count
    ratio: Real
    mark: str | None = Field(None, description="the host's last mark() label, on the first "
                             "point that saw it (absent while it stays the same)")

    @model_serializer(mode="wrap")
    def _without_absent_mark(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # Most points have no mark: leaving the key out keeps a dump small, and an older
        # reader (which forbids unknown keys) can still read a dump that has no mark.
        point: dict[str, object] = handler(self)
        if point.get("mark", "") is None:
            del point["mark"]
        return point


class RingInfo(_Model):
    file: str | None = None
    slots: Count
    records: Count
    torn: Count = 0
    corrupt: str | None = Field(None, description="what was wrong with the ring, if it "
                                "could not be read whole; the dump holds what could be")
    last_record_age: Real | None = Field(
        None, description="seconds between the newest record and the dump, at the "
                          "watchdog's sampling resolution")


class Responsiveness(_Model):
    state: Literal["unresponsive", "recovered"]
    reason: Literal["gil-held", "main-thread-stuck", "idle"] = Field(
        description="gil-held: no Python ran for hang_after (the heartbeat thread could not "
        "get the GIL); main-thread-stuck: the main thread burned CPU without leaving its "
        "innermost frame for hang_after; idle: no record()/mark() for idle_after")
    main_thread: str | None = Field(None, description="the main thread's id as the stacks "
                                    "file prints it (faulthandler's 'Thread 0x...')")
    main_thread_cpu: Real | None = Field(None, description="main-thread-stuck: the share of "
                                          "one CPU the main thread used while stuck")
    heartbeat_age: Real | None = Field(None, description="seconds since the host's "
                                        "heartbeat thread last ran")
    idle_seconds: Real | None = Field(None, description="seconds without record()/mark()")
    unresponsive_for: Real | None = Field(None, description="on recovery: how long it lasted")
    stacks_missing: str | None = Field(None, description="why there are no stacks, if none")


class WatchdogInfo(_Model):
    pid: Int64
    version: str
    interval: Real


class Diagnostics(_Model):
    schema_: Literal["watchdog-core/diagnostics/v1"] = Field(
        "watchdog-core/diagnostics/v1", alias="schema")
    timestamp: Timestamp
    session_id: str
    trigger: Trigger
    reason: str | None = Field(None, description="the host's reason for a manual dump")
    level: LevelName
    collection_complete: bool
    memory: MemoryInfo
    thresholds: Thresholds | None = Field(None, description="the session's soft, hard and "
                                          "critical thresholds the level was graded by")
    session: dict[str, StatValue] = Field(
        default_factory=dict, description="the newest ring slot: each stat's last value, "
        'NaN and the infinities as "NaN", "Infinity", "-Infinity"')
    last_activity: str | None = None
    host: HostInfo
    risks: list[str] = Field(default_factory=list)
    risk_details: list[RiskDetail] = Field(default_factory=list)
    suggestion: str = Field(min_length=1)
    timeline: list[TimelinePoint] = Field(default_factory=list)
    crash_traceback: str | None = Field(None, description="faulthandler's traceback of every "
                                        "thread, when the host crashed in native code")
    responsiveness: Responsiveness | None = None
    descendant: Descendant | None = Field(None, description="on a descendant-died dump: "
                                          "the process that ended, and how")
    ring: RingInfo
    watchdog: WatchdogInfo
    extras: dict[str, str] = Field(
        default_factory=dict, description="sibling files written after this one, named "
        "from its stem: stacks (every thread's stack: at a hang, or asked of the host at "
        "the first critical dump), tracemalloc (the top allocation sites then)")
    extras_missing: dict[str, str] = Field(
        default_factory=dict, description="why an extra asked for is not in extras: not "
        "answered yet, skipped, or failed")

    def to_json(self) -> bytes:
        """The file's bytes: strict JSON, non-finite floats as NON_FINITE strings."""
        return self.model_dump_json(by_alias=True, indent=2).encode() + b"\n"


def load(raw: bytes | str) -> Diagnostics:
    """Parse and validate a diagnostics file; pydantic.ValidationError if it is not one.

    The NON_FINITE strings in ``session`` come back as the floats they stand for.
    """
    return Diagnostics.model_validate_json(raw)


def json_schema() -> dict[str, object]:
    return Diagnostics.model_json_schema(by_alias=True)
