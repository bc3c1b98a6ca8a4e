"""Building and writing dumps: pressure, manual and postmortem (docs/diagnostics.md).

Dumps are plain dicts written with the stdlib (``_document``): the watchdog never
loads pydantic. Every dump is written in two phases: first what is cheap, with
``collectionComplete: false``, published under its unique name; then the
enriched version replaces it atomically. A watchdog killed between the two
still leaves a valid file.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from . import __version__, _levels, _reader
from ._document import SCHEMA_ID, host_exit, loads, to_json
from ._grading import Reading, TimelineSample
from ._levels import PressureLevel
from ._redact import redact_argv
from ._safedir import UnsafeDirectoryError
from ._sampling import HostProbe
from ._store import DiagnosticsDir, dump_timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._death import Verdict
    from ._document import (
        CodeFrameDoc,
        DescendantDoc,
        DumpDoc,
        HostExitDoc,
        MemoryDoc,
        ResponsivenessDoc,
        RiskDoc,
        TimelinePointDoc,
    )

MAX_TIMELINE_POINTS = 240
# How a recoverer's note in a postmortem's evidence begins (``_recovery``): one such
# note is kept, however often the postmortem is retried.
RECOVERED_BY = "recovered by pid "


class DumpWriter:
    """Turns readings and ring images into diagnostics files in the session's directory."""

    def __init__(self, header: _reader.RingImage, suggestions: dict[str, str],
                 probe: HostProbe | None = None, *, argv: list[str] | None = None) -> None:
        """``probe`` reads the living host (argv, and USS, fds and CPU at dump time);
        without one (an orphan's recovery) ``argv`` is what the dumps say."""
        self.session_id = header.session_id
        self.host_pid = header.host_pid
        self.slots = header.slot_count
        self.interval = header.interval
        self.soft, self.hard = header.config.soft, header.config.hard
        self.critical = header.config.critical
        self.history_share = header.config.history_share
        self.suggestions = suggestions
        self.probe = probe
        self.store = DiagnosticsDir(header.diagnostics_dir, max_files=header.config.max_files,
                                    max_bytes=header.config.max_bytes)
        # Now: the host may be gone at the end.
        self.argv = redact_argv(probe.cmdline() if probe is not None else argv or [])
        self.python: str | None = _python_version()
        self.ring_corrupt: str | None = None  # set by the watcher when the ring decodes badly
        # The directory itself was refused (a symlink, another user's, open to others):
        # unlike a full disk, waiting will not help, so a death's evidence is not kept.
        self.refused = False
        self._reported: set[str] = set()
        # Facts about the watch itself that a postmortem's evidence carries (``run``'s
        # tree without a cgroup, descendants past the budget).
        self.notes: list[str] = []

    # -- public ----------------------------------------------------------------------

    def write_live(self, trigger: str, reading: Reading, image: _reader.RingImage,
                   timeline: list[TimelineSample], last_record_wall_ns: int,
                   reason: str | None = None,
                   responsiveness: ResponsivenessDoc | None = None,
                   stacks: Callable[[], str | None] | None = None,
                   descendant: DescendantDoc | None = None) -> str | None:
        """A pressure, manual or unresponsive dump of a living host; returns the file name.

        ``stacks`` is called after the first phase is on disk (asking the host for its
        stacks takes a signal and a wait); its text goes to a sibling ``.stacks.txt``.
        """
        wall_ns = time.time_ns()
        dump = self._build(trigger, reading, image, timeline, wall_ns, last_record_wall_ns,
                           alive=True, exit=None, reason=reason)
        dump["responsiveness"] = responsiveness
        if descendant is not None:
            dump["descendant"] = descendant
            dump["suggestion"] = self._suggestion(dump["level"], trigger,
                                                  dump["memory"]["limitSource"],
                                                  descendant["exit"]["kind"])
        name = self._publish(dump, wall_ns)
        if name is None:
            return None
        if stacks is not None:
            text = stacks()
            if text:
                sibling = name[: -len(".json")] + ".stacks.txt"
                try:
                    self.store.write_new(sibling, text.encode())
                    dump["extras"]["stacks"] = sibling
                except OSError as exc:
                    self._report_once("stacks", f"cannot save the stacks {sibling}: {exc}")
        extra: dict[str, int | float | None] = (
            self.probe.expensive_sample() if self.probe is not None else {})
        uss, fds, cpu = extra.get("uss"), extra.get("fds"), extra.get("cpuSeconds")
        dump["memory"]["uss"] = int(uss) if uss is not None else None
        dump["host"]["fds"] = int(fds) if fds is not None else None
        dump["host"]["cpuSeconds"] = cpu
        risks = self._risks(reading, dump["session"], fds=dump["host"]["fds"])
        dump["riskDetails"] = risks
        dump["risks"] = [r["id"] for r in risks]
        dump["collectionComplete"] = True
        self._replace(name, dump)
        self.prune(keep=name)
        return name

    def postmortem(self, verdict: Verdict, reading: Reading | None,
                   image: _reader.RingImage, timeline: list[TimelineSample],
                   last_record_wall_ns: int, *, crash_text: str | None = None,
                   frames_text: str | None = None,
                   trigger: str = "host-died", status: _reader.Status | None = None,
                   ) -> tuple[DumpDoc, int]:
        """The dead host's postmortem, built but not written: (dump, wall-clock ns).

        ``_death`` drives the writing one step at a time (``publish``, ``save_ring``,
        ``complete``), noting each in the ring header before the next.
        """
        wall_ns = time.time_ns()
        frames, omitted = parse_frames(frames_text)
        evidence = list(verdict.evidence) + self.notes
        if verdict.exception and not frames:
            evidence.append("the exception's frames were not saved beside the dumps (no "
                            "folder, or a full disk, when it was raised)")
        exit = host_exit(verdict.kind, signal=verdict.signal, exit_code=verdict.exit_code,
                         exception=verdict.exception, evidence=evidence,
                         confidence=verdict.confidence, frames=frames,
                         frames_omitted=omitted)
        dump = self._build(trigger, reading, image, timeline, wall_ns, last_record_wall_ns,
                           alive=False, exit=exit)
        dump["crashTraceback"] = crash_text or None
        if reading is None and status is not None:  # an orphan: its last status block
            dump["memory"] = _memory_from_status(status)
            dump["level"] = status.level
        memory = dump["memory"]
        dump["suggestion"] = self._suggestion(dump["level"], trigger, memory["limitSource"],
                                              verdict.kind, memory["heapLimit"],
                                              verdict.confidence)
        return dump, wall_ns

    def publish(self, dump: DumpDoc, wall_ns: int) -> str | None:
        """Phase one: the dump under its unique name; None (said once) if it failed."""
        return self._publish(dump, wall_ns)

    def save_ring(self, name: str, image_bytes: bytes) -> bool:
        """The ring image beside the dump ``name``; True once it is on disk."""
        ring_name = name[: -len(".json")] + ".ring"
        try:
            self.store.write_new(ring_name, image_bytes)
        except FileExistsError:
            return True  # an earlier attempt at this very postmortem saved it
        except OSError as exc:
            self._report_once("ring", f"cannot save the ring image {ring_name}: {exc}")
            self.store.close()
            return False
        return True

    def complete(self, name: str, dump: DumpDoc, ring_saved: bool) -> bool:
        """Phase two: the complete dump replaces the first; retention runs after."""
        if ring_saved:
            dump["ring"]["file"] = name[: -len(".json")] + ".ring"
        dump["collectionComplete"] = ring_saved
        if not self._replace(name, dump):
            return False
        self.prune(keep=name)
        return ring_saved

    def finish_published(self, name: str, image_bytes: bytes, note: str) -> bool | None:
        """Complete a postmortem whose first phase an earlier watchdog left on disk
        (the disk filled, or it died): save the ring, add ``note`` to its evidence.
        True when done, False when the disk still refuses, None when the file is gone
        or unreadable (then a new postmortem must be written).

        A note of an earlier try (one starting ``RECOVERED_BY``) is replaced, not added
        to: every new watchdog and every ``gc`` retries while the ring does not fit."""
        dump = loads(self.store.read_dump(name))
        host = dump.get("host") if dump is not None else None
        if dump is None or not isinstance(host, dict) or not isinstance(dump.get("ring"), dict):
            return None
        exit = host.get("exit")
        if isinstance(exit, dict) and isinstance(exit.get("evidence"), list):
            evidence = exit["evidence"]
            earlier = [i for i, line in enumerate(evidence)
                       if isinstance(line, str) and line.startswith(RECOVERED_BY)]
            for i in reversed(earlier[1:]):  # a file grown by an older version: one is enough
                del evidence[i]
            if earlier:
                evidence[earlier[0]] = note
            else:
                evidence.append(note)
        # Checked enough for what is changed here: the rest is written back as it was.
        return self.complete(name, dump,  # type: ignore[arg-type]
                             self.save_ring(name, image_bytes))

    def prune(self, keep: str | None = None) -> None:
        """Retention after a dump, under the directory's lock; never ``keep``."""
        try:
            self.store.prune(keep=keep)
        except OSError as exc:
            self._report_once("prune", f"retention failed in {self.store.path}: {exc}")

    # -- building ----------------------------------------------------------------------

    def _build(self, trigger: str, reading: Reading | None, image: _reader.RingImage,
               timeline: list[TimelineSample], wall_ns: int,
               last_record_wall_ns: int, *, alive: bool, exit: HostExitDoc | None,
               reason: str | None = None) -> DumpDoc:
        slots, torn = image.slots(last=1)
        newest = slots[-1] if slots else None
        records = newest.index + 1 if newest else 0
        level = reading.level if reading else PressureLevel.NORMAL
        memory = self._memory(reading)
        session = dict(newest.values) if newest else {}
        risks = self._risks(reading, session) if reading else []
        age = ((wall_ns - last_record_wall_ns) / 1e9
               if last_record_wall_ns and records else None)
        # The keys in the order of the schema's fields (_diagnostics.Diagnostics).
        return {
            "schema": SCHEMA_ID,
            "timestamp": dump_timestamp(wall_ns)[1],
            "sessionId": self.session_id,
            "trigger": trigger,
            "reason": reason if trigger == "manual" else None,
            "level": level.label,
            "collectionComplete": False,
            "memory": memory,
            "thresholds": {"soft": self.soft, "hard": self.hard, "critical": self.critical},
            "session": session,
            "lastActivity": image.last_label,
            "host": {"pid": self.host_pid, "python": self.python, "argv": self.argv,
                     "alive": alive, "exit": exit,
                     "threads": reading.host.threads if reading else None,
                     "fds": None, "cpuSeconds": None},
            "risks": [r["id"] for r in risks],
            "riskDetails": risks,
            "suggestion": self._suggestion(level.label, trigger, memory["limitSource"]),
            "timeline": _timeline_points(timeline),
            "crashTraceback": None,
            "responsiveness": None,
            "descendant": None,
            "ring": {"file": None, "slots": self.slots, "records": records, "torn": torn,
                     "corrupt": self.ring_corrupt,
                     "lastRecordAge": round(age, 3) if age is not None else None},
            "watchdog": {"pid": os.getpid(), "version": __version__,
                         "interval": self.interval},
            "extras": {},
            "extrasMissing": {},
        }

    def _memory(self, reading: Reading | None) -> MemoryDoc:
        measure = self.probe.measure if self.probe is not None else None
        if reading is None:
            return _memory_doc(rss=None, heap_used=None, heap_limit=None, ratio=0.0,
                               limit_source="none", measure=measure)
        e = reading.effective
        return _memory_doc(
            rss=reading.host.rss, heap_used=reading.host.rss_anon, heap_limit=e.limit,
            ratio=round(e.ratio, 4), limit_source=e.source, vms=reading.host.vms,
            swap=reading.host.swap, system_available=reading.system_available,
            psi_some=reading.psi.get("some"), psi_full=reading.psi.get("full"),
            growth=round(reading.growth, 1),
            seconds_to_limit=(round(reading.seconds_to_limit, 1)
                              if reading.seconds_to_limit is not None else None),
            limits={p.source: p.limit for p in e.pairs}, measure=measure,
        )

    def _risks(self, reading: Reading | None, session: dict[str, int | float],
               fds: int | None = None) -> list[RiskDoc]:
        if reading is None:
            return []
        risks = _levels.assess_risks(
            ratio=reading.effective.ratio, level=reading.level, hard=self.hard,
            rss=reading.host.rss, seconds_to_limit=reading.seconds_to_limit,
            session=session, fds=fds,
            fd_limit=reading.fd_limit, threads=reading.host.threads, swap=reading.host.swap,
            psi_some_avg10=reading.psi.get("some"), history_share=self.history_share,
            leak_bytes_per_hour=reading.leak_bytes_per_hour,
        )
        return [{"id": r.id, "severity": r.severity, "message": r.message,
                 "value": r.value, "threshold": r.threshold} for r in risks]

    def _suggestion(self, level: str, trigger: str, limit_source: str,
                    exit_kind: str | None = None, limit: int | None = None,
                    confidence: str = "certain") -> str:
        if trigger in ("hard", "critical", "manual") and level in self.suggestions:
            return self.suggestions[level]
        return _levels.default_suggestion(level, trigger, limit_source, exit_kind, limit,
                                          confidence)

    # -- writing -----------------------------------------------------------------------

    def _publish(self, dump: DumpDoc, wall_ns: int) -> str | None:
        try:
            name = self.store.publish(self.session_id, wall_ns, to_json(dump))
        except OSError as exc:  # StoreError included
            self.refused = isinstance(exc, UnsafeDirectoryError)
            self._report_once("publish", f"cannot write diagnostics to {self.store.path}: "
                              f"{exc.strerror or exc}; still watching")
            self.store.close()  # open the path afresh next time: it may be remounted or new
            return None
        self._reported.discard("publish")  # a later failure is news again
        return name

    def _replace(self, name: str, dump: DumpDoc) -> bool:
        try:
            self.store.replace(name, to_json(dump))
        except OSError as exc:
            self._report_once("replace", f"cannot complete {name}: {exc}")
            self.store.close()
            return False
        return True

    def _report_once(self, key: str, message: str) -> None:
        # A full disk or read-only directory is said once, then the watchdog keeps watching.
        if key not in self._reported:
            self._reported.add(key)
            say(message)


def _memory_doc(*, rss: int | None, heap_used: int | None, heap_limit: int | None,
                ratio: float, limit_source: str, vms: int = 0, swap: int = 0,
                system_available: int | None = None, psi_some: float | None = None,
                psi_full: float | None = None, growth: float = 0.0,
                seconds_to_limit: float | None = None, limits: dict[str, int] | None = None,
                measure: str | None = None) -> MemoryDoc:
    return {"rss": rss, "heapUsed": heap_used, "heapLimit": heap_limit, "ratio": ratio,
            "limitSource": limit_source, "vms": vms, "uss": None, "swap": swap,
            "systemAvailable": system_available, "psiSomeAvg10": psi_some,
            "psiFullAvg10": psi_full, "growthBytesPerSecond": growth,
            "secondsToLimit": seconds_to_limit, "limits": limits or {}, "measure": measure}


def _memory_from_status(status: _reader.Status) -> MemoryDoc:
    return _memory_doc(
        rss=status.rss, heap_used=status.heap_used, heap_limit=status.heap_limit,
        ratio=round(status.ratio, 4), limit_source=status.limit_source,
        growth=round(status.growth, 1), seconds_to_limit=status.seconds_to_limit,
    )


def say(message: str) -> None:
    """One line on the host's stderr: in a container it is what survives in the logs.
    A closed or broken stderr must not stop the watchdog from finishing its work."""
    stream = sys.stderr
    if stream is None:  # closed for us: print() would fall back to stdout, another's data
        return
    if not message.isprintable():  # a folder's name with a newline or an escape in it
        message = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100
                          else f"\\u{ord(c):04x}" for c in message)
    try:
        print(f"watchdog-core: {message}", file=stream, flush=True)
    except (OSError, ValueError):
        pass


def _count(text: str) -> int:
    """A count from the host's exception file; 0 for anything else. The host may have
    scribbled over it, and a number the dump cannot hold must not cost the postmortem."""
    return int(text) if text.isdigit() and len(text) < 10 else 0


def parse_frames(text: str | None) -> tuple[list[CodeFrameDoc], int]:
    """The host's exception file (``line<TAB>function<TAB>file`` per frame, outermost
    first; ``# N frames omitted`` first when it was cut) as (frames, omitted). A line
    that does not parse is skipped."""
    frames: list[CodeFrameDoc] = []
    omitted = 0
    for line in (text or "").splitlines():
        parts = line.split("\t", 2)
        if line.startswith("# ") and line.endswith(" frames omitted"):
            count = line[2:].split(" ", 1)[0]
            omitted = _count(count)
            continue
        if line.startswith("#") or len(parts) != 3:
            continue
        lineno, function, file = parts
        frames.append({"file": file, "line": _count(lineno) or None, "function": function})
    return frames, omitted


def _timeline_points(timeline: list[TimelineSample]) -> list[TimelinePointDoc]:
    # MAX_TIMELINE_POINTS evenly spread, the oldest and the newest kept (241 samples
    # make 240 points, not the 121 of every second one).
    n, most = len(timeline), MAX_TIMELINE_POINTS
    picked = timeline if n <= most else [timeline[round(i * (n - 1) / (most - 1))]
                                         for i in range(most)]
    # A label goes on the first point that saw it (the first point: the label then), so
    # a mark made between two kept points lands on the later one.
    # A point without a mark has no "mark" key: most have none.
    points: list[TimelinePointDoc] = []
    for i, (t, rss, ratio, label) in enumerate(picked):
        point: TimelinePointDoc = {"t": round(t, 3), "rss": rss, "ratio": round(ratio, 4)}
        if label is not None and (i == 0 or label != picked[i - 1][3]):
            point["mark"] = label
        points.append(point)
    return points


def _python_version() -> str:
    # The watchdog runs the host's own interpreter (sys.executable): same version.
    return ".".join(map(str, sys.version_info[:3]))
