"""One watchdog per user instead of one per session: a prototype, measured the way
benchmarks/scale.py measures one watchdog per session, side by side in one run.

    .venv/bin/python benchmarks/per_user.py --sessions 16 64 256 --compare

The prototype (crashpad's shape: one handler, many clients):

- one per-user watchdog, a fresh interpreter (``per_user.py --serve SOCKET``), listens on
  a Unix socket;
- N hosts run scale.py's HOST (8 stats every 10 ms, one dump when asked) behind a few
  lines that swap one function, ``_spawn.spawn_watchdog``, the one place a host starts
  its watchdog. The swap takes the watchdog's lock on the new segment as ever, then
  hands the ring over instead of spawning: that descriptor, the host's pidfd and the
  control pipe's read end go over the socket (SCM_RIGHTS) with the ring's name, and the
  host waits for the adoption. Everything else on the host side (the ring, its header,
  the hooks, the heartbeat, the crash file, ``wd.dump()``) is the package's own code;
- the per-user watchdog builds the real ``Watcher`` for each ring it adopts and drives
  them all from one poll loop, as ``Watcher.run`` drives one: ``_tick()`` (sample, grade,
  status block, pressure dumps, hangs) when due, then ``next_delay()`` for the next
  one, the kernel's wake-ups armed after the first sample, ``answer_requests()``; the
  pidfd turning readable -> ``host_ended()``, the real postmortem path; the control
  pipe's EOF with ``stopped`` -> the end of ``stop()``; an exec -> ``end_after_exec()``.
  The process-wide parts (OOM priority, the wake signal, the orphan scan) are done once.

For each count N, step for step as scale.py:

- the per-user watchdog's CPU (and nothing else's) as a share of one core over
  ``--seconds``, its USS and PSS (smaps_rollup), and, for both shapes, the samples each
  ring had per second over its life (its tick word over its age): the one loop samples
  as often as N watchdogs do;
- every session asks for a dump at once: the time until the last is on disk, and the
  memory after;
- every host SIGKILLed at once: the time until the last postmortem is complete on disk,
  that there are N distinct ones (and what they say of the deaths), no ``.tmp`` left.
  Retention is raised as scale.py raises it;
- the shared failure domain: N fresh hosts, the per-user watchdog SIGKILLed, the hosts
  SIGKILLed 0.5 s later. The postmortems written then (none can be), and ``watchdog-core
  gc`` at once on the rings left in /dev/shm: how many it recovers, how long it takes,
  what those say.

``--compare`` runs scale.py's ``measure()`` at the same counts in the same invocation.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import select
import signal
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from watchdog_core import _reader, _ring, _shm

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from watchdog_core._watchdog import Watcher

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
KILL_DELAY = 0.5  # seconds between the per-user watchdog's death and its hosts'
# Put in front of scale.py's HOST (its code, unchanged, follows): the host's watchdog is
# handed over to the per-user watchdog instead of spawned.
HAND_OVER = """
import json, os, socket, sys, time
import watchdog_core
from watchdog_core import _shm, _spawn

class UserWatchdogProcess(_spawn.WatchdogProcess):
    # Not our child: alive while its pid is; nothing to wait for or reap.
    __slots__ = ()

    def alive(self):
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def wait(self, timeout):
        return True

    def reap_later(self):
        pass

def hand_over(shm_name, config):
    lock_fd = _shm.lock_for_watchdog(shm_name)  # as spawn_watchdog: never a lockless ring
    pidfd = ctl_read = ctl_write = -1
    try:
        pidfd = os.pidfd_open(os.getpid())
        ctl_read, ctl_write = os.pipe()
        offer = json.dumps({"shm": shm_name, "suggestions": config.suggestion}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(os.environ["WDC_PER_USER_SOCKET"])
            socket.send_fds(s, [offer], [lock_fd, pidfd, ctl_read])
            pid = int(s.recv(32) or b"0")  # its pid, once it holds the ring
        if not pid:
            raise OSError("the per-user watchdog did not adopt the ring")
    except BaseException:
        if ctl_write >= 0:
            os.close(ctl_write)
        raise
    finally:
        _shm.release(lock_fd)  # the watchdog's copy holds the lock now
        for fd in (pidfd, ctl_read):
            if fd >= 0:
                os.close(fd)
    return UserWatchdogProcess(pid, ctl_write)

_spawn.spawn_watchdog = hand_over
"""


# -- the per-user watchdog (its own interpreter: per_user.py --serve SOCKET) -------------

class Adopted:
    """One session handed over: its Watcher and the host's descriptors."""

    __slots__ = ("watcher", "lock_fd", "pidfd", "ctl", "channel_open", "next_sample",
                 "armed")

    def __init__(self, watcher: Watcher, lock_fd: int, pidfd: int, ctl: int) -> None:
        self.watcher = watcher
        self.lock_fd = lock_fd
        self.pidfd = pidfd
        self.ctl = ctl
        self.channel_open = True
        self.next_sample = 0.0
        self.armed = False  # the kernel's wake-ups, armed after the first sample


class UserWatchdog:
    """Every adopted session of this user, from one poll loop: ``Watcher.run``'s steps,
    per session. Sessions wait in a heap by their next sample, so a turn costs what is
    due, not a look at every session (N watchdogs would not pay that either)."""

    def __init__(self, listener: socket.socket, wake: int) -> None:
        self.listener = listener
        self.wake = wake
        self.poller = select.poll()
        self.poller.register(listener.fileno(), select.POLLIN)
        self.poller.register(wake, select.POLLIN)
        self.by_pidfd: dict[int, Adopted] = {}
        self.by_ctl: dict[int, Adopted] = {}
        self.schedule: list[tuple[float, int, Adopted]] = []  # stale entries are skipped
        self.order = itertools.count()  # ties in the heap never compare sessions
        self.orphans_checked = False

    def plan(self, session: Adopted, at: float) -> None:
        session.next_sample = at
        heapq.heappush(self.schedule, (at, next(self.order), session))

    def adopt_pending(self) -> None:
        from watchdog_core._report import say

        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    self._adopt(conn)
                except (OSError, ValueError, KeyError) as exc:
                    say(f"cannot adopt a session: {exc!r}")

    def _adopt(self, conn: socket.socket) -> None:
        from watchdog_core._watchdog import Watcher

        message, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        try:
            lock_fd, pidfd, ctl = fds
            offer = json.loads(message)
            os.set_blocking(ctl, False)
            watcher = Watcher(offer["shm"], lock_fd, pidfd, ctl, offer.get("suggestions", {}))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        session = Adopted(watcher, lock_fd, pidfd, ctl)
        self.by_pidfd[pidfd] = session
        self.by_ctl[ctl] = session
        self.poller.register(pidfd, select.POLLIN)
        self.poller.register(ctl, select.POLLIN)
        self.plan(session, time.monotonic())  # the first sample at once, as Watcher.run
        conn.sendall(str(os.getpid()).encode())

    def forget(self, session: Adopted) -> None:
        """The session is over: what its own watchdog's exit would have closed."""
        self.by_pidfd.pop(session.pidfd, None)
        self.by_ctl.pop(session.ctl, None)
        self.poller.unregister(session.pidfd)
        if session.channel_open:
            self.poller.unregister(session.ctl)
        session.watcher.oom.close()
        session.watcher.writer.store.close()
        for fd in (session.pidfd, session.ctl, session.lock_fd):
            os.close(fd)

    def adopted(self, session: Adopted) -> bool:
        return self.by_pidfd.get(session.pidfd) is session

    def next_due(self) -> float | None:
        schedule = self.schedule
        while schedule:
            at, _, session = schedule[0]
            if self.adopted(session) and at == session.next_sample:
                return at
            heapq.heappop(schedule)  # ended, or planned anew since
        return None

    def run(self) -> None:
        from watchdog_core._watchdog import _read_nonblocking

        while True:
            due = self.next_due()
            timeout = 1.0 if due is None else max(0.0, due - time.monotonic())
            ended: list[Adopted] = []
            answer: dict[int, Adopted] = {}  # by pidfd: each answered once a turn
            for fd, revents in self.poller.poll(timeout * 1000):
                if fd == self.listener.fileno():
                    self.adopt_pending()
                elif fd == self.wake:
                    _read_nonblocking(self.wake)  # the requests themselves are in the rings
                    answer.update(self.by_pidfd)
                elif (session := self.by_pidfd.get(fd)) is not None:
                    ended.append(session)
                elif (session := self.by_ctl.get(fd)) is not None:
                    if not _read_nonblocking(fd):
                        self.poller.unregister(fd)
                        session.channel_open = False
                    answer[session.pidfd] = session
                else:
                    self._kernel_wakeup(fd, revents)
            for session in ended:
                self._contained(session, self._host_ended)
            for session in list(answer.values()):
                if not self.adopted(session) or self._contained(session, self._stopped):
                    del answer[session.pidfd]
            now = time.monotonic()
            while (due := self.next_due()) is not None and due <= now:
                session = heapq.heappop(self.schedule)[2]
                if self._contained(session, self._step):
                    answer[session.pidfd] = session
            for session in answer.values():
                if self.adopted(session):
                    session.watcher._guarded(session.watcher.answer_requests)
            if not self.orphans_checked and self.by_pidfd:
                self.orphans_checked = True  # once per process, not once per session
                first = next(iter(self.by_pidfd.values())).watcher
                first._guarded(first.recover_orphans)

    def _contained(self, session: Adopted, step: Callable[[Adopted], bool]) -> bool:
        """One session's step. What Watcher.run leaves unguarded would end one watchdog;
        here it would end every session's: it ends only this one."""
        try:
            return step(session)
        except Exception as exc:  # deliberately broad: see the docstring
            from watchdog_core._report import say

            say(f"internal error in {step.__name__} ({exc!r}): session "
                f"{session.watcher.shm_name} dropped, the others watched on")
            if self.adopted(session):
                self.forget(session)
            return False

    def _host_ended(self, session: Adopted) -> bool:
        session.watcher.host_ended()
        self.forget(session)
        return False

    def _kernel_wakeup(self, fd: int, revents: int) -> None:
        """One of the kernel's memory notifications (``_wakeups``): that host now."""
        for session in self.by_pidfd.values():
            wakeups = session.watcher.wakeups
            if wakeups is not None and fd in wakeups.events:
                if wakeups.drain(fd, revents):
                    self.plan(session, time.monotonic())
                return

    def _stopped(self, session: Adopted) -> bool:
        """stop(): the host closed its channel with the stopped flag set. No postmortem,
        the segment goes (Watcher.run's check)."""
        watcher = session.watcher
        if session.channel_open or not watcher.words[_ring.W_FLAGS] & _ring.FLAG_STOPPED:
            return False
        watcher.close()
        _shm.unlink_segment(watcher.shm_name, session.lock_fd)
        self.forget(session)
        return True

    def _step(self, session: Adopted) -> bool:
        """A due sample of one session, as Watcher.run takes it; True while it goes on."""
        watcher = session.watcher
        if self._stopped(session):
            return False
        started = time.monotonic()
        if not watcher._guarded(watcher._tick):
            watcher.host_ended()
            self.forget(session)
            return False
        delay = watcher._guarded(watcher.next_delay, on_error=watcher.interval)
        self.plan(session, started + float(delay))  # type: ignore[arg-type]
        if watcher._guarded(watcher.host_replaced, on_error=False):
            watcher.end_after_exec()
            self.forget(session)
            return False
        if not session.armed:  # as Watcher.run, after the first sample
            session.armed = True
            watcher._guarded(partial(watcher.arm_wakeups, self.poller))
        return True


def serve(path: str) -> int:
    from watchdog_core._watchdog import _listen_for_requests, _lower_oom_priority

    _lower_oom_priority()
    wake = _listen_for_requests()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)
    listener.setblocking(False)
    print(os.getpid(), flush=True)  # ready
    UserWatchdog(listener, wake).run()
    return 0


# -- the measurement ----------------------------------------------------------------------

class Fleet:
    """The per-user watchdog and N hosts handed over to it, in a scratch folder; all of
    it (processes, segments, the folder) gone on exit, whatever happened."""

    def __init__(self, n: int, tag: str, host: str) -> None:
        import tempfile

        self.n = n
        self.host = host
        self.prefix = f"{tag}-{n}-"  # our session ids; nobody else's segments are touched
        self.scratch = tempfile.TemporaryDirectory(prefix="wdc-peruser-")
        self.folder = Path(self.scratch.name) / "dumps"
        self.folder.mkdir(mode=0o700)
        self.socket = str(Path(self.scratch.name) / "user.sock")
        self.flag = self.folder / ".dump-now"  # scale.py's: every session dumps at once
        self.log = Path(self.scratch.name) / "user-watchdog.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("WATCHDOG_CORE_DISABLE", None)
        env["WATCHDOG_CORE_MAX_FILES"] = str(max(100, 2 * n))  # as scale.py
        env["WATCHDOG_CORE_MAX_BYTES"] = str(max(256 << 20, 4 * n << 20))
        env["WDC_PER_USER_SOCKET"] = self.socket
        self.env = env
        self.watchdog: subprocess.Popen[str] | None = None
        self.hosts: list[subprocess.Popen[str]] = []
        self.names: list[str] = []

    def __enter__(self) -> Fleet:
        import subprocess

        import scale

        try:
            with self.log.open("w") as log:
                self.watchdog = subprocess.Popen(
                    [sys.executable, "-P", __file__, "--serve", self.socket],
                    stdout=subprocess.PIPE, stderr=log, text=True, env=self.env,
                    start_new_session=True)
            assert self.watchdog.stdout is not None
            self.watchdog_pid = int(self.watchdog.stdout.readline())
            self.hosts = [subprocess.Popen(
                [sys.executable, "-c", self.host, str(self.folder), f"{self.prefix}{i}",
                 str(self.flag)], stdout=subprocess.PIPE, text=True, env=self.env)
                for i in range(self.n)]
            self.names = [h.stdout.readline().strip() for h in self.hosts]  # type: ignore[union-attr]
            for name in self.names:
                assert name.startswith(_shm.PREFIX), f"a host was not adopted: {name!r}"
                assert scale.watchdog_of(name) == self.watchdog_pid, f"{name} is not adopted"
        except BaseException:
            self.__exit__()
            raise
        return self

    def kill_hosts(self) -> float:
        killed_at = time.monotonic()
        for h in self.hosts:
            os.kill(h.pid, signal.SIGKILL)
        return killed_at

    def __exit__(self, *exc: object) -> None:
        for h in self.hosts:
            if h.poll() is None:
                h.kill()
            h.wait()
            if h.stdout is not None:
                h.stdout.close()
        if self.watchdog is not None:
            if self.watchdog.poll() is None:
                self.watchdog.kill()
            self.watchdog.wait()
            if self.watchdog.stdout is not None:
                self.watchdog.stdout.close()
        for name in _shm.list_segments():
            if name.startswith(_shm.PREFIX + self.prefix):
                _shm.unlink_segment(name)
        self.scratch.cleanup()

    def log_lines(self, text: str) -> int:
        return sum(text in line for line in self.log.read_text().splitlines())


def sampling_rate(names: list[str]) -> float:
    """Samples per second each ring has had since it was made (its tick word over its
    age), averaged over the rings: the same reading for both shapes."""
    rates = []
    for name in names:
        mapping = _shm.open_segment(name)
        try:
            with (memoryview(mapping) as buf, buf.cast("Q") as words,
                  _reader.RingImage(buf) as image):
                age = (time.monotonic_ns() - image.created_mono_ns) / 1e9
                rates.append(int(words[_ring.W_TICK_DONE]) / age)
        finally:
            mapping.close()
    return sum(rates) / len(rates)


def postmortems(folder: Path, trigger: str) -> list[dict[str, Any]]:
    """The complete postmortems of ``trigger`` in ``folder``."""
    out = []
    for path in folder.glob("memory-*.json"):
        try:
            dump = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if dump.get("trigger") == trigger and dump.get("collectionComplete"):
            out.append(dump)
    return out


def exits(dumps: list[dict[str, Any]]) -> str:
    """How the postmortems name the hosts' ends: ``kind signal (confidence) xcount``."""
    counts: dict[str, int] = {}
    for dump in dumps:
        end = dump.get("host", {}).get("exit") or {}
        key = " ".join(str(end[k]) for k in ("kind", "signal") if end.get(k) is not None)
        key = f"{key or '?'} ({end.get('confidence', '?')})"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "-"


def measure(n: int, seconds: float, tag: str) -> dict[str, Any]:
    """scale.py's measure(), step for step, of the per-user shape."""
    import scale

    with Fleet(n, tag, HAND_OVER + scale.HOST) as fleet:
        time.sleep(3.0)  # starting up is not watching
        pid = fleet.watchdog_pid
        before = scale.cpu_seconds(pid)
        start = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - start
        cpu = (scale.cpu_seconds(pid) - before) / elapsed
        rate = sampling_rate(fleet.names)
        uss, pss = scale.uss_pss(pid)
        fleet.flag.touch()  # every session asks for a dump at once
        dumps_last = scale._all_dumps(fleet.folder, n, "manual", time.monotonic())
        uss_dumped, pss_dumped = scale.uss_pss(pid)
        killed_at = fleet.kill_hosts()
        last = scale._all_dumps(fleet.folder, n, "host-died", killed_at)
        dumps = postmortems(fleet.folder, "host-died")
        leftovers = [p.name for p in fleet.folder.iterdir() if ".tmp" in p.name]
        faults = fleet.log_lines("internal error")
    return {"cpu_all": cpu * 100, "cpu_each": cpu * 100 / n, "uss_all": uss / MIB,
            "pss_all": pss / MIB, "pss_each": pss / MIB / n, "samples": rate,
            "dumps_last": dumps_last, "uss_dumped_all": uss_dumped / MIB,
            "pss_dumped_all": pss_dumped / MIB, "last_postmortem": last,
            "complete": len({d["sessionId"] for d in dumps}), "exits": exits(dumps),
            "tmp_left": len(leftovers), "faults": faults}


def measure_per_session(n: int, seconds: float) -> dict[str, Any]:
    """scale.py's measure(), unchanged, read at three more points: each ring's sampling
    rate when the watchdogs' memory is read (right after the window), when the last of
    the N dumps was on disk, and how the postmortems name the deaths."""
    import scale

    names: dict[str, None] = {}
    found: dict[str, Any] = {}
    watchdog_of, uss_pss, all_dumps = scale.watchdog_of, scale.uss_pss, scale._all_dumps

    def noting_watchdog_of(name: str) -> int:
        names[name] = None
        return watchdog_of(name)

    def noting_uss_pss(pid: int) -> tuple[int, int]:
        if "samples" not in found:
            found["samples"] = sampling_rate(list(names))
        return uss_pss(pid)

    def noting_all_dumps(folder: Path, count: int, trigger: str, since: float) -> float:
        last = all_dumps(folder, count, trigger, since)
        if trigger == "manual":
            found["dumps_last"] = last
        else:
            dumps = postmortems(folder, trigger)
            found["complete"] = len({d["sessionId"] for d in dumps})
            found["exits"] = exits(dumps)
        return last

    scale.watchdog_of, scale.uss_pss = noting_watchdog_of, noting_uss_pss
    scale._all_dumps = noting_all_dumps
    try:
        return {**scale.measure(n, seconds), **found}
    finally:
        scale.watchdog_of, scale.uss_pss, scale._all_dumps = watchdog_of, uss_pss, all_dumps


def failure_domain(n: int, tag: str) -> dict[str, Any]:
    """The per-user watchdog dies first, its hosts 0.5 s later; then ``gc`` at once.
    Another session's watchdog starting meanwhile on this machine scans for orphans
    too (docs/design.md): each recovered postmortem names its recoverer's pid."""
    import subprocess

    import scale

    from watchdog_core._report import RECOVERED_BY

    with Fleet(n, tag, HAND_OVER + scale.HOST) as fleet:
        time.sleep(2.0)
        assert fleet.watchdog is not None
        fleet.watchdog.kill()
        fleet.watchdog.wait()  # reaped: the hosts see it gone (their restarts fail)
        time.sleep(KILL_DELAY)
        fleet.kill_hosts()
        for h in fleet.hosts:
            h.wait()
        written = len(postmortems(fleet.folder, "host-died"))
        ours = _shm.PREFIX + fleet.prefix
        orphans = sum(name.startswith(ours) for name in _shm.list_segments())
        start = time.monotonic()
        gc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "watchdog-core"), "gc", "--json", "--dir",
             str(fleet.folder)], stdout=subprocess.PIPE, text=True, env=fleet.env)
        out, _ = gc.communicate()
        gc_seconds = time.monotonic() - start
        report = json.loads(out)
        by_gc = sum(o["segment"].startswith(ours) and o["outcome"] == "written"
                    for o in report["orphans"])
        dumps = postmortems(fleet.folder, "recovered")
        by_others = sum(
            not any(e.startswith(f"{RECOVERED_BY}{gc.pid}:")
                    for e in d.get("host", {}).get("exit", {}).get("evidence", []))
            for d in dumps)
    return {"written": written, "orphans": orphans, "recovered": by_gc,
            "by_others": by_others, "complete": len({d["sessionId"] for d in dumps}),
            "gc_seconds": gc_seconds, "exits": exits(dumps)}


def _ratio(user: dict[str, Any], per_session: dict[str, Any], key: str) -> str:
    if not per_session[key]:
        return "- (nothing measured per session)"
    return f"{user[key] / per_session[key]:.3g} x"


def _tables(rows: list[tuple[int, dict[str, Any], dict[str, Any] | None]],
            failures: list[tuple[int, dict[str, Any]]]) -> None:
    print("| sessions | shape | CPU, all | per session | USS, all | PSS, all | "
          "PSS per session | samples/s per ring | N dumps at once: last on disk | "
          "after them: USS / PSS, all | all killed: last postmortem | "
          "postmortems complete | .tmp left |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, u, s in rows:
        print(f"| {n} | per user | {u['cpu_all']:.1f} % | {u['cpu_each']:.3f} % | "
              f"{u['uss_all']:.1f} MiB | {u['pss_all']:.1f} MiB | {u['pss_each']:.2f} MiB | "
              f"{u['samples']:.2f} | {u['dumps_last']:.2f} s | "
              f"{u['uss_dumped_all']:.1f} / {u['pss_dumped_all']:.1f} MiB | "
              f"{u['last_postmortem']:.2f} s | {u['complete']} of {n} | {u['tmp_left']} |")
        if s is not None:
            print(f"| {n} | per session | {s['cpu_all']:.1f} % | {s['cpu_each']:.3f} % | "
                  f"{s['uss_each'] * n:.0f} MiB | {s['pss_all']:.0f} MiB | "
                  f"{s['pss_each']:.2f} MiB | {s['samples']:.2f} | {s['dumps_last']:.2f} s | "
                  f"{s['uss_dumped'] * n:.0f} / {s['pss_dumped_all']:.0f} MiB | "
                  f"{s['last_postmortem']:.2f} s | {s['complete']} of {n} | {s['tmp_left']} |")
    for n, u, s in rows:
        print(f"\n{n} sessions, per user: postmortems say {u['exits']}"
              + (f"; {u['faults']} internal error(s) in its log" if u["faults"] else ""))
        if s is not None:
            print(f"{n} sessions, per session: postmortems say {s['exits']}")
        if s is not None:
            print(f"{n} sessions, per user / per session: CPU {_ratio(u, s, 'cpu_all')}, "
                  f"PSS {_ratio(u, s, 'pss_all')}, N dumps {_ratio(u, s, 'dumps_last')}, "
                  f"last postmortem {_ratio(u, s, 'last_postmortem')}")
    if failures:
        print(f"\n| sessions | per-user watchdog killed, hosts {KILL_DELAY} s later: "
              "postmortems | rings left in /dev/shm | `gc` recovered | by another "
              "session's scan first | `gc` took | recovered postmortems complete | they say |")
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        for n, f in failures:
            print(f"| {n} | {f['written']} of {n} | {f['orphans']} | {f['recovered']} | "
                  f"{f['by_others']} | {f['gc_seconds']:.2f} s | {f['complete']} of {n} | "
                  f"{f['exits']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--compare", action="store_true",
                        help="measure one watchdog per session too (scale.py), same counts")
    parser.add_argument("--serve", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # scale.py, beside us
    # A SIGTERM (timeout, kill) unwinds like Ctrl-C: every Fleet cleans up on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tag = f"pu{os.getpid()}"
    rows: list[tuple[int, dict[str, Any], dict[str, Any] | None]] = []
    failures: list[tuple[int, dict[str, Any]]] = []
    try:
        for n in args.sessions:
            print(f"[{n} sessions] per user ...", file=sys.stderr, flush=True)
            user = measure(n, args.seconds, tag)
            per_session = None
            if args.compare:
                print(f"[{n} sessions] per session (scale.py) ...", file=sys.stderr,
                      flush=True)
                per_session = measure_per_session(n, args.seconds)
            rows.append((n, user, per_session))
            print(f"[{n} sessions] per-user watchdog killed ...", file=sys.stderr, flush=True)
            failures.append((n, failure_domain(n, tag)))
    finally:
        _tables(rows, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
