"""The diagnostics file, schema ``watchdog-core/diagnostics/v1`` (SPEC 6).

Attributes are snake_case; the file's keys are camelCase through aliases, and
the user's own stat names in ``session`` are kept verbatim.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

SCHEMA_ID = "watchdog-core/diagnostics/v1"

Trigger = Literal["hard", "critical", "host-died", "unresponsive", "manual", "recovered"]
LevelName = Literal["normal", "soft", "hard", "critical"]
ExitKind = Literal["oom-killed", "crashed", "killed", "exited", "unknown"]
Number = int | float


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="forbid")


class MemoryInfo(_Model):
    rss: int | None = Field(description="host resident set size, bytes; null if the "
                                        "host died before the first sample")
    heap_used: int | None = Field(description="anonymous resident memory (RssAnon), bytes")
    heap_limit: int | None = Field(description="the effective limit, bytes")
    ratio: float = Field(description="highest usage/limit ratio over every known limit")
    limit_source: str = Field(description="configured, ram, available, cgroup-v2, cgroup-v1, "
                                          "rlimit-as, rlimit-data, or none")
    vms: int = 0
    uss: int | None = None
    swap: int = 0
    system_available: int | None = None
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None
    growth_bytes_per_second: float = 0.0
    seconds_to_limit: float | None = None
    limits: dict[str, int] = Field(default_factory=dict,
                                   description="every limit considered, by source, bytes")


class HostExit(_Model):
    kind: ExitKind
    signal: str | None = None
    exit_code: int | None = None
    exception: str | None = Field(None, description="type name of an uncaught exception")
    evidence: list[str] = Field(default_factory=list)


class HostInfo(_Model):
    pid: int
    python: str | None = None
    argv: list[str] = Field(default_factory=list)
    alive: bool
    exit: HostExit | None = None
    threads: int | None = None
    fds: int | None = None
    cpu_seconds: float | None = None


class RiskDetail(_Model):
    id: str
    severity: str
    message: str
    value: float
    threshold: float


class TimelinePoint(_Model):
    t: float = Field(description="seconds relative to the dump's timestamp (negative)")
    rss: int
    ratio: float


class RingInfo(_Model):
    file: str | None = None
    slots: int
    records: int
    torn: int = 0
    corrupt: str | None = Field(None, description="what was wrong with the ring, if it "
                                "could not be read whole; the dump holds what could be")
    last_record_age: float | None = Field(
        None, description="seconds between the newest record and the dump, at the "
                          "watchdog's sampling resolution")


class Responsiveness(_Model):
    state: Literal["unresponsive", "recovered"]
    reason: Literal["heartbeat", "idle"]
    heartbeat_age: float | None = Field(None, description="seconds since the host's "
                                        "heartbeat thread last ran")
    idle_seconds: float | None = Field(None, description="seconds without record()/mark()")
    unresponsive_for: float | None = Field(None, description="on recovery: how long it lasted")
    stacks_missing: str | None = Field(None, description="why there are no stacks, if none")


class WatchdogInfo(_Model):
    pid: int
    version: str
    interval: float


class Diagnostics(_Model):
    schema_: Literal["watchdog-core/diagnostics/v1"] = Field(
        "watchdog-core/diagnostics/v1", alias="schema")
    timestamp: str
    session_id: str
    trigger: Trigger
    reason: str | None = Field(None, description="the host's reason for a manual dump")
    level: LevelName
    collection_complete: bool
    memory: MemoryInfo
    session: dict[str, Number] = Field(default_factory=dict)
    last_activity: str | None = None
    host: HostInfo
    risks: list[str] = Field(default_factory=list)
    risk_details: list[RiskDetail] = Field(default_factory=list)
    suggestion: str = Field(min_length=1)
    timeline: list[TimelinePoint] = Field(default_factory=list)
    crash_traceback: str | None = Field(None, description="faulthandler's traceback of every "
                                        "thread, when the host crashed in native code")
    responsiveness: Responsiveness | None = None
    ring: RingInfo
    watchdog: WatchdogInfo
    extras: dict[str, str] = Field(default_factory=dict,
                                   description="sibling files written after this one")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode() + b"\n"


def load(raw: bytes | str) -> Diagnostics:
    """Parse and validate a diagnostics file; pydantic.ValidationError if it is not one."""
    return Diagnostics.model_validate_json(raw)


def json_schema() -> dict[str, object]:
    return Diagnostics.model_json_schema(by_alias=True)
