"""watchdog_core.celery with a real Celery worker and a real broker (kombu's
filesystem transport, which needs no server), in a real memory cgroup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("celery")

SECRET = "sk-live-celery-SECRET-argument"
TASKS = """
import os, time
from celery import Celery
import watchdog_core.celery

BROKER = os.environ["WDC_BROKER"]
app = Celery("tasks", broker="filesystem://")
app.conf.update(
    broker_transport_options={"data_folder_in": BROKER, "data_folder_out": BROKER,
                              "control_folder": BROKER + "-control"},
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1)
watchdog_core.celery.connect(diagnostics_dir=os.environ["WDC_DIAG"], interval=0.05)


@app.task(name="tasks.balloon")
def balloon(token):
    hold = []
    while True:  # until the kernel's OOM killer ends this process
        hold.append(bytearray(b"x") * (4 << 20))
        time.sleep(0.005)


@app.task(name="tasks.touch")
def touch(path):
    open(path, "w").close()
    return 1
"""


class Worker:
    """``celery -A tasks worker`` in ``folder``, optionally in a memory cgroup."""

    def __init__(self, folder: Path, *options: str, cgroup: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.folder = folder
        (folder / "tasks.py").write_text(TASKS)
        (folder / "broker").mkdir()
        (folder / "broker-control").mkdir()
        self.diag = folder / "diag"
        self.env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{folder}",
                        WDC_BROKER=str(folder / "broker"), WDC_DIAG=str(self.diag))
        self.env.pop("WATCHDOG_CORE_DISABLE", None)
        self.env.update(env or {})
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--loglevel",
                "INFO", "--without-heartbeat", "--without-gossip", "--without-mingle",
                *options]
        if cgroup is not None:
            argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh",
                    *argv]
        self.log = folder / "worker.log"
        with self.log.open("w") as log:  # the worker has its own copy
            self.proc = subprocess.Popen(argv, cwd=folder, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)  # its group: kill()
        self.wait_log(" ready.")

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"no {text!r}: {self.log.read_text()}"
            time.sleep(0.05)

    def send(self, name: str, *args: str) -> str:
        code = ("import sys, tasks; print(tasks.app.send_task(sys.argv[1], "
                "args=sys.argv[2:]).id)")
        done = subprocess.run([sys.executable, "-c", code, name, *args], cwd=self.folder,
                              env=self.env, capture_output=True, text=True, timeout=60,
                              check=True)
        return done.stdout.strip().splitlines()[-1]

    def dumps(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in sorted(self.diag.glob("*.json"))]

    def postmortems(self, n: int = 1, timeout: float = 60) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.dumps() if d["trigger"] == "host-died"
                     and d.get("collectionComplete")]
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """A warm shutdown (SIGTERM), as a deploy or systemd does, or ``sig``; the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.5)  # the last children's watchdogs end after them
        return self.log.read_text()

    def kill(self) -> None:
        """The worker and its children at once, after a test that has its answer: a
        shutdown after an OOM kill takes Celery seconds. The children's watchdogs (in
        sessions of their own) see their hosts die and end themselves."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def _holders(folder: Path) -> bool:
    """Is a process still writing into ``folder`` (a watchdog finishing a postmortem)?"""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if str(folder) in os.readlink(fd):
                    return True
        except OSError:
            continue
    return False


@pytest.fixture
def worker_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    workers: list[Worker] = []

    def start(*options: str, cgroup: Path | None = None,
              env: dict[str, str] | None = None) -> Worker:
        worker = Worker(tmp_path, *options, cgroup=cgroup, env=env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()
    for worker in workers:  # every process of the worker gone: no segment of theirs left
        deadline = time.monotonic() + 30
        while any(worker.diag.glob("*.tmp")) or _holders(worker.diag):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_an_oom_killed_task_is_named(memory_cgroup, worker_factory, pool: str) -> None:
    # memory_cgroup first: torn down last, once the worker is gone from it
    worker = worker_factory("--pool", pool, "--concurrency", "1", cgroup=memory_cgroup)
    task_id = worker.send("tasks.balloon", SECRET)
    (dump,) = worker.postmortems()
    assert dump["lastActivity"] == f"task:tasks.balloon[{task_id}]"
    end = dump["host"]["exit"]  # type: ignore[index]
    assert (end["kind"], end["signal"]) == ("oom-killed", "SIGKILL"), end
    session = dump["session"]
    assert isinstance(session, dict)
    assert session["tasksStarted"] == session["tasksFinished"] + 1
    assert 0 < time.time() - session["taskStartedAt"] < 600
    assert session["taskRssAtStart"] > 0
    assert str(dump["sessionId"]).startswith("celery-")
    for path in worker.diag.iterdir():  # the task's argument is nowhere on disk
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path.name
    if pool == "prefork":
        assert worker.proc.poll() is None  # the worker lives on (its pool replaces the child)


def test_with_sentry_the_event_names_the_task(memory_cgroup, worker_factory) -> None:
    pytest.importorskip("sentry_sdk")
    from tests.integration.test_sentry import Ingest

    ingest = Ingest()
    try:
        worker = worker_factory("--pool", "prefork", "--concurrency", "1",
                                cgroup=memory_cgroup,
                                env={"SENTRY_DSN": ingest.dsn, "WATCHDOG_CORE_SENTRY": "1"})
        task_id = worker.send("tasks.balloon", SECRET)
        (envelope,) = ingest.wait()
    finally:
        ingest.close()
    event = envelope["event"]
    assert event["message"].startswith("OOM-killed at ")
    assert event["message"].endswith(f" while `task:tasks.balloon[{task_id}]`")
    assert SECRET.encode() not in envelope["raw"]


def test_recycled_children_leave_no_postmortem(worker_factory, tmp_path: Path) -> None:
    worker = worker_factory("--pool", "prefork", "--concurrency", "1",
                            "--max-tasks-per-child", "1")
    done = tmp_path / "done"
    done.mkdir()
    for i in range(3):
        worker.send("tasks.touch", str(done / str(i)))
    deadline = time.monotonic() + 60
    while len(list(done.iterdir())) < 3:
        assert time.monotonic() < deadline, worker.log.read_text()
        time.sleep(0.05)
    log = worker.stop()
    assert worker.dumps() == [], log
    assert "postmortem" not in log
    assert [n for n in os.listdir("/dev/shm") if "celery-" in n and str(worker.proc.pid)
            in n] == []


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_ctrl_c_of_a_worker_without_children_leaves_no_postmortem(worker_factory,
                                                                 tmp_path: Path,
                                                                 pool: str) -> None:
    """Celery exits 1 on Ctrl-C: without worker_shutdown's stop() that looked like a
    death."""
    worker = worker_factory("--pool", pool, "--concurrency", "2")
    done = tmp_path / "done"
    done.mkdir()
    worker.send("tasks.touch", str(done / "0"))
    deadline = time.monotonic() + 60
    while not list(done.iterdir()):
        assert time.monotonic() < deadline, worker.log.read_text()
        time.sleep(0.05)
    log = worker.stop(signal.SIGINT)
    assert worker.dumps() == [], log


def test_connect_refuses_a_session_id() -> None:
    import watchdog_core.celery

    with pytest.raises(ValueError, match="session_id"):
        watchdog_core.celery.connect(session_id="one-for-all")
