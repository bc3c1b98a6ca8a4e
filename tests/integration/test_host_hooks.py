"""What the host installs in itself must never hurt it (docs/design.md, "Dying, hanging,
losing the watchdog"): signal handlers, process-wide hooks, locks across fork, and
start/stop cycles. Real processes and real signals; each host is an inline script."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, segment_exists
from watchdog_core import _reader

ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ENV.pop("WATCHDOG_CORE_DISABLE", None)

# Waits for the host's own handler to have run: Python runs it at its next bytecode
# boundary, in the main thread.
WAIT_FOR_HANDLER = """
import time
def wait_for(hits, n=1):
    deadline = time.monotonic() + 10
    while len(hits) < n and time.monotonic() < deadline:
        time.sleep(0.001)
"""

# A stand-in for the watchdog where a test needs hundreds of sessions: `cat` on the
# control pipe lives exactly until the host closes its end, as the watchdog does, and
# starts in a millisecond where an interpreter takes ~150 ms (1,000 real ones: minutes).
STAND_IN = """
import os
from watchdog_core import _spawn

def stand_in(shm_name, config):
    read, write = os.pipe()
    pid = os.posix_spawn("/bin/cat", ["cat"], {}, file_actions=[
        (os.POSIX_SPAWN_DUP2, read, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    os.close(read)
    return _spawn.WatchdogProcess(pid, write)

_spawn.spawn_watchdog = stand_in
"""


def run(script: str, directory: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True,
                          text=True, env=ENV, timeout=timeout, check=False)


def process_gone(pid: int) -> bool:
    """True once ``pid`` is gone and reaped (a zombie still has a /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


# -- the stack signal -------------------------------------------------------------------


def test_a_sigusr2_handler_installed_after_start_survives_stop(diag_dir: Path) -> None:
    """faulthandler.unregister() restores the disposition saved at registration: done
    over the host's own handler, the host then died of its own SIGUSR2 (exit -12)."""
    result = run(WAIT_FOR_HANDLER + """
import os, signal, sys
from watchdog_core import start_watchdog

wd = start_watchdog(diagnostics_dir=sys.argv[1])
hits = []
signal.signal(signal.SIGUSR2, lambda *_: hits.append(1))
wd.stop()
os.kill(os.getpid(), signal.SIGUSR2)
wait_for(hits)
print("handled", len(hits), flush=True)
""", diag_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["handled", "1"]


def test_a_sigusr2_handler_installed_after_start_survives_a_fork(diag_dir: Path) -> None:
    """The same in a forked child, whose at-fork hook let go of the parent's handlers."""
    result = run(WAIT_FOR_HANDLER + """
import os, signal, sys
from watchdog_core import start_watchdog

wd = start_watchdog(diagnostics_dir=sys.argv[1])
hits = []
signal.signal(signal.SIGUSR2, lambda *_: hits.append(1))
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGUSR2)
    wait_for(hits)
    os._exit(0 if hits else 5)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
wd.stop()
""", diag_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["child", "0"]


def ring_header(shm_name: str) -> _reader.RingImage:
    return _reader.RingImage(Path("/dev/shm", shm_name).read_bytes())


def ring_flags(shm_name: str) -> list[str]:
    return _reader.flag_names(ring_header(shm_name).flags)


def wait_for_heartbeats(shm_name: str, beats: int) -> None:
    """Until the host's heartbeat thread has written ``beats`` more heartbeats: the
    second one is written after the first beat's checks have all run."""
    last, seen = ring_header(shm_name).heartbeat_ns, 0
    deadline = time.monotonic() + 10
    while seen < beats and time.monotonic() < deadline:
        time.sleep(0.01)
        now = ring_header(shm_name).heartbeat_ns
        seen, last = seen + (now != last), now
    assert seen == beats, "the heartbeat stopped"


def test_the_ring_says_when_the_host_took_the_stack_signal(start_host) -> None:
    """The watchdog sends the stack signal only while FLAG_STACK_SIGNAL says it is ours;
    within a heartbeat (1 s) of the host's own signal.signal() it is cleared and
    stack-signal-lost set, for the rest of the session."""
    host = start_host()
    info = host.wait_ready()
    shm = str(info["shm"])
    flags = ring_flags(shm)
    assert "stack-signal" in flags and "stack-signal-lost" not in flags
    assert host.ask("own-usr2") == "installed"
    installed = time.monotonic()
    while "stack-signal-lost" not in flags and time.monotonic() - installed < 10:
        time.sleep(0.01)
        flags = ring_flags(shm)
    took = time.monotonic() - installed
    assert "stack-signal-lost" in flags and "stack-signal" not in flags, flags
    assert took < 3.0, f"{took:.2f} s for a 1 s heartbeat"
    assert host.ask("usr2-self") == "usr2 1"  # the host's handler, not faulthandler's
    # Putting the default back does not give the signal back to us.
    assert host.ask("default-usr2") == "default"
    wait_for_heartbeats(shm, 2)
    flags = ring_flags(shm)
    assert "stack-signal-lost" in flags and "stack-signal" not in flags, flags
    host.send("stop")
    assert host.finish() == 0, host.stderr


def test_a_stack_signal_handler_installed_from_c_is_left_alone(diag_dir: Path) -> None:
    """faulthandler.register() is invisible to signal.getsignal(), as a C extension's
    sigaction() is: the kernel's SigCgt says the signal is caught, so it is not ours."""
    result = run("""
import faulthandler, signal, sys
from watchdog_core import _reader, _ring, start_watchdog

faulthandler.register(signal.SIGUSR2, all_threads=False)  # the host's, from C
wd = start_watchdog(diagnostics_dir=sys.argv[1])
print(" ".join(_reader.flag_names(int(wd._w.words[_ring.W_FLAGS]))), flush=True)
wd.stop()
with open("/proc/self/status") as f:
    cgt = int(next(l for l in f if l.startswith("SigCgt:")).split()[1], 16)
print("caught", bool(cgt >> (signal.SIGUSR2 - 1) & 1), flush=True)
""", diag_dir)
    assert result.returncode == 0, result.stderr
    flags, caught = result.stdout.splitlines()
    assert "stack-signal-taken" in flags.split() and "stack-signal" not in flags.split()
    assert caught == "caught True"  # stop() did not unregister the host's


# -- SIGTERM ----------------------------------------------------------------------------


def test_a_sigterm_handler_installed_after_start_survives_stop(diag_dir: Path) -> None:
    result = run(WAIT_FOR_HANDLER + """
import os, signal, sys
from watchdog_core import start_watchdog

wd = start_watchdog(diagnostics_dir=sys.argv[1], catch_sigterm=True)
hits = []
signal.signal(signal.SIGTERM, lambda *_: hits.append(1))
wd.stop()
os.kill(os.getpid(), signal.SIGTERM)
wait_for(hits)
print("handled", len(hits), flush=True)
""", diag_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["handled", "1"]


def test_stop_from_another_thread_with_catch_sigterm(diag_dir: Path) -> None:
    """Only the main thread may reset a handler: stop() elsewhere must not raise, and
    the handler left behind dies of SIGTERM as the default disposition would."""
    result = run("""
import os, signal, sys, threading
from watchdog_core import start_watchdog

wd = start_watchdog(diagnostics_dir=sys.argv[1], catch_sigterm=True)
errors = []
def stop():
    try:
        wd.stop()
    except BaseException as exc:
        errors.append(repr(exc))
t = threading.Thread(target=stop)
t.start()
t.join()
print("errors", errors, flush=True)
os.kill(os.getpid(), signal.SIGTERM)
signal.pause()
""", diag_dir)
    assert result.stdout.strip() == "errors []", result.stderr
    assert result.returncode == -signal.SIGTERM


def test_catch_sigterm_from_a_thread_gives_a_working_handle_and_one_warning(
        diag_dir: Path) -> None:
    """signal.signal() raises ValueError outside the main thread. It used to escape
    start_watchdog() after the watchdog was spawned, leaking it and the segment."""
    proc = subprocess.Popen([sys.executable, "-c", """
import json, sys, threading, warnings
warnings.simplefilter("always")
from watchdog_core import start_watchdog

out = {}
def start():
    with warnings.catch_warnings(record=True) as caught:
        out["wd"] = start_watchdog(diagnostics_dir=sys.argv[1], catch_sigterm=True)
    out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
t = threading.Thread(target=start)
t.start()
t.join()
wd = out["wd"]
wd.record(a=1)
print(json.dumps({"warnings": out["warnings"], "enabled": wd.enabled, "shm": wd.shm_name,
                  "watchdog": wd._process.pid}), flush=True)
sys.stdin.readline()
wd.stop()
print("stopped", flush=True)
sys.stdin.readline()
""", str(diag_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=30)
        started = json.loads(line)
        (warning,) = started["warnings"]
        assert warning.startswith("RuntimeWarning: ") and "main thread" in warning
        assert started["enabled"]
        assert segment_exists(started["shm"]) and not process_gone(started["watchdog"])
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "stopped"
        # Asked while the host still runs: its exit must not be what cleans up.
        assert not segment_exists(started["shm"])
        assert process_gone(started["watchdog"])
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_hooks_that_fail_to_install_leave_nothing_behind(diag_dir: Path) -> None:
    """Whatever breaks while the hooks go in (here: no thread can be started), the
    handle comes back disabled with one warning, the watchdog has ended, the segment
    is gone, and what was installed so far is undone."""
    result = run("""
import _thread, faulthandler, json, os, signal, sys, types, warnings
warnings.simplefilter("always")
from watchdog_core import _lifecycle, _spawn, start_watchdog

spawned = []
real_spawn = _spawn.spawn_watchdog
def spawn(*args):
    process = real_spawn(*args)
    spawned.append(process.pid)
    return process
_spawn.spawn_watchdog = spawn

def no_thread(*args):
    raise RuntimeError("can't start new thread")
_lifecycle._thread = types.SimpleNamespace(allocate_lock=_thread.allocate_lock,
                                           start_new_thread=no_thread)
with warnings.catch_warnings(record=True) as caught:
    wd = start_watchdog(diagnostics_dir=sys.argv[1])
with open("/proc/self/status") as f:
    cgt = int(next(l for l in f if l.startswith("SigCgt:")).split()[1], 16)
print(json.dumps({
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "enabled": wd.enabled,
    "spawned": spawned,
    "segments": [n for n in os.listdir("/dev/shm") if n.endswith(f"-{os.getpid()}")],
    "faulthandler": faulthandler.is_enabled(),
    "usr2_caught": bool(cgt >> (signal.SIGUSR2 - 1) & 1),
    "files": sorted(os.listdir(sys.argv[1])),
}), flush=True)
""", diag_dir)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (warning,) = out["warnings"]
    assert warning.startswith("RuntimeWarning: watchdog-core disabled: ")
    assert "can't start new thread" in warning
    assert not out["enabled"]
    assert len(out["spawned"]) == 1 and process_gone(out["spawned"][0])
    assert out["segments"] == []
    assert not out["faulthandler"] and not out["usr2_caught"]
    assert out["files"] == []  # the crash and stacks files removed


# -- start/stop cycles ------------------------------------------------------------------


def test_a_thousand_cycles_leave_the_process_as_it_was(diag_dir: Path) -> None:
    """Process-wide hooks are installed once; a stopped session leaves no mapping,
    descriptor, thread or hook behind. An uncaught exception after the cycles reaches
    the host's own excepthook once, and is noted in the session running then."""
    result = run(STAND_IN + """
import atexit, json, os, sys
from watchdog_core import start_watchdog

def host_hook(exc_type, exc, tb):
    print("host hook", exc_type.__name__, flush=True)
    sys.__excepthook__(exc_type, exc, tb)
sys.excepthook = host_hook

def snapshot():
    with open("/proc/self/maps") as f:
        maps = f.read().splitlines()
    return {"atexit": atexit._ncallbacks(), "excepthook": id(sys.excepthook),
            "maps": len(maps), "segments": sum("watchdog_core-" in m for m in maps),
            "fds": len(os.listdir("/proc/self/fd")),
            "threads": len(os.listdir("/proc/self/task"))}

seen = {}
for cycle in range(1, 1001):
    with start_watchdog(diagnostics_dir=sys.argv[1]) as wd:
        wd.record(cycle=cycle)
    if cycle in (10, 1000):
        seen[cycle] = snapshot()
print(json.dumps(seen), flush=True)
wd = start_watchdog(diagnostics_dir=sys.argv[1])
print(json.dumps({"shm": wd.shm_name}), flush=True)
raise ValueError("a message that must never reach the ring")
""", diag_dir, timeout=300)
    lines = result.stdout.splitlines()
    assert len(lines) == 3, (result.stdout, result.stderr)
    seen, last = json.loads(lines[0]), json.loads(lines[1])
    shm = last["shm"]
    try:
        assert lines[2] == "host hook ValueError"
        assert result.returncode == 1
        assert result.stderr.count("Traceback") == 1
        first, end = seen["10"], seen["1000"]
        assert end["atexit"] == first["atexit"]
        assert end["excepthook"] == first["excepthook"]
        assert end["maps"] <= first["maps"] + 2, (first, end)  # allocator noise only
        assert end["segments"] == first["segments"] == 0
        assert end["fds"] == first["fds"]
        assert end["threads"] == first["threads"] == 1
        # The stand-in watchdog cleans nothing up: the last ring stays for us to read.
        image = _reader.RingImage(Path("/dev/shm", shm).read_bytes())
        assert image.exception == "ValueError" and image.exiting
    finally:
        if segment_exists(shm):
            os.unlink(Path("/dev/shm", shm))


def test_a_host_excepthook_put_over_ours_is_kept_and_chained_once(diag_dir: Path) -> None:
    result = run(STAND_IN + """
import sys
from watchdog_core import start_watchdog

start_watchdog(diagnostics_dir=sys.argv[1]).stop()
ours = sys.excepthook
def host_hook(exc_type, exc, tb):  # replaces ours, and calls on to it
    print("host hook", flush=True)
    ours(exc_type, exc, tb)
sys.excepthook = host_hook
hooks = set()
for _ in range(5):
    start_watchdog(diagnostics_dir=sys.argv[1]).stop()
    hooks.add(sys.excepthook)
assert len(hooks) == 1 and sys.excepthook.previous is host_hook, hooks
print("chained once", flush=True)
raise KeyError("k")
""", diag_dir)
    assert result.stdout.splitlines() == ["chained once", "host hook"], result.stderr
    assert result.returncode == 1 and result.stderr.count("Traceback") == 1


def test_the_hot_path_in_another_thread_survives_stop(diag_dir: Path) -> None:
    """record(), a recorder and mark() keep running in a thread while the main thread
    stops the session under them: nothing raises, nothing is lost to a freed mapping,
    and once the thread is done no segment is mapped any more."""
    result = run(STAND_IN + """
import sys, threading
from watchdog_core import start_watchdog

errors = []
for cycle in range(20):
    wd = start_watchdog(diagnostics_dir=sys.argv[1])
    rec = wd.recorder("a", "b")
    started = threading.Event()
    def hammer():
        try:
            for i in range(20000):
                wd.record(a=i, b=i)
                rec(i, -i)
                wd.mark("turn")
                if i == 100:
                    started.set()
                if i % 1000 == 999:
                    wd.record(**{f"new{cycle}_{i}": i})  # a new name: the writer's lock
        except BaseException as exc:
            errors.append(repr(exc))
            started.set()
    t = threading.Thread(target=hammer)
    t.start()
    started.wait()
    wd.stop()
    t.join()
with open("/proc/self/maps") as f:
    mapped = [m for m in f if "watchdog_core-" in m]
print(errors[:3], len(mapped), flush=True)
""", diag_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] 0"


# -- fork -------------------------------------------------------------------------------


def test_a_fork_while_another_thread_holds_the_writer_lock(diag_dir: Path) -> None:
    """The child's copy of a lock held at fork stays locked for ever: its first new
    stat name deadlocked. The lock is made afresh in the child."""
    result = run("""
import os, sys, threading, time
from watchdog_core import start_watchdog

wd = start_watchdog(diagnostics_dir=sys.argv[1])
wd.record(a=1)
held, release = threading.Event(), threading.Event()
def hold():
    with wd._w._lock:
        held.set()
        release.wait()
t = threading.Thread(target=hold)
t.start()
held.wait()
pid = os.fork()
if pid == 0:
    wd.record(a=2, brand_new=1)  # registers a name: takes the lock
    wd.recorder("another")(3)
    os._exit(0)
release.set()
t.join()
deadline = time.monotonic() + 20
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", os.waitstatus_to_exitcode(status), flush=True)
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child deadlocked", flush=True)
        break
    time.sleep(0.01)
wd.stop()
""", diag_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child 0"


# -- PID 1 ------------------------------------------------------------------------------


def pid_namespace() -> list[str]:
    """argv prefix running a command as PID 1 of a new pid namespace, or skip."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to run a host as PID 1 of a pid namespace")
    argv = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc"]
    if subprocess.run([*argv, "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a pid namespace here (needs root or user namespaces)")
    return argv


PID_1_HOST = """
import json, os, sys, time, warnings
warnings.simplefilter("always")
from watchdog_core import start_watchdog
with warnings.catch_warnings(record=True) as caught:
    wd = start_watchdog(diagnostics_dir=sys.argv[1], interval=0.05)
print(json.dumps([os.getpid(), [str(w.message) for w in caught], wd.shm_name]), flush=True)
while wd.status() is None:
    time.sleep(0.005)
os._exit(3)  # an unclean end: it deserves a postmortem
"""


def test_pid_1_is_warned_with_advice_that_works(tmp_path: Path) -> None:
    """As PID 1 the host's exit kills the watchdog with it. The warning recommends
    `watchdog-core run` as the entrypoint, and what it recommends does give the
    postmortem, in one session, with the exact status."""
    namespace = pid_namespace()
    as_pid_1 = subprocess.run([*namespace, sys.executable, "-c", PID_1_HOST,
                               str(tmp_path / "pid1")], capture_output=True, text=True,
                              env=ENV, timeout=60, check=False)
    pid, messages, orphan = json.loads(as_pid_1.stdout.splitlines()[0])
    # Its ring outlived the killed watchdog. A later watchdog would recover it as an
    # orphan; removed here, so the run below has only its own host to attend to.
    if segment_exists(orphan):
        os.unlink(Path("/dev/shm", orphan))
    assert pid == 1 and as_pid_1.returncode == 3
    assert list((tmp_path / "pid1").glob("*.json")) == []  # no postmortem
    (message,) = [m for m in messages if "PID 1" in m]
    assert "watchdog-core run -- python app.py" in message
    advised = subprocess.run(
        [*namespace, sys.executable, "-m", "watchdog_core", "run", "--dir",
         str(tmp_path / "advised"), "--", sys.executable, "-c", PID_1_HOST,
         str(tmp_path / "advised")], capture_output=True, text=True, env=ENV, timeout=60,
        check=False)
    pid, messages, _ = json.loads(advised.stdout.splitlines()[0])
    assert pid != 1 and not [m for m in messages if "PID 1" in m]
    assert advised.returncode == 3
    (postmortem,) = (tmp_path / "advised").glob("*.json")
    dump = json.loads(postmortem.read_text())
    assert dump["trigger"] == "host-died"
    assert dump["host"]["exit"]["exitCode"] == 3
    assert dump["host"]["exit"]["confidence"] == "certain"
