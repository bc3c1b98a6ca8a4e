"""The watchdog's reports to Sentry (docs/sentry.md): what the host's own SDK cannot
send, because it died with the host or was stuck in it.

A report is built from a dump already on disk, read back from its file: the event
holds nothing the dump does not (and much less: no argv, no paths), and the dump itself
rides along as an attachment. Sending comes after the disk, never before; it goes
through the real ``sentry-sdk`` (the ``sentry`` extra), loaded only when there is
something to send and set up with ``default_integrations=False``, no PII, no server
name and no module list. The envelope the SDK builds is posted by ``_Post``, at once
and with a short timeout, so the watchdog knows whether it arrived and says so in one
line; it never retries.

Deaths are sent before the watchdog exits (within SEND_TIMEOUT); reports of a host
still alive (a hang, a pressure dump) go from one background thread, so sampling never
waits for the network.
"""

from __future__ import annotations

import json
import os
import threading

from ._report import say

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SEND_TIMEOUT = 5.0  # seconds for one envelope's HTTP request
DEATH_KINDS = ("oom-killed", "killed", "crashed", "unknown")
# How processes are asked to stop (a deploy, systemctl stop, Ctrl-C, a closed terminal):
# a death by one of these is an end someone chose, not news for an error tracker.
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")
_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_SOURCES = {"cgroup-v1": "cgroup", "cgroup-v2": "cgroup", "configured": "configured",
            "ram": "RAM", "available": "available-memory", "rlimit-as": "RLIMIT_AS",
            "rlimit-data": "RLIMIT_DATA"}


def should_send(dump: dict[str, object], host_sdk: bool, pressure: bool) -> bool:
    """What the host's SDK cannot send: a death by signal (or of unknown cause), a hang,
    a descendant killed; an uncaught exception only when the host has no SDK of its
    own (it sent that one itself); hard and critical dumps only if asked."""
    trigger = dump.get("trigger")
    if trigger in ("host-died", "recovered"):
        end = _dict(_dict(dump.get("host")).get("exit"))
        kind = end.get("kind")
        if kind == "killed" and end.get("signal") in STOP_SIGNALS:
            return False
        if kind in DEATH_KINDS:
            return True
        return kind == "exited" and bool(end.get("exception")) and not host_sdk
    if trigger == "descendant-died":
        end = _dict(_dict(dump.get("descendant")).get("exit"))
        return end.get("kind") in DEATH_KINDS and end.get("signal") not in STOP_SIGNALS
    if trigger == "unresponsive":
        return _dict(dump.get("responsiveness")).get("state") == "unresponsive"
    return pressure and trigger in ("hard", "critical")


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def size(n: object) -> str:
    if not isinstance(n, (int, float)) or n < 0:
        return "?"
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {_SIZE_UNITS[unit]}" if unit else f"{int(value)} B"


def title(dump: dict[str, object]) -> str:
    """What a person reads first: "OOM-killed at 1.9 GiB of a 2.0 GiB cgroup limit
    while `tool:shell`"."""
    memory = _dict(dump.get("memory"))
    at = f"at {size(memory.get('rss'))}"
    if memory.get("heapLimit"):
        source = _SOURCES.get(str(memory.get("limitSource")), str(memory.get("limitSource")))
        at += f" of a {size(memory.get('heapLimit'))} {source} limit"
    activity = dump.get("lastActivity")
    during = f" while `{activity}`" if activity else ""
    trigger = dump.get("trigger")
    if trigger == "descendant-died":
        descendant = _dict(dump.get("descendant"))
        end = _dict(descendant.get("exit"))
        return (f"{descendant.get('name', '?')} (a descendant) {_how(end)} at "
                f"{size(descendant.get('rss'))}{during}")
    if trigger == "unresponsive":
        why = _dict(dump.get("responsiveness")).get("reason", "unknown")
        return f"Unresponsive ({why}) {at}{during}"
    if trigger in ("hard", "critical"):
        return f"Memory at {trigger} {at}{during}"
    return f"{_how(_dict(_dict(dump.get('host')).get('exit')))} {at}{during}"


def _how(end: dict[str, object]) -> str:
    kind, signal = end.get("kind"), end.get("signal")
    if kind == "oom-killed":
        return "OOM-killed"
    if kind == "killed":
        return f"Killed by {signal or 'a signal'}"
    if kind == "crashed":
        return f"Crashed with {signal or 'a signal'}"
    if kind == "exited" and end.get("exception"):
        return f"Died of an uncaught {end.get('exception')}"
    return "Died (how is unknown)"


def program(dump: dict[str, object]) -> str:
    """The program's name for grouping: the script of an interpreter (``train`` for
    ``python train.py``), else the command's base name."""
    from .cli.run import program_name

    argv = _dict(dump.get("host")).get("argv")
    if not isinstance(argv, list) or not argv or not isinstance(argv[0], str):
        return "unknown"
    return program_name([str(a) for a in argv]) or "unknown"


def event(dump: dict[str, object]) -> dict[str, object]:
    """The Sentry event for ``dump``: fields of the dump, nothing else."""
    trigger = str(dump.get("trigger"))
    host = _dict(dump.get("host"))
    end = _dict(host.get("exit") if trigger != "descendant-died"
                else _dict(dump.get("descendant")).get("exit"))
    memory = _dict(dump.get("memory"))
    name = program(dump)
    level = {"host-died": "fatal", "recovered": "fatal", "descendant-died": "error",
             "unresponsive": "error", "critical": "error"}.get(trigger, "warning")
    tags = {"trigger": trigger, "program": name, "session": dump.get("sessionId"),
            "limit.source": memory.get("limitSource"), "level": dump.get("level"),
            "exit.kind": end.get("kind"), "exit.signal": end.get("signal"),
            "exit.confidence": end.get("confidence")}
    what = title(dump)
    doc: dict[str, object] = {
        "level": level,
        "logger": "watchdog-core",
        "message": what,
        "fingerprint": ["watchdog-core", trigger, str(end.get("kind") or trigger),
                        str(end.get("signal") or ""), name],
        "tags": {k: str(v) for k, v in tags.items() if v is not None},
        "contexts": {
            "memory": {k: memory.get(k) for k in ("rss", "heapLimit", "ratio", "limitSource",
                                                  "growthBytesPerSecond", "secondsToLimit")
                       if memory.get(k) is not None},
            "session": _dict(dump.get("session")),
            "activity": {"last": dump.get("lastActivity"), "session": dump.get("sessionId"),
                         "timestamp": dump.get("timestamp")},
        },
    }
    frames = _frames(dump, end)
    if frames or end.get("signal") or end.get("exception"):
        doc["exception"] = {"values": [{
            "type": str(end.get("exception") or end.get("signal") or end.get("kind")),
            "value": what,
            "mechanism": {"type": "watchdog-core", "handled": False},
            **({"stacktrace": {"frames": frames}} if frames else {}),
        }]}
    return doc


def _frames(dump: dict[str, object], end: dict[str, object]) -> list[dict[str, object]]:
    """The frames the dump holds, oldest first as Sentry wants them: an uncaught
    exception's, else the crashed thread's from faulthandler's traceback: the block
    headed "Current thread" (every thread is listed, the watchdog's heartbeat thread
    among them), or the only one."""
    frames = end.get("frames")
    if isinstance(frames, list) and frames:
        return [{"filename": f.get("file"), "lineno": f.get("line"),
                 "function": f.get("function"), "in_app": _in_app(str(f.get("file")))}
                for f in frames if isinstance(f, dict)]
    text = dump.get("crashTraceback")
    if not isinstance(text, str):
        return []
    blocks: list[tuple[str, list[dict[str, object]]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith('File "') and '", line ' in line and blocks:
            path, _, rest = line[len('File "'):].partition('", line ')
            number, _, function = rest.partition(" in ")
            blocks[-1][1].append({"filename": path,
                                  "lineno": int(number) if number.isdigit() else None,
                                  "function": function or "?", "in_app": _in_app(path)})
        elif line and not line.startswith("File "):
            blocks.append((line, []))  # "Current thread 0x... (most recent call first):"
    crashed = [f for head, f in blocks if head.startswith("Current thread")] or [
        f for head, f in blocks if head.startswith("Stack")] or [f for _, f in blocks[-1:]]
    return crashed[0][::-1] if crashed else []


def _in_app(path: str) -> bool:
    """The program's own code, not the standard library's or an installed package's."""
    import sysconfig

    if "site-packages" in path or "dist-packages" in path or path.startswith("<"):
        return False
    stdlib = sysconfig.get_paths().get("stdlib") or ""
    return not (stdlib and path.startswith(stdlib + os.sep))


class Reporter:
    """Sends reports for one session, to the DSN of ``settings`` (``_sentry_host``)."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = settings
        self._queue: list[str] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def wants(self, dump: dict[str, object]) -> bool:
        return should_send(dump, bool(self.settings.get("hostSdk")),
                           bool(self.settings.get("pressure")))

    def send(self, path: str) -> bool:
        """Send the report of the dump at ``path`` now, if it is one to send; True
        once it arrived."""
        try:
            with open(path, "rb") as f:
                data = f.read()
            dump = json.loads(data)
        except (OSError, ValueError):
            return False
        if not isinstance(dump, dict) or not self.wants(dump):
            return False
        return _send(self.settings, dump, path, data)

    def send_later(self, path: str) -> None:
        """Queue the dump at ``path`` for the background thread."""
        with self._wake:
            self._queue.append(path)
            self._wake.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sentry", daemon=True)
            self._thread.start()

    def drain(self, timeout: float) -> None:
        """Give queued reports up to ``timeout`` seconds before the watchdog exits."""
        thread = self._thread
        if thread is not None:
            with self._wake:
                self._queue.append("")  # the end
                self._wake.notify()
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                path = self._queue.pop(0)
            if not path:
                return
            try:
                self.send(path)
            except Exception as exc:  # a bug of ours or of the SDK's: one line, carry on
                say(f"cannot send to Sentry: {type(exc).__name__}: {exc}")


_client_settings: dict[str, object] | None = None  # what the SDK was initialised with
_results: list[str] = []
_sending = threading.Lock()  # the background thread and the death's send share the SDK


def _send(settings: dict[str, object], dump: dict[str, object], path: str,
          data: bytes) -> bool:
    # The lock and the post are both bounded: a report stuck on a slow endpoint never
    # holds the next one (the death's) longer than one SEND_TIMEOUT.
    if not _sending.acquire(timeout=SEND_TIMEOUT):
        say(f"cannot send to Sentry ({_where(settings)}): the report before is still "
            f"being sent; {os.path.basename(path)} is not")
        return False
    try:
        return _send_locked(settings, dump, path, data)
    finally:
        _sending.release()


def _send_locked(settings: dict[str, object], dump: dict[str, object], path: str,
                 data: bytes) -> bool:
    try:
        import sentry_sdk
    except ImportError:
        say(f"cannot send to Sentry ({_where(settings)}): sentry-sdk is not installed "
            "(pip install 'watchdog-core[sentry]')")
        return False
    global _client_settings
    if _client_settings != settings:  # the first report, or the host told us others
        release, environment = settings.get("release"), settings.get("environment")
        sentry_sdk.init(
            dsn=str(settings["dsn"]), release=str(release) if release else None,
            environment=str(environment) if environment else None,
            default_integrations=False,
            auto_enabling_integrations=False, send_default_pii=False,
            include_local_variables=False, include_source_context=False,
            max_breadcrumbs=0, transport=_post_class(),
            before_send=_strip_unless(bool(release)))
        _client_settings = dict(settings)
    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(bytes=data, filename=os.path.basename(path),
                             content_type="application/json")
        for name in _extra_files(dump, path):
            try:
                with open(name, "rb") as f:
                    scope.add_attachment(bytes=f.read(), filename=os.path.basename(name),
                                         content_type="text/plain")
            except OSError:
                continue
        del _results[:]
        event_id = sentry_sdk.capture_event(event(dump))  # type: ignore[arg-type]
    outcome = _results[-1] if _results else "the SDK dropped it"
    if outcome == "sent":
        say(f"sent to Sentry as event {event_id}: {os.path.basename(path)}")
        return True
    say(f"cannot send to Sentry ({_where(settings)}): {outcome}")
    return False


def _strip_unless(release: bool) -> Any:
    """The event as the SDK hands it over, less what it adds of this machine: its host
    name (server_name), and a release it guessed (``git rev-parse HEAD`` in the
    working directory) when none was configured."""
    def strip(doc: Any, hint: Any) -> Any:
        doc.pop("server_name", None)
        if not release:
            doc.pop("release", None)
        return doc
    return strip


def _extra_files(dump: dict[str, object], path: str) -> list[str]:
    """The files written beside the dump that it names (its threads' stacks)."""
    folder = os.path.dirname(path)
    names = [v for v in _dict(dump.get("extras")).values() if isinstance(v, str)]
    return [os.path.join(folder, os.path.basename(n)) for n in names
            if n.endswith(".txt")]


def _where(settings: dict[str, object]) -> str:
    """The DSN's host, never its key."""
    import urllib.parse

    try:
        return urllib.parse.urlsplit(str(settings.get("dsn"))).hostname or "?"
    except ValueError:
        return "?"


def _post_class() -> type:
    """A transport that posts each envelope at once, with a timeout, and keeps the
    outcome: the SDK's own sends from a worker thread, and its failures go to a logger."""
    import urllib.error
    import urllib.request

    from sentry_sdk.transport import Transport

    class _Post(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            if self.parsed_dsn is None:
                _results.append("no DSN")
                return
            auth = self.parsed_dsn.to_auth("watchdog-core")
            # The DSN's scheme is http or https (_sentry_host.check_dsn), never file:.
            request = urllib.request.Request(  # noqa: S310
                auth.get_api_url(), data=envelope.serialize(),
                headers={"Content-Type": "application/x-sentry-envelope",
                         "X-Sentry-Auth": auth.to_header()})
            outcome: list[str] = []

            def post() -> None:
                try:
                    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as answer:  # noqa: S310
                        answer.read(1 << 16)
                    outcome.append("sent")
                except urllib.error.HTTPError as exc:
                    outcome.append(f"HTTP {exc.code} {exc.reason}")
                except (OSError, ValueError) as exc:
                    reason = getattr(exc, "reason", None) or exc
                    outcome.append(f"{type(exc).__name__}: {reason}")

            # urlopen's timeout is per socket operation: an endpoint that answers a
            # byte every few seconds would hold it for minutes. One deadline for all.
            thread = threading.Thread(target=post, name="sentry-post", daemon=True)
            thread.start()
            thread.join(SEND_TIMEOUT)
            _results.append(outcome[0] if outcome else
                            f"no answer within {SEND_TIMEOUT:g} s")

        def flush(self, timeout: float, callback: object = None) -> None:
            pass

        def kill(self) -> None:
            pass

    return _Post
