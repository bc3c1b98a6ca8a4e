"""Shared fixtures: real host processes driven through pipes, never sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST_PROGRAM = Path(__file__).resolve().parent / "integration" / "host_program.py"


REAPER = Path(__file__).resolve().parent / "integration" / "reaper.py"

# Who the host's parent is. The common case is the real one: a parent that reaps the
# host the moment it exits (`Popen.wait()`, a shell), so the watchdog loses the race
# for the zombie. "wnowait" keeps today's kind parent for the one test of the zombie
# path: pytest itself, which reaps only after the watchdog is gone.
PARENTS = ("popen", "shell", "wnowait")


class Host:
    """A real host process running tests/integration/host_program.py.

    The program prints ``ready {json}`` once its watchdog is up and its stats are
    recorded, then obeys one command line on stdin. ``finish()`` returns only when
    both the host and its watchdog have exited: the watchdog inherits the host's
    stderr, so EOF there means the watchdog is gone too.

    ``parent`` chooses the host's parent (see PARENTS); "popen" by default.
    """

    def __init__(self, directory: Path, *args: str, env: dict[str, str] | None = None,
                 cgroup: Path | None = None, parent: str = "popen",
                 prefix: list[str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.pop("WATCHDOG_CORE_DISABLE", None)
        full_env.update(env or {})
        self.directory = directory
        argv = [sys.executable, str(HOST_PROGRAM), str(directory), *args]
        if cgroup is not None:
            # Join the cgroup before Python starts, so the host (and its watchdog) live in it.
            argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]
        # A command that runs the rest (`unshare ...`): the host's pid is then another
        # namespace's, never to be signalled from here.
        self.prefix = prefix or []
        argv = [*self.prefix, *argv]
        if parent == "popen":
            argv = [sys.executable, str(REAPER), *argv]
        elif parent == "shell":
            # A command followed by another is forked and waited for, never exec'd.
            argv = ["bash", "-c", '"$@"; exit $?', "bash", *argv]
        elif parent != "wnowait":
            raise ValueError(f"parent must be one of {PARENTS}, got {parent!r}")
        self.parent = parent
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, text=True,
        )
        self.info: dict[str, object] = {}
        self.stdout = ""
        self.stderr = ""

    def wait_ready(self, timeout: float = 30.0) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.proc.kill()
            out, err = self.proc.communicate(timeout=timeout)
            raise AssertionError(f"host did not become ready: {line!r} {out!r} {err!r}")
        self.info = json.loads(line[len("ready ") :])
        return self.info

    def ask(self, command: str) -> str:
        """Send a command and return the line the host answers with."""
        self.send(command)
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the host and its watchdog; the host's status as Popen gives it
        (negative: killed by that signal), whoever its parent was."""
        if self.parent == "wnowait":
            # Hold the zombie until the watchdog has read it: WNOWAIT leaves it unreaped.
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout += out
        self.stderr += err
        return self.returncode

    @property
    def returncode(self) -> int:
        code = self.proc.returncode
        if self.parent != "wnowait" and code is not None and code > 128:
            return 128 - code  # the reaper and the shell say 128 + N for signal N
        return int(code)

    @property
    def pid(self) -> int:
        return int(self.info["pid"])  # type: ignore[call-overload]

    def kill_both(self) -> None:
        """A cgroup-wide kill: the watchdog first, then the host, so no postmortem is
        written and the segment is left behind as an orphan."""
        import psutil

        watchdog = psutil.Process(int(self.info["watchdog_pid"]))  # type: ignore[call-overload]
        watchdog.kill()
        watchdog.wait(10)  # reaped by the host's heartbeat thread at once
        os.kill(int(self.info["pid"]), 9)  # type: ignore[call-overload]
        self.finish()

    def dumps(self) -> list[dict[str, object]]:
        if not self.directory.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.directory.glob("*.json"))]


@pytest.fixture
def diag_dir(tmp_path: Path) -> Path:
    return tmp_path / "diag"


@pytest.fixture
def start_host(diag_dir: Path):  # type: ignore[no-untyped-def]
    hosts: list[Host] = []

    def start(*args: str, env: dict[str, str] | None = None, directory: Path | None = None,
              cgroup: Path | None = None, parent: str = "popen",
              prefix: list[str] | None = None) -> Host:
        host = Host(directory or diag_dir, *args, env=env, cgroup=cgroup, parent=parent,
                    prefix=prefix)
        hosts.append(host)
        return host

    yield start
    end_hosts(hosts)


def end_hosts(hosts: list[Host]) -> None:
    """Kill whatever of ``hosts`` still runs (after a failed test) and reap it."""
    for host in hosts:
        if host.proc.poll() is None:
            if host.info and not host.prefix:  # the host itself, not only its parent
                try:
                    os.kill(host.pid, 9)
                except ProcessLookupError:
                    pass
            host.proc.kill()
        try:
            host.proc.communicate(timeout=30)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def _memory_cgroup_parent() -> tuple[Path, str] | None:
    """Where this machine lets us make a memory cgroup: (directory, version)."""
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return v1, "v1"
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.subtree_control"
    if controllers.exists() and "memory" in controllers.read_text() and os.access(v2, os.W_OK):
        return v2, "v2"
    return None


@pytest.fixture
def memory_cgroup():  # type: ignore[no-untyped-def]
    """A fresh memory cgroup with a 200 MB limit; skipped where the machine has none."""
    found = _memory_cgroup_parent()
    if found is None:
        pytest.skip("no writable cgroup memory controller on this machine (needs root and "
                    "cgroup v1 memory or a v2 memory controller)")
    parent, version = found
    path = parent / f"watchdog-core-test-{os.getpid()}-{os.urandom(3).hex()}"
    path.mkdir()
    limit_file = "memory.limit_in_bytes" if version == "v1" else "memory.max"
    (path / limit_file).write_text(str(200 * 1024 * 1024))
    if version == "v2":
        (path / "memory.swap.max").write_text("0")
    yield path
    import time

    for attempt in range(200):  # the cgroup can be removed once its last process is reaped
        try:
            path.rmdir()
            break
        except OSError:
            if attempt == 100:  # 5 s: what a test left running in it goes now, never a leak
                for pid in (path / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except (ProcessLookupError, ValueError):
                        pass
            time.sleep(0.05)


def segment_exists(name: str) -> bool:
    return Path("/dev/shm", name).exists()


def pidfd_exit_info() -> bool:
    """Does this kernel return a reaped child's exit status through its pidfd (6.15+)?

    Asked here with the raw ioctl, not through the code under test."""
    import fcntl
    import struct

    get_info = (3 << 30) | (64 << 16) | (0xFF << 8) | 11  # PIDFD_GET_INFO, 64-byte struct
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    pidfd = os.pidfd_open(proc.pid)
    try:
        proc.wait()
        buf = bytearray(64)
        struct.pack_into("<Q", buf, 0, 1 << 3)  # PIDFD_INFO_EXIT
        try:
            fcntl.ioctl(pidfd, get_info, buf, True)
        except OSError:
            return False
        mask, code = struct.unpack_from("<Q", buf, 0)[0], struct.unpack_from("<i", buf, 60)[0]
        return bool(mask & 1 << 3) and code == 7 << 8
    finally:
        os.close(pidfd)


needs_pidfd_exit_info = pytest.mark.skipif(
    not hasattr(os, "pidfd_open") or not pidfd_exit_info(),
    reason="the kernel has no PIDFD_INFO_EXIT (Linux < 6.15): a reaped host's exit status "
           "cannot be read there, and the verdicts are 'likely' or 'unknown' instead")


# -- a small valid dump, for the CLI's tests ---------------------------------------------

DUMP_NAME = "memory-s-20261129T000000.000000Z.json"


def minimal_dump(**fields: object) -> dict[str, object]:
    """The fields a diagnostics file needs, as its JSON would hold them; ``fields``
    replace or add top-level keys."""
    doc: dict[str, object] = {
        "timestamp": "2026-11-29T00:00:00.000000Z", "sessionId": "s", "trigger": "manual",
        "level": "normal", "collectionComplete": True,
        "memory": {"rss": 1 << 20, "heapUsed": 1 << 20, "heapLimit": 4 << 20, "ratio": 0.25,
                   "limitSource": "configured"},
        "host": {"pid": 4242, "alive": True, "argv": ["app"]}, "suggestion": "carry on",
        "ring": {"slots": 16, "records": 3},
        "watchdog": {"pid": 4243, "version": "0", "interval": 0.25},
    }
    doc.update(fields)
    return doc


def host_env(**more: str) -> dict[str, str]:
    """The environment of a host a test starts itself: this checkout first on its path,
    never disabled by the environment pytest runs in, and ``more``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **more)
    env.pop("WATCHDOG_CORE_DISABLE", None)
    return env


def run_cli(*argv: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m watchdog_core ARGV`` in a child, this checkout first on its path;
    ``env`` adds to (or replaces in) this process's environment."""
    full = dict(os.environ, PYTHONPATH=str(ROOT))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "watchdog_core", *argv],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=full)
