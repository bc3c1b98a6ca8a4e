"""A dump as the watchdog builds and writes it: plain dicts under the file's own
camelCase keys, turned into bytes by the stdlib's ``json`` (docs/diagnostics.md).

The watchdog never loads pydantic: it would be most of an idle watchdog's memory,
and importing it at the moment of a death would cost more than the postmortem's
whole budget (docs/performance.md). ``_diagnostics`` holds the same file as pydantic
models: the schema, what ``show`` and the tests read. The TypedDicts below give mypy
the shape; tests check that every dump the watchdog writes is one the models accept
with every field present.
"""

from __future__ import annotations

import json
import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypedDict

    # The functional form: the keys are the file's (camelCase, and "schema").
    CodeFrameDoc = TypedDict("CodeFrameDoc", {"file": str, "line": "int | None",
                                              "function": str})
    HostExitDoc = TypedDict("HostExitDoc", {
        "kind": str, "signal": "str | None", "exitCode": "int | None",
        "exception": "str | None", "frames": "list[CodeFrameDoc]", "framesOmitted": int,
        "evidence": "list[str]", "confidence": str})
    DescendantDoc = TypedDict("DescendantDoc", {
        "pid": "int | None", "name": str, "rss": "int | None", "exit": HostExitDoc})
    ResponsivenessDoc = TypedDict("ResponsivenessDoc", {
        "state": str, "reason": str, "mainThread": "str | None",
        "mainThreadCpu": "float | None", "heartbeatAge": "float | None",
        "idleSeconds": "float | None", "unresponsiveFor": "float | None",
        "stacksMissing": "str | None"})
    MemoryDoc = TypedDict("MemoryDoc", {
        "rss": "int | None", "heapUsed": "int | None", "heapLimit": "int | None",
        "ratio": float, "limitSource": str, "vms": int, "uss": "int | None", "swap": int,
        "systemAvailable": "int | None", "psiSomeAvg10": "float | None",
        "psiFullAvg10": "float | None", "growthBytesPerSecond": float,
        "secondsToLimit": "float | None", "limits": "dict[str, int]",
        "measure": "str | None"})
    HostDoc = TypedDict("HostDoc", {
        "pid": int, "python": "str | None", "argv": "list[str]", "alive": bool,
        "exit": "HostExitDoc | None", "threads": "int | None", "fds": "int | None",
        "cpuSeconds": "float | None"})
    RiskDoc = TypedDict("RiskDoc", {"id": str, "severity": str, "message": str,
                                    "value": float, "threshold": float})
    TimelinePointDoc = TypedDict("TimelinePointDoc", {
        "t": float, "rss": int, "ratio": float, "mark": str}, total=False)
    RingDoc = TypedDict("RingDoc", {
        "file": "str | None", "slots": int, "records": int, "torn": int,
        "corrupt": "str | None", "lastRecordAge": "float | None"})
    DumpDoc = TypedDict("DumpDoc", {
        "schema": str, "timestamp": str, "sessionId": str, "trigger": str,
        "reason": "str | None", "level": str, "collectionComplete": bool,
        "memory": MemoryDoc, "thresholds": "dict[str, float]",
        "session": "dict[str, int | float]", "lastActivity": "str | None",
        "host": HostDoc, "risks": "list[str]", "riskDetails": "list[RiskDoc]",
        "suggestion": str, "timeline": "list[TimelinePointDoc]",
        "crashTraceback": "str | None", "responsiveness": "ResponsivenessDoc | None",
        "descendant": "DescendantDoc | None", "ring": RingDoc, "watchdog": "dict[str, object]",
        "extras": "dict[str, str]", "extrasMissing": "dict[str, str]"})

SCHEMA_ID = "watchdog-core/diagnostics/v1"  # _diagnostics.SCHEMA_ID; a test keeps them equal


def host_exit(kind: str, *, signal: str | None = None, exit_code: int | None = None,
              exception: str | None = None, frames: list[CodeFrameDoc] | None = None,
              frames_omitted: int = 0, evidence: list[str] | None = None,
              confidence: str = "unknown") -> HostExitDoc:
    """How the host (or a descendant) ended: ``host.exit`` and ``descendant.exit``."""
    return {"kind": kind, "signal": signal, "exitCode": exit_code, "exception": exception,
            "frames": frames or [], "framesOmitted": frames_omitted,
            "evidence": evidence or [], "confidence": confidence}


def descendant(pid: int | None, name: str, rss: int | None,
               exit: HostExitDoc) -> DescendantDoc:
    """A process of ``watchdog-core run``'s tree that was killed or crashed."""
    return {"pid": pid, "name": name, "rss": rss, "exit": exit}


def responsiveness(state: str, reason: str, *, main_thread: str | None = None,
                   main_thread_cpu: float | None = None, heartbeat_age: float | None = None,
                   idle_seconds: float | None = None, unresponsive_for: float | None = None,
                   stacks_missing: str | None = None) -> ResponsivenessDoc:
    """An unresponsive host, or its recovery (docs/hangs.md)."""
    return {"state": state, "reason": reason, "mainThread": main_thread,
            "mainThreadCpu": main_thread_cpu, "heartbeatAge": heartbeat_age,
            "idleSeconds": idle_seconds, "unresponsiveFor": unresponsive_for,
            "stacksMissing": stacks_missing}


def to_json(doc: DumpDoc) -> bytes:
    """The file's bytes: JSON indented by two, UTF-8, a newline at the end.

    A non-finite float is written as "NaN", "Infinity" or "-Infinity" (JSON has none,
    and the schema's readers turn these strings back into floats); a string holding
    bytes that were not UTF-8 (an argv decoded with surrogateescape) gets U+FFFD for
    each, as no reader accepts a lone surrogate.
    """
    return json.dumps(_portable(doc), ensure_ascii=False, indent=2,
                      allow_nan=False).encode() + b"\n"


def loads(raw: bytes | None) -> dict[str, object] | None:
    """A dump read back to be finished (its ring saved, its extras named): the parsed
    object, or None when ``raw`` is missing or is not one of our dumps."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        return None
    return doc


def _portable(value: object) -> object:
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value
