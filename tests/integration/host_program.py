"""A real host for the integration tests: python host_program.py DIR [OPTIONS].

Starts a watchdog, records the stats given with --stats (JSON), marks --label,
prints ``ready {json}`` and then runs one command read from stdin:

  kill      SIGKILL itself            stop     wd.stop() then exit 0
  exit0     return normally           exit N   sys.exit(N)
  raise     unhandled ValueError      dump     wd.dump() and print its path, then wait again
  fork      fork a child that records into its own handle, then wait again
  pressure  allocate until critical (or --oscillate rounds), then wait again
  balloon   allocate without end (for a real OOM kill in a memory cgroup)
  segv, abort           crash in native code
  hang N                hold the GIL inside libc sleep(N), then print "woke"
  block S               sleep S seconds without the GIL, then print "woke"
  killwd                SIGKILL our watchdog; print once a new one runs
  own-usr2              install the host's own SIGUSR2 handler; print "installed"
  default-usr2          put SIGUSR2 back to its default; print "default"
  usr2-self             send ourselves SIGUSR2; print "usr2 N", N handled so far
  status                print the watchdog's last status block as JSON
  mark JSON             wd.mark(the JSON string); print "marked"
  exec S                exec a new program that sleeps S seconds and prints
  worker-oom            run a worker that balloons until the OOM killer ends it
  sleeper               start a child that sleeps in our cgroup; print "sleeper PID"
  litter N              keep N small objects (N traces for tracemalloc); print "littered"
  unstall               let the extras thread held by --stall-extras go; print "unstalled"
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import sys
import threading  # loaded before start_watchdog, as in most real hosts: excepthook chained
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--session", default=None)
    parser.add_argument("--stats", default="{}")
    parser.add_argument("--label", default=None)
    parser.add_argument("--limit", default=None)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--max-dumps", type=int, default=3)
    parser.add_argument("--cooldown", type=float, default=30.0)
    parser.add_argument("--slots", type=int, default=4096)
    parser.add_argument("--suggestion", default=None)
    parser.add_argument("--hang-after", type=float, default=None)
    parser.add_argument("--idle-after", type=float, default=None)
    parser.add_argument("--catch-sigterm", action="store_true")
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--own-usr2", action="store_true",
                        help="install a SIGUSR2 handler of the host's own before starting")
    parser.add_argument("--own-faulthandler", action="store_true",
                        help="enable faulthandler before start_watchdog, as some hosts do")
    parser.add_argument("--announce", action="store_true",
                        help="print on_pressure(level, info) calls and watchdog_core log records")
    parser.add_argument("--log-only", action="store_true",
                        help="with --announce: the logger only, no on_pressure callback")
    parser.add_argument("--announce-raise", action="store_true",
                        help="the on_pressure callback raises after printing")
    parser.add_argument("--no-wait", action="store_true",
                        help="print ready at once, not after the watchdog's first sample")
    parser.add_argument("--extras", default="",
                        help="start_watchdog(extras=...), comma separated")
    parser.add_argument("--tracemalloc-frames", type=int, default=None)
    parser.add_argument("--stall-extras", action="store_true",
                        help="the thread serving extras waits for `unstall` first")
    parser.add_argument("--die-after-extras", action="store_true",
                        help="SIGKILL itself the moment the extras are answered")
    args, _more_argv = parser.parse_known_args()  # the rest: argv for the redaction test

    from watchdog_core import start_watchdog

    if args.own_usr2:
        signal.signal(signal.SIGUSR2, lambda *_: None)
    if args.own_faulthandler:
        import faulthandler

        faulthandler.enable()
    on_pressure = None
    if args.announce:
        import logging

        class Echo(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                print("log " + json.dumps([record.levelname, record.getMessage()]), flush=True)

        logger = logging.getLogger("watchdog_core")
        logger.addHandler(Echo())
        logger.setLevel(logging.INFO)

        def on_pressure(level, info):  # type: ignore[no-untyped-def]
            print("announce " + json.dumps([level.label, info]), flush=True)
            if args.announce_raise:
                raise KeyError("the host's own bug")

    if args.log_only:
        on_pressure = None
    if args.stall_extras:
        stall_extras()
    if args.die_after_extras:
        die_after_extras()
    wd = start_watchdog(session_id=args.session, on_pressure=on_pressure, diagnostics_dir=args.dir,
                        memory_limit=args.limit, interval=args.interval,
                        max_dumps_per_session=args.max_dumps, dump_cooldown=args.cooldown,
                        ring_slots=args.slots, suggestion=args.suggestion,
                        hang_after=args.hang_after, idle_after=args.idle_after,
                        catch_sigterm=args.catch_sigterm, restart=not args.no_restart,
                        extras=tuple(filter(None, args.extras.split(","))),
                        tracemalloc_frames=args.tracemalloc_frames)
    global HANDLE
    HANDLE = wd
    # Private text the host keeps in memory, as an agent keeps its conversation: it must
    # never reach a dump. It comes through the environment, which is never dumped either.
    history = [os.environ.get("HOST_PRIVATE_HISTORY", "")] * 1000
    stats = json.loads(args.stats)
    if stats:
        wd.record(**stats)
    if args.label is not None:
        wd.mark(args.label)
    deadline = time.monotonic() + 30
    while not args.no_wait and wd.status() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    ready = {"pid": os.getpid(), "shm": wd.shm_name, "session": wd.session_id,
             "watchdog_pid": wd._process.pid if wd._process else None}
    print("ready " + json.dumps(ready), flush=True)
    hold: list[bytearray] = []
    assert history is not None
    for line in sys.stdin:
        command, *rest = line.split(maxsplit=1)
        if command == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif command == "stop":
            wd.stop()
            return
        elif command == "exit0":
            return
        elif command == "exit":
            sys.exit(int(rest[0]))
        elif command == "raise":
            raise ValueError("a secret message that must never reach a dump")
        elif command == "dump":
            path = wd.dump()
            print(f"dumped {path}", flush=True)
        elif command == "record":
            wd.record(**json.loads(rest[0]))
            print("recorded", flush=True)
        elif command == "mark":
            wd.mark(json.loads(rest[0]))  # JSON: a label may hold anything, newlines too
            print("marked", flush=True)
        elif command == "fork":
            fork_child(wd, args.dir)
        elif command == "free":
            hold.clear()
            print("freed", flush=True)
        elif command == "grow":
            hold.append(bytearray(b"x") * (int(rest[0]) << 20))
            print("grown", flush=True)
        elif command == "hover":  # N MiB taken and given back for S seconds, again and again
            mib, seconds = rest[0].split()
            size, end = int(mib) << 20, time.monotonic() + float(seconds)
            while time.monotonic() < end:  # mmap: given back to the kernel at once
                block = mmap.mmap(-1, size)
                for offset in range(0, size, 4096):
                    block[offset] = 1
                block.close()
            print("hovered", flush=True)
        elif command == "balloon":
            while True:  # until the kernel's OOM killer ends us
                hold.append(bytearray(b"x") * (4 * 1024 * 1024))
                wd.record(historyEntries=len(hold), estimatedHistoryBytes=len(hold) << 22)
                time.sleep(0.01)
        elif command == "thread-raise":
            def fail() -> None:
                raise KeyError("a secret key name")

            t = threading.Thread(target=fail)
            t.start()
            t.join()
            print("thread died", flush=True)
        elif command == "corrupt":
            # A wild write from a host bug: garbage over the session id in the header.
            from watchdog_core import _ring

            wd._w.buf[_ring.SESSION_ID_AT : _ring.SESSION_ID_AT + 8] = b"../../\xff\xfe"
            print("corrupted", flush=True)
        elif command == "segv":
            import ctypes

            ctypes.string_at(0)
        elif command == "abort":
            os.abort()
        elif command == "hang":
            import ctypes

            # libc sleep() through PyDLL keeps the GIL: no Python thread can run.
            ctypes.PyDLL(None).sleep(int(rest[0]))
            wd.mark("after-hang")
            print("woke", flush=True)
        elif command == "spin":
            spin(float(rest[0]))  # a pure-Python busy loop: the heartbeat still runs
            wd.mark("after-spin")
            print("spun", flush=True)
        elif command == "steps":
            busy_steps(float(rest[0]))  # busy, but leaving its frames all the time
            print("stepped", flush=True)
        elif command == "calls":
            calls(float(rest[0]))  # busy in its own frame, calling a function every step
            print("called", flush=True)
        elif command == "recurse":
            recurse(0)
        elif command == "raise-deep":
            load_settings('{"token": "a secret value that must never reach a dump"')
        elif command == "block":
            time.sleep(float(rest[0]))  # releases the GIL: only idle_after can see this
            wd.mark("after-block")
            print("woke", flush=True)
        elif command == "killwd":
            old = wd._process.pid
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while (wd._process.pid == old or not wd.watchdog_alive) and (
                time.monotonic() < deadline
            ):
                wd.record(historyEntries=1)  # never raises while the watchdog is gone
                time.sleep(0.01)
            print(f"watchdog {old} -> {wd._process.pid} alive={wd.watchdog_alive}", flush=True)
        elif command == "pool":
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(2) as pool:
                print(f"pool {pool.map(square_and_record, range(4))}", flush=True)
        elif command == "pressure":
            pressure(wd, hold, int(rest[0]) if rest else 1)
        elif command == "status-line":
            print("line " + json.dumps([wd.status_line(), wd.status_line(always=True)]),
                  flush=True)
        elif command == "status":
            print("status " + json.dumps(wd.status()), flush=True)
        elif command == "exec":
            # Become another program, as launchers and re-exec'ing tools do: it must
            # never receive our stack signal, and the session ends quietly.
            code = ("import sys, time; time.sleep(float(sys.argv[1])); "
                    "print('the new program survived', flush=True)")
            os.execv(sys.executable, [sys.executable, "-c", code, rest[0]])
        elif command == "sleeper":
            # A process of ours that shares our cgroup and does nothing.
            import subprocess

            child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"sleeper {child.pid}", flush=True)
        elif command == "worker-oom":
            # A worker of ours balloons in our cgroup and the OOM killer takes it, not us.
            import subprocess

            worker = subprocess.run([sys.executable, "-c",
                                     "b = []\nwhile True: b.append(bytearray(8 << 20))"],
                                    check=False)
            print(f"worker {worker.returncode}", flush=True)
        elif command == "litter":
            LITTER.extend(str(n) for n in range(int(rest[0])))
            print("littered", flush=True)
        elif command == "unstall":
            UNSTALL.release()
            print("unstalled", flush=True)
        elif command == "own-usr2":
            # The host takes SIGUSR2 for itself after start_watchdog(), as a gunicorn
            # master does for binary upgrades.
            signal.signal(signal.SIGUSR2, lambda *_: USR2_HANDLED.append(1))
            print("installed", flush=True)
        elif command == "default-usr2":
            signal.signal(signal.SIGUSR2, signal.SIG_DFL)
            print("default", flush=True)
        elif command == "usr2-self":
            before = len(USR2_HANDLED)
            os.kill(os.getpid(), signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while len(USR2_HANDLED) == before and time.monotonic() < deadline:
                time.sleep(0.001)
            print(f"usr2 {len(USR2_HANDLED)}", flush=True)
        else:
            print(f"unknown command {command}", flush=True)


HANDLE = None  # the host's handle, inherited by forked pool workers
USR2_HANDLED: list[int] = []  # calls of the host's own SIGUSR2 handler (own-usr2)
LITTER: list[str] = []  # small objects kept alive, one allocation each (litter)
UNSTALL = threading.Lock()  # held while --stall-extras keeps the extras thread waiting


def stall_extras() -> None:
    """A host whose extras thread does not get to answer (until `unstall`), as one
    stuck elsewhere would be: the thread waits before it serves."""
    from watchdog_core import _extras

    serve = _extras.HostExtras.serve
    UNSTALL.acquire()

    def stalled(self, request: int) -> None:  # type: ignore[no-untyped-def]
        with UNSTALL:
            serve(self, request)

    _extras.HostExtras.serve = stalled  # type: ignore[method-assign]


def die_after_extras() -> None:
    """A host killed the moment it has answered: before the watchdog's next sample."""
    from watchdog_core import _extras

    serve = _extras.HostExtras.serve

    def serve_and_die(self, request: int) -> None:  # type: ignore[no-untyped-def]
        serve(self, request)
        os.kill(os.getpid(), signal.SIGKILL)

    _extras.HostExtras.serve = serve_and_die  # type: ignore[method-assign]


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # C calls only: this frame stays the innermost
        pass


def busy_steps(seconds: float) -> None:
    """A training loop's shape: busy for seconds, calling a Python function per step."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        train_step()


def train_step() -> int:
    return sum(n * n for n in range(200))


def calls(seconds: float) -> None:
    """Half its time in its own frame, half in step(): seen one look at a time, it
    looks stuck half the time (the loop a reviewer broke hang_after with)."""
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        for b in range(1000):
            total += step(b)


def step(b: int) -> int:
    return b * 2 + 1


def recurse(depth: int) -> int:
    return recurse(depth + 1) + 1  # RecursionError at about 1,000 frames


def load_settings(text: str) -> object:
    return json.loads(text)  # JSONDecodeError: its message quotes the text


def square_and_record(n: int) -> int:
    # Runs in a forked worker: the inherited handle must write nothing the parent sees.
    assert HANDLE is not None
    HANDLE.record(historyEntries=-n, workerOnly=n)
    HANDLE.mark("worker")
    return n * n


def fork_child(wd, directory: str) -> None:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:
        # The inherited handle must write nothing into the parent's ring.
        wd.record(historyEntries=-1, childOnly=1)
        wd.mark("child")
        from watchdog_core import start_watchdog

        own = start_watchdog(diagnostics_dir=directory)
        own.record(childSession=1)
        same = own is wd
        own.stop()
        os._exit(3 if same else 0)
    _, status = os.waitpid(pid, 0)
    print(f"child {os.waitstatus_to_exitcode(status)}", flush=True)


def pressure(wd, hold: list[bytearray], rounds: int) -> None:  # type: ignore[no-untyped-def]
    """Allocate until the watchdog grades critical; with rounds > 1, drop back to
    normal in between so each round is a new escalation."""
    from watchdog_core import PressureLevel

    for r in range(rounds):
        wd.mark(f"pressure:{r}")
        while wd.level < PressureLevel.CRITICAL:
            hold.append(bytearray(b"x") * (4 * 1024 * 1024))
            wd.record(historyEntries=len(hold))
            time.sleep(0.01)
        if r + 1 < rounds:
            hold.clear()
            while wd.level > PressureLevel.NORMAL:
                time.sleep(0.01)
    print(f"level {wd.level.label}", flush=True)


if __name__ == "__main__":
    main()
