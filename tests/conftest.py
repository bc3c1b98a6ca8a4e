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


class Host:
    """A real host process running tests/integration/host_program.py.

    The program prints ``ready {json}`` once its watchdog is up and its stats are
    recorded, then obeys one command line on stdin. ``finish()`` returns only when
    both the host and its watchdog have exited: the watchdog inherits the host's
    stderr, so EOF there means the watchdog is gone too.
    """

    def __init__(self, directory: Path, *args: str, env: dict[str, str] | None = None,
                 cgroup: Path | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.pop("WATCHDOG_CORE_DISABLE", None)
        full_env.update(env or {})
        self.directory = directory
        argv = [sys.executable, str(HOST_PROGRAM), str(directory), *args]
        if cgroup is not None:
            # Join the cgroup before Python starts, so the host (and its watchdog) live in it.
            argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]
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
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout += out
        self.stderr += err
        return self.proc.returncode

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
              cgroup: Path | None = None) -> Host:
        host = Host(directory or diag_dir, *args, env=env, cgroup=cgroup)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        if host.proc.poll() is None:
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
    for _ in range(100):  # the cgroup can be removed once its last process is reaped
        try:
            path.rmdir()
            break
        except OSError:
            import time

            time.sleep(0.05)


def segment_exists(name: str) -> bool:
    return Path("/dev/shm", name).exists()
