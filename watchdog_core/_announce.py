"""Level changes, told to the host while it runs: ``on_pressure`` and the
``watchdog_core`` logger (docs/design.md, "Telling the host").

The heartbeat thread notices a change (``check()``: one status read per beat) and hands
it over; a thread of its own, started at the first change, calls the host's callback
and logs, so a slow callback or log handler never delays the heartbeat (whose silence
would read as a hang). A rise to hard or critical is announced once the watchdog has
finished with the sample that graded it (ring word ``W_TICK_DONE``), so a pressure dump
written for it is on disk and named in the announcement.

``logging`` is never imported here: the host that configured logging has imported it.
"""

from __future__ import annotations

import _thread
import os
import sys
import time
import warnings

from . import _reader, _ring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._host import Watchdog

LOGGER = "watchdog_core"
DUMP_WAIT = 2.0  # seconds to wait for the watchdog's pressure dump before announcing
QUICK_WAIT = 0.05  # of those, in the heartbeat: a dump's first phase takes milliseconds
_SEVERE = ("hard", "critical")


class Announcer:
    """One per session. ``check`` runs in the heartbeat; the rest in the announcer's own
    thread."""

    def __init__(self, handle: Watchdog, callback: Callable[..., object] | None) -> None:
        self.handle = handle
        self.callback = callback
        self.two_arguments: bool | None = None  # decided at the first call: inspect is slow
        self.level = "normal"  # as last seen by check()
        self.samples = 0  # the sample of the status in which check() last saw a change
        # (old level, new level, its status, the sample of the change before it, the
        # dump written for it or None, whether that is settled yet)
        self.pending: list[tuple[str, str, _reader.Status, int, str | None, bool]] = []
        self.guard = _thread.allocate_lock()
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.started = False
        self.failed = False  # the callback raised once: said once, kept calling

    def check(self) -> None:
        """Heartbeat: a change of level since the last beat is handed to the thread."""
        w = self.handle._w
        if not w.attached:
            return
        status = _reader.read_status(w.buf, w.words)
        if status is None or status.level == self.level:
            return
        old, self.level = self.level, status.level
        since, self.samples = self.samples, status.samples
        dump, settled = None, True
        if _rank(status.level) > _rank(old) and status.level in _SEVERE:
            dump, settled = self._dump_for(since, status, QUICK_WAIT)
        with self.guard:
            self.pending.append((old, status.level, status, since, dump, settled))
            if not self.started:
                self.started = True
                _thread.start_new_thread(self._run, ())
        if self.wake.locked():
            self.wake.release()

    def stop(self) -> None:
        with self.guard:
            self.pending.append(("", "", None, 0, None, True))  # type: ignore[arg-type]
        if self.wake.locked():
            self.wake.release()

    def _run(self) -> None:
        while True:
            self.wake.acquire()
            with self.guard:
                batch, self.pending = self.pending, []
            for old, new, status, since, found, settled in batch:
                if not new:
                    return
                dump = found
                if not settled:  # the watchdog was still writing it: wait longer here
                    dump, _ = self._dump_for(since, status, DUMP_WAIT)
                self._announce(old, new, status, dump)

    def _announce(self, old: str, new: str, status: _reader.Status, path: str | None) -> None:
        rising = _rank(new) > _rank(old)
        info = {"level": new, "previous": old, "ratio": status.ratio, "rss": status.rss,
                "limit": status.heap_limit, "limitSource": status.limit_source,
                "secondsToLimit": status.seconds_to_limit,
                "dump": str(path) if path else None}
        self._log(rising, new, info, status)
        if self.callback is not None:
            self._call(new, info)

    def _dump_for(self, since: int, status: _reader.Status, wait: float
                  ) -> tuple[str | None, bool]:
        """(the pressure dump written for a rise seen in ``status``, settled): the newest
        pressure dump of a sample after ``since`` (the last change seen) and up to the
        status's own, once the watchdog is done with that sample. Not settled when it
        was not done within ``wait``; None when it wrote none (budget, cooldown)."""
        w = self.handle._w
        deadline = time.monotonic() + wait
        while w.attached and int(w.words[_ring.W_TICK_DONE]) < status.samples:
            if time.monotonic() >= deadline:
                return None, False
            time.sleep(0.002)
        if not w.attached or not since < int(w.words[_ring.W_PRESSURE_SAMPLE]) <= status.samples:
            return None, True
        name = _reader.read_dump_name(w.buf)
        return (os.path.join(self.handle.diagnostics_dir, name) if name else None), True

    def _log(self, rising: bool, level: str, info: dict[str, object],
             status: _reader.Status) -> None:
        if rising and level not in _SEVERE:
            return  # soft is for a status bar, not a log
        logging: Any = sys.modules.get("logging")
        if logging is None:
            # The host has not imported logging, so it has configured none: a record
            # would reach no one. And importing it here would import threading, which
            # takes the thread that imports it first for the main one: the interpreter
            # then waited for this thread at exit, for ever.
            return

        from ._statusline import render

        logger = logging.getLogger(LOGGER)
        if not logger.handlers:  # a library's manners: silent unless the host logs
            logger.addHandler(logging.NullHandler())
        line = render(status, always=True)  # the sample that graded it, not a later one
        if rising:
            suggestion = self._suggestion(level, str(info["limitSource"]))
            where = f"; dump {info['dump']}" if info["dump"] else ""
            logger.warning("memory pressure %s: %s%s. %s", level, line, where, suggestion)
        else:
            logger.info("memory pressure back to %s: %s", level, line)

    def _suggestion(self, level: str, limit_source: str) -> str:
        own = self.handle._config.suggestion.get(level)
        if own:
            return own
        from ._levels import default_suggestion

        return default_suggestion(level, level, limit_source)

    def _call(self, level: str, info: dict[str, object]) -> None:
        from ._levels import PressureLevel

        value = PressureLevel.from_name(level)
        if self.two_arguments is None:
            self.two_arguments = _takes_info(self.callback)  # type: ignore[arg-type]
        try:
            if self.two_arguments:
                self.callback(value, info)  # type: ignore[misc]
            else:
                self.callback(value)  # type: ignore[misc]
        except Exception as exc:  # the host's callback must never stop the announcements
            if not self.failed:
                self.failed = True
                try:
                    warnings.warn(f"watchdog-core: on_pressure raised {exc!r} (said once; "
                                  "it is still called at every change)", RuntimeWarning,
                                  stacklevel=1)
                except Exception:  # warnings made errors by the host: keep this thread
                    return


def _rank(level: str) -> int:
    return _ring._LEVELS.index(level)  # the status block's own order


def _takes_info(callback: Callable[..., object]) -> bool:
    """Whether ``callback(level, info)`` is its form; ``callback(level)`` is the old one."""
    import inspect

    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the old form
        return False
    # Required ones only: `def cb(level, verbose=False)` is the old form with an option.
    required = [p for p in parameters if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)
