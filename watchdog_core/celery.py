"""Celery workers under watchdog-core: which task was running when a worker died
(docs/celery.md).

    # in the module that defines the Celery app, which every worker imports
    import watchdog_core.celery
    watchdog_core.celery.connect()          # start_watchdog()'s keyword arguments, if any

Connected through Celery's own signals, nothing patched:

- ``worker_process_init``: each child of the prefork pool starts a session of its own.
  The solo and threads pools have no children: there the worker's main process is the
  session (``worker_init``).
- ``task_prerun``: the task's name and id are the mark, ``task:{name}[{id}]`` (names
  are code; arguments are never recorded), and the stats say since when it runs and
  the RSS then; ``task_postrun`` marks ``idle:after:{name}[{id}]``.
- ``worker_process_shutdown``: a child that Celery recycles (``worker_max_tasks_per_child``,
  ``worker_max_memory_per_child``) or stops leaves through ``os._exit``, where atexit
  never runs: its session is stopped here, so a recycle is never a postmortem.
  ``worker_shutdown`` does the same for the main process of the other pools, which
  Celery ends with exit code 1 on Ctrl-C (and on a cold shutdown of the threads pool).

A child OOM-killed or crashed in a task gets a postmortem whose ``lastActivity`` names
the task, and whose stats say when it started.
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import _config

# The stats each task writes, in this order (one recorder).
STATS = ("tasksStarted", "tasksFinished", "taskRssAtStart", "taskStartedAt")


class _State:
    """This process's session, if the integration started one."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.connected = False
        self.reset()

    def reset(self) -> None:
        self.wd: Any = None
        self.record: Any = None
        self.rss: Any = None
        self.started = self.finished = 0
        self.pid = os.getpid()


_state = _State()


def connect(**start_options: Any) -> None:
    """Connect the integration to Celery's signals, once per process (a repeat call
    keeps the first call's options). ``start_options`` go to ``start_watchdog()``;
    ``session_id`` is not one of them: every process needs its own, made from the
    worker's node name."""
    if "session_id" in start_options:
        raise ValueError("session_id is chosen per worker process (celery-{node}-{hex}); "
                         "connect() takes start_watchdog()'s other arguments")
    from celery import signals

    if _state.connected:
        return
    _state.options = dict(start_options)
    signals.worker_init.connect(_worker_init, weak=False)
    signals.worker_process_init.connect(_process_init, weak=False)
    signals.worker_process_shutdown.connect(_process_shutdown, weak=False)
    signals.worker_shutdown.connect(_process_shutdown, weak=False)
    signals.task_prerun.connect(_task_prerun, weak=False)
    signals.task_postrun.connect(_task_postrun, weak=False)
    _state.connected = True


def session_id_for(node: str) -> str:
    """``celery-{node's first label}-{6 hex}``: a worker's node name is
    ``celery@host.example.com``; each process gets its own hex."""
    name = node.partition("@")[2] or node
    return _config.readable_session_id(f"celery-{name.split('.')[0]}")


def _start(node: str) -> None:
    if _state.wd is not None and _state.pid == os.getpid():
        return
    _state.reset()  # a forked child's copy of its parent's state is not its own
    from . import start_watchdog
    from ._rss import RssReader

    wd = start_watchdog(session_id=session_id_for(node), **_state.options)
    _state.wd = wd
    _state.record = wd.recorder(*STATS)
    _state.rss = RssReader()
    wd.mark("celery:ready")


def _worker_init(sender: Any = None, **_: Any) -> None:
    """The worker's main process, before its pool starts: a session only where no
    child will run tasks (solo, threads, gevent, eventlet)."""
    from celery.concurrency import get_implementation

    try:  # a name ("prefork", "threads"), a "module:Class" path or a class
        pool = get_implementation(getattr(sender, "pool_cls", None) or "prefork")
    except Exception:  # an unknown pool: Celery itself says so next
        return
    if pool.__module__.rsplit(".", 1)[-1] == "prefork":
        return  # its children are the sessions
    _start(str(getattr(sender, "hostname", "") or "celery"))


def _process_init(sender: Any = None, **_: Any) -> None:
    _start(str(sender or "celery"))


def _process_shutdown(**_: Any) -> None:
    wd = _state.wd
    if wd is not None and _state.pid == os.getpid():
        wd.stop()  # a recycle or a stop: never a postmortem
        _state.reset()


def _task_label(task: Any, task_id: Any) -> str:
    name = getattr(task, "name", None) or type(task).__name__
    return f"{name}[{task_id}]"


def _task_prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    if _state.wd is None or _state.pid != os.getpid():
        return
    _state.started += 1
    _state.record(_state.started, _state.finished, _state.rss(), time.time())
    _state.wd.mark(f"task:{_task_label(task, task_id)}")  # after: its slot has the stats


def _task_postrun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    if _state.wd is None or _state.pid != os.getpid():
        return
    _state.finished += 1
    _state.record(_state.started, _state.finished, _state.rss(), time.time())
    _state.wd.mark(f"idle:after:{_task_label(task, task_id)}")
