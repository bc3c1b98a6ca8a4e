"""Level changes, told to the host while it runs: ``on_pressure`` and the
``watchdog_core`` logger (docs/design.md, "Telling the host").

The heartbeat thread notices a change (``check()``: one status read per beat) and hands
it over; a thread of its own, started at the first change, calls the host's callback
and logs, so a slow callback or log handler never delays the heartbeat (whose silence
would read as a hang). A rise to hard or critical is announced once the watchdog has
finished with the sample that graded it (ring word ``W_TICK_DONE``), so a pressure dump
written for it is on disk and named in the announcement.

``logging`` is imported only when the first message is due.
"""

from __future__ import annotations

import _thread
import os
import time
import warnings

from . import _reader, _ring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._host import Watchdog

LOGGER = "watchdog_core"
DUMP_WAIT = 2.0  # seconds to wait for the watchdog's pressure dump before announcing
_SEVERE = ("hard", "critical")


class Announcer:
    """One per session. ``check`` runs in the heartbeat; the rest in the announcer's own
    thread."""

    def __init__(self, handle: Watchdog, callback: Callable[..., object] | None) -> None:
        self.handle = handle
        self.callback = callback
        self.two_arguments: bool | None = None  # decided at the first call: inspect is slow
        self.level = "normal"  # as last seen by check()
        self.pending: list[tuple[str, str, _reader.Status]] = []  # (old, new, status)
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
        with self.guard:
            self.pending.append((old, status.level, status))
            if not self.started:
                self.started = True
                _thread.start_new_thread(self._run, ())
        if self.wake.locked():
            self.wake.release()

    def stop(self) -> None:
        with self.guard:
            self.pending.append(("", "", None))  # type: ignore[arg-type]
        if self.wake.locked():
            self.wake.release()

    def _run(self) -> None:
        while True:
            self.wake.acquire()
            with self.guard:
                batch, self.pending = self.pending, []
            for old, new, status in batch:
                if not new:
                    return
                self._announce(old, new, status)

    def _announce(self, old: str, new: str, status: _reader.Status) -> None:
        rising = _rank(new) > _rank(old)
        path = self._dump_path(status) if rising and new in _SEVERE else None
        info = {"level": new, "previous": old, "ratio": status.ratio, "rss": status.rss,
                "limit": status.heap_limit, "limitSource": status.limit_source,
                "secondsToLimit": status.seconds_to_limit,
                "dump": str(path) if path else None}
        self._log(rising, new, info)
        if self.callback is not None:
            self._call(new, info)

    def _dump_path(self, status: _reader.Status) -> str | None:
        """The pressure dump written for the sample that graded ``status``, once the
        watchdog is done with that sample; None if it wrote none (budget, cooldown)."""
        w = self.handle._w
        deadline = time.monotonic() + DUMP_WAIT
        while w.attached and int(w.words[_ring.W_TICK_DONE]) < status.samples:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        if not w.attached or int(w.words[_ring.W_PRESSURE_SAMPLE]) != status.samples:
            return None
        raw = bytes(w.buf[_ring.DUMP_NAME_AT : _ring.DUMP_NAME_AT + _ring.DUMP_NAME_SIZE])
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return os.path.join(self.handle.diagnostics_dir, name) if name else None

    def _log(self, rising: bool, level: str, info: dict[str, object]) -> None:
        if rising and level not in _SEVERE:
            return  # soft is for a status bar, not a log
        import logging

        from ._statusline import render

        logger = logging.getLogger(LOGGER)
        w = self.handle._w
        line = render(_reader.read_status(w.buf, w.words) if w.attached else None,
                      always=True)
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
    return ("normal", "soft", "hard", "critical").index(level)


def _takes_info(callback: Callable[..., object]) -> bool:
    """Whether ``callback(level, info)`` is its form; ``callback(level)`` is the old one."""
    import inspect

    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the old form
        return False
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)
