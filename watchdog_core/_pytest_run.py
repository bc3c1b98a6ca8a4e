"""``pytest --watchdog``: one watchdog session per process that runs tests (docs/pytest.md).

Registered as a plugin object by ``pytest_plugin`` only when ``--watchdog`` is given.
Every test is one ``mark()`` (its node id, parameter values replaced by their index:
``_pytest_ids``) between two records of numbers; so a postmortem's ``lastActivity`` is
the test that was running, its ``session`` stats say when it started and the RSS then,
and the ring saved beside it holds the tests before it.

Under pytest-xdist each worker is a session of its own, named from the run's
``testrunuid`` and its worker id, and the controller is one too: it chose the folder
every worker writes to, so it can find a dead worker's postmortem and say in its summary
how the worker died and in which test.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import time
import warnings

import pytest

from ._pytest_ids import NodeLabels
from ._rss import RssReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Generator
    from typing import Any

    from ._host import Watchdog

# What a worker gets from the controller (workerinput) and sends back (workeroutput).
_SESSION_KEY = "watchdog_core_session"
_DIR_KEY = "watchdog_core_dir"
_OUTPUT_KEY = "watchdog_core"
# The stats each test writes, in this order (one recorder: the ring's fast path).
STATS = ("testsStarted", "testsFinished", "testsFailed", "testIndex", "testRssAtStart",
         "testStartedAt")
_POSTMORTEM_WAIT = 10.0  # seconds the controller waits for a dead worker's postmortem
_PROJECT_MAX = 40  # characters of the project's name in a session id (64 at most)


class WatchedRun:
    """The plugin object of one watched pytest process: a plain run, an xdist worker,
    or an xdist controller."""

    PLUGIN_NAME = "watchdog-core"

    def __init__(self, config: pytest.Config, wd: Watchdog, top: int,
                 notes: list[str]) -> None:
        self.config = config
        self.wd = wd
        self.top = top
        self.notes = notes  # start_watchdog()'s warnings, said again in the summary
        self.worker_id: str | None = getattr(config, "workerinput", {}).get("workerid")
        self._record = wd.recorder(*STATS)
        self._rss = RssReader()
        self._label = NodeLabels()
        self._index: dict[str, int] = {}
        self._started = self._finished = self._failed = 0
        self._running: str | None = None  # the node id of the test running now
        self._running_failed = False
        # The `top` largest growths, as a heap: (growth, order, nodeid, before, after).
        self._growth: list[tuple[int, int, str, int, int]] = []
        # The controller's view of its workers.
        self._workers_top: list[tuple[int, int, str, int, int, str]] = []
        self._workers: dict[str, str] = {}  # worker id -> its session id
        self._worker_tests = 0
        self._dead: dict[str, str] = {}  # worker id -> its session id, for those that died
        self._crash_items: dict[str, str] = {}  # worker id -> the test xdist says it ran

    @classmethod
    def start(cls, config: pytest.Config) -> WatchedRun:
        top = config.getoption("watchdog_top")
        if top < 0:
            raise pytest.UsageError(f"--watchdog-top must be 0 or more, got {top}")
        workerinput = getattr(config, "workerinput", None)
        directory = config.getoption("watchdog_dir")
        project = _project_name(config)
        if workerinput is not None:  # an xdist worker: the controller named it
            session_id = workerinput.get(_SESSION_KEY) or worker_session_id(
                project, str(workerinput.get("workerid", "gw")),
                str(workerinput.get("testrunuid", "")))
            directory = workerinput.get(_DIR_KEY) or directory
        else:
            session_id = f"{project}-{os.urandom(3).hex()}"
        from . import start_watchdog

        with warnings.catch_warnings(record=True) as caught:
            # Said on stderr, never raised: a run with filterwarnings=error (or -W error)
            # must not die of a folder fallback.
            warnings.simplefilter("always")
            try:
                wd = start_watchdog(session_id=session_id, diagnostics_dir=directory,
                                    memory_limit=config.getoption("watchdog_memory_limit"))
            except ValueError as exc:
                raise pytest.UsageError(_option_error(exc)) from None
        notes = [_note(str(w.message)) for w in caught]
        for note in notes:
            sys.stderr.write(f"{note}\n")
        wd.mark("pytest:collecting")
        return cls(config, wd, top, notes)

    # -- every process that runs tests -----------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # The position in the collection, as --collect-only lists it and as xdist counts.
        self._index = {item.nodeid: i for i, item in enumerate(session.items)}

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, object, object]:
        nodeid = item.nodeid
        index, before, started_at = self._index.get(nodeid, -1), self._rss(), time.time()
        self._started += 1
        self._running, self._running_failed = nodeid, False
        self._record(self._started, self._finished, self._failed, index, before, started_at)
        self.wd.mark(self._label(item))  # after the record: its slot carries the numbers
        try:
            return (yield)
        finally:
            after = self._rss()
            self._finished += 1
            self._running = None
            self._record(self._started, self._finished, self._failed, index, before,
                         started_at)
            if self.top:
                entry = (after - before, -self._started, nodeid, before, after)
                if len(self._growth) < self.top:
                    heapq.heappush(self._growth, entry)
                else:
                    heapq.heappushpop(self._growth, entry)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and not self._running_failed and report.nodeid == self._running:
            self._running_failed = True  # once per test: setup, call and teardown
            self._failed += 1

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Another plugin's end of session (coverage combining, say) is not the last test.
        self.wd.mark("pytest:sessionfinish")
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[_OUTPUT_KEY] = {"top": self._growth, "tests": self._started}

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.worker_id is not None:  # a worker's summary is its controller's
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "watchdog-core")
        for note in self.notes:
            write(note)
        tested = self._started + self._worker_tests
        if self.top and tested:
            rows = self._top_rows()
            across = f", across {len(self._workers)} workers" if self._workers else ""
            if not rows:
                write(f"no test grew RSS (of {tested}{across})")
            else:
                write(f"tests that grew RSS the most (top {len(rows)} of {tested}{across}):")
                for growth, nodeid, before, after, worker in rows:
                    where = f"[{worker}] " if worker else ""
                    write(f"  {_signed(growth):>11}  {where}{nodeid}  (rss {_size(before)} "
                          f"-> {_size(after)})")
        for worker in sorted(self._dead):
            write(self._death_line(worker, self._dead[worker]))
        if self.wd.disabled_reason:
            write(f"watchdog-core was disabled: {self.wd.disabled_reason}")
            return
        sessions = f"session {self.wd.session_id}"
        workers = sorted(self._workers.values())
        if len(workers) > 3:
            sessions += f", workers {workers[0]} ... {workers[-1]} ({len(workers)})"
        elif workers:
            sessions += f", workers {', '.join(workers)}"
        write(f"diagnostics: {self.wd.diagnostics_dir} ({sessions})")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # The run ended as pytest ends, whatever its exit status: a clean end, no
        # postmortem. Only a process that dies before this point gets one.
        self.wd.stop()
        self._rss.close()

    # -- the xdist controller ----------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: object) -> None:
        workerinput: dict[str, object] = getattr(node, "workerinput")  # noqa: B009
        worker = str(workerinput["workerid"])
        session_id = worker_session_id(_project_name(self.config), worker,
                                       str(workerinput["testrunuid"]))
        workerinput[_SESSION_KEY] = session_id
        if self.wd.diagnostics_dir is not None:
            workerinput[_DIR_KEY] = str(self.wd.diagnostics_dir)  # the folder we settled
        self._workers[worker] = session_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        worker = _worker_of(node)
        output = getattr(node, "workeroutput", None)
        if error is None and isinstance(output, dict) and _OUTPUT_KEY in output:
            ours = output[_OUTPUT_KEY]
            self._worker_tests += int(ours.get("tests", 0))
            for growth, order, nodeid, before, after in ours.get("top", ()):
                self._workers_top.append((growth, order, nodeid, before, after, worker))
        elif error is not None and error != "keyboard-interrupt" and worker in self._workers:
            self._dead[worker] = self._workers[worker]

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport,
                               sched: object) -> None:
        self._crash_items[_worker_of(getattr(report, "node", None))] = crashitem

    # -- the summary ---------------------------------------------------------------------

    def _top_rows(self) -> list[tuple[int, str, int, int, str]]:
        rows = [(g, o, n, b, a, self.worker_id or "") for g, o, n, b, a in self._growth]
        rows += self._workers_top
        rows = [row for row in rows if row[0] > 0]
        rows.sort(key=lambda row: (-row[0], -row[1]))
        return [(g, n, b, a, w) for g, _, n, b, a, w in rows[: self.top]]

    def _death_line(self, worker: str, session_id: str) -> str:
        """One line on a worker that died: how, in which test, its memory against its
        limit, and the postmortem's path."""
        path, doc = find_postmortem(str(self.wd.diagnostics_dir), session_id,
                                    _POSTMORTEM_WAIT)
        crashitem = self._crash_items.get(worker)
        if doc is None:
            running = f" while running {crashitem}" if crashitem else ""
            return (f"worker {worker} died{running}: no postmortem of session {session_id} "
                    f"in {self.wd.diagnostics_dir} yet (`watchdog-core gc` writes the "
                    "ones whose watchdog died too)")
        host = doc.get("host") or {}
        exit_ = host.get("exit") or {}
        how = str(exit_.get("kind") or "unknown")
        if exit_.get("signal"):
            how += f" ({exit_['signal']})"
        elif exit_.get("exitCode") is not None:
            how += f" (exit code {exit_['exitCode']})"
        test = str(doc.get("lastActivity") or crashitem or "no test")
        if test.startswith("pytest:"):
            test = f"no test ({test})"
        memory = doc.get("memory") or {}
        rss, limit = memory.get("rss"), memory.get("heapLimit")
        against = f"rss {_size(rss)}"
        if limit:  # the ratio is the limit's own usage: a cgroup's counts every process
            against += (f", {float(memory.get('ratio') or 0):.0%} of its "
                        f"{_size(limit)} limit ({memory.get('limitSource', '?')})")
        return f"worker {worker} died: {how} while running {test}; {against}: {path}"


def find_postmortem(directory: str, session_id: str,
                    wait: float) -> tuple[str | None, dict[str, Any] | None]:
    """The newest complete ``host-died`` dump of ``session_id`` in ``directory``, waiting
    up to ``wait`` seconds for its watchdog to finish writing it: (path, document)."""
    deadline = time.monotonic() + wait
    prefix = f"memory-{session_id}-"
    while True:
        found: tuple[str | None, dict[str, Any] | None] = (None, None)
        try:
            names = sorted(name for name in os.listdir(directory)
                           if name.startswith(prefix) and name.endswith(".json")
                           and _is_stem(name[len(prefix) : -len(".json")]))
        except OSError:
            names = []
        for name in reversed(names):
            path = os.path.join(directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("trigger") == "host-died":
                found = (path, doc)
                if doc.get("collectionComplete"):
                    return found
                break
        if time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def _is_stem(text: str) -> bool:
    """A dump's timestamp, ``20261129T152142.669478Z``: nothing else of the session id."""
    return (len(text) == 23 and text[8] == "T" and text[15] == "." and text[-1] == "Z"
            and (text[:8] + text[9:15] + text[16:22]).isdigit())


def worker_session_id(project: str, worker: str, testrunuid: str) -> str:
    """``{project}-{worker}-{run}``: ``gw0`` comes back in every run, the run's id does
    not (its first 8 hex digits)."""
    return f"{project}-{_clean(worker)[:8] or 'gw'}-{_clean(testrunuid)[:8] or 'run'}"


def _project_name(config: pytest.Config) -> str:
    """The rootdir's name cut to the session-id alphabet ("pytest" when none is left)."""
    return _clean(config.rootpath.name)[:_PROJECT_MAX].rstrip(".-") or "pytest"


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _clean(name: str) -> str:
    """Each run of characters outside a session id's alphabet becomes one ``-``; no
    leading ``.`` or ``-`` (a hidden file, an option)."""
    out: list[str] = []
    for ch in name:
        if ch in _ALPHABET:
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    return "".join(out).lstrip(".-")


def _worker_of(node: object) -> str:
    gateway = getattr(node, "gateway", None)
    return str(getattr(gateway, "id", "?"))


def _option_error(exc: ValueError) -> str:
    """start_watchdog()'s message in the words of the command line."""
    message = str(exc)
    for argument, option in (("memory_limit", "--watchdog-memory-limit"),
                             ("diagnostics_dir", "--watchdog-dir")):
        message = message.replace(argument, option)
    return message


def _note(message: str) -> str:
    return message if message.startswith("watchdog-core") else f"watchdog-core: {message}"


def _size(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if abs(value) < 1 << 20:
        return f"{value / 1024:.0f} KiB"
    if abs(value) < 1 << 30:
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value / (1 << 30):.1f} GiB"


def _signed(value: int) -> str:
    return ("+" if value >= 0 else "-") + _size(abs(value))
