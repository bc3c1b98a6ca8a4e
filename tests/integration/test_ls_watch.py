"""``ls --watch`` (docs/cli.md, "ls --watch"): the live view in a real terminal (tmux),
through a pipe, and over segments that vanish while they are read."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from watchdog_core import _shm
from watchdog_core.cli import _live, ls

WATCH = [sys.executable, "-m", "watchdog_core", "ls", "--watch", "0.2"]

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed: the live view is tested in a "
                                "real terminal, which tmux provides (apt-get install tmux)")


class Terminal:
    """A tmux server of our own (a private socket) with one 160x40 window."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"watchdog-core-test-{os.getpid()}-{os.urandom(4).hex()}"
        self.raw = tmp_path / "pane.raw"  # every byte the program wrote to the terminal
        self.status = tmp_path / "status"  # the program's exit status, once it exited
        conf = tmp_path / "tmux.conf"
        # remain-on-exit: the pane and what it shows outlive the program.
        conf.write_text("set -g remain-on-exit on\n")
        self.base = ["tmux", "-L", self.socket, "-f", str(conf)]
        self.env = {k: v for k, v in os.environ.items() if k != "TMUX"}
        self.socket_path = ""

    def tmux(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True,
                              check=True, env=self.env, timeout=30).stdout

    def start(self, argv: list[str]) -> None:
        # tmux's own #{pane_dead_status} is at times empty for a pane whose program has
        # exited: the shell writes it down instead. A shell waiting for a command that
        # handles Ctrl-C goes on once the command has exited.
        command = shlex.join(["bash", "-c", '"$@"; echo $? > "$0"', str(self.status),
                              "env", f"PYTHONPATH={ROOT}", *argv])
        # pipe-pane in the same call: set before tmux reads the program's first byte.
        self.tmux("new-session", "-d", "-x", "160", "-y", "40", "-s", "watch", command,
                  ";", "pipe-pane", "-t", "watch", f"cat >> {shlex.quote(str(self.raw))}")
        self.socket_path = self.pane("socket_path")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "watch")

    def wait_for(self, what: Callable[[str], bool], timeout: float = 60.0) -> str:
        """The first screen ``what`` accepts, looked at every 20 ms."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if what(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"never seen on the screen; the last one:\n{screen}")
            time.sleep(0.02)

    def wait_raw(self, what: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
        """The program's bytes once ``what`` accepts them (pipe-pane's cat may lag)."""
        deadline = time.monotonic() + timeout
        while not what(raw := self.raw.read_bytes()):
            assert time.monotonic() < deadline, raw[-500:]
            time.sleep(0.02)
        return raw

    def pane(self, field: str) -> str:
        return self.tmux("display-message", "-p", "-t", "watch", f"#{{{field}}}").strip()

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False,
                       env=self.env, timeout=30)
        if self.socket_path:  # tmux 3.3 leaves it behind
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        term.kill()


def row(screen: str, session: str) -> dict[str, str] | None:
    """The ALIVE and LEVEL cells of ``session``'s row on ``screen``."""
    match = re.search(rf"^{re.escape(session)}\s+\d+\s+(yes|no|gone)\s+(\S+)\s+(.*)$",
                      screen, re.MULTILINE)
    if match is None:
        return None
    return {"alive": match[1], "level": match[2], "rest": match[3]}


@needs_tmux
def test_the_live_view_in_a_terminal(terminal: Terminal, start_host) -> None:
    # Sessions of other tests may share the machine: ours sort first ("0" before any
    # letter), so they are on the screen however many there are.
    tag = os.urandom(3).hex()
    rising, idle = f"0watch-{tag}-rising", f"0watch-{tag}-idle"
    terminal.start(WATCH)
    first = terminal.wait_for(lambda s: "SESSION" in s)
    assert first.splitlines()[0].startswith("every 0.2 s, ")
    assert terminal.pane("cursor_flag") == "0"  # hidden while it draws

    a = start_host("--session", rising, "--limit", "128MiB", "--label", "pressure:0")
    b = start_host("--session", idle, "--label", "tool:shell")
    a.wait_ready()
    b.wait_ready()
    seen = terminal.wait_for(lambda s: (row(s, rising) or {}).get("level") == "normal"
                             and row(s, idle) is not None)
    assert row(seen, idle)["alive"] == "yes"  # type: ignore[index]
    assert "tool:shell" in row(seen, idle)["rest"]  # type: ignore[index]

    assert a.ask("pressure") == "level critical"
    critical = terminal.wait_for(lambda s: (row(s, rising) or {}).get("level") == "critical")
    assert row(critical, rising)["alive"] == "yes"  # type: ignore[index]
    # Its growth: "+37 MiB/s" while it grows ("flat" once the watchdog saw it stop).
    assert re.search(r"  (\+\d+ [KMG]iB/s|flat)  ", row(critical, rising)["rest"])  # type: ignore[index]

    a.send("kill")
    gone = terminal.wait_for(lambda s: (row(s, rising) or {}).get("alive") == "gone")
    assert row(gone, rising)["level"] == "critical"  # what it last said
    assert row(gone, idle)["alive"] == "yes"
    assert a.finish() == -signal.SIGKILL
    # A gone session stays a few refreshes, then leaves the table.
    terminal.wait_for(lambda s: row(s, rising) is None)

    # A terminal narrower than the table: every line cut to it, none wrapped (-J would
    # join a wrapped line into one longer than the width), the title still on top.
    terminal.tmux("resize-window", "-t", "watch", "-x", "60", "-y", "20")
    narrow = terminal.wait_for(lambda s: max(map(len, s.splitlines())) <= 60
                               and s.startswith("every"))
    assert narrow.splitlines()[1].startswith("SESSION")

    b.send("stop")
    assert b.finish() == 0

    terminal.tmux("send-keys", "-t", "watch", "C-c")
    deadline = time.monotonic() + 30
    while not terminal.status.exists() or not terminal.status.read_text().endswith("\n"):
        assert time.monotonic() < deadline, terminal.screen()
        time.sleep(0.02)
    assert terminal.status.read_text() == "0\n"
    assert "Traceback" not in terminal.screen()
    # Every byte the program wrote: the cursor hidden once, and shown again at the end.
    raw = terminal.wait_raw(lambda raw: b"\x1b[?25h" in raw)
    assert raw.count(b"\x1b[?25l") == 1
    assert raw.rstrip(b"^C\r\n").endswith(b"\x1b[?25h")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_through_a_pipe_each_refresh_is_a_table_of_its_own(stop: signal.Signals) -> None:
    proc = subprocess.Popen(WATCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    guard = threading.Timer(60, proc.kill)  # a hang fails the test, not the run
    guard.start()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # title, header, first row
        while len([line for line in lines if line.startswith("every ")]) < 3:
            lines.append(proc.stdout.readline())
        proc.send_signal(stop)  # Ctrl-C, or `kill`: the view ends, exit 0
        out, err = proc.communicate(timeout=30)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = "".join(lines) + out
    assert proc.returncode == 0, err
    assert err == ""
    assert "\x1b" not in text
    tables = text.split("\n\n")[:-1]  # the last one may be cut by the Ctrl-C
    assert tables
    for table in tables:
        title, header, *_ = table.splitlines()
        assert title.startswith("every 0.2 s, ")
        assert header.split()[:5] == ["SESSION", "PID", "ALIVE", "LEVEL", "RATIO"]


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "0.01", "1e9", "\x1b[2J"])
def test_a_bad_refresh_interval_is_one_line_and_exit_2(value: str) -> None:
    result = run_cli("ls", "--watch", value)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("watchdog-core: error: --watch takes the seconds between refreshes")
    assert "\x1b" not in line


@pytest.mark.parametrize("extra", [["--json"], ["--dir", "/tmp"], ["--last", "3"]])
def test_watch_refuses_what_it_does_not_show(extra: list[str]) -> None:
    result = run_cli("ls", "--watch", *extra)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1


def test_a_segment_that_vanishes_while_it_is_read(start_host, monkeypatch) -> None:
    """One segment removed after the listing, before its mapping; another once mapped,
    before its locks are looked at: never an error, and the view says they are gone."""
    host = start_host("--session", f"0vanish-{os.urandom(3).hex()}")
    host.wait_ready()
    # Copies of the host's live segment, ours to remove at the worst moments. We hold
    # their host locks, so no one takes them for orphans to recover meanwhile.
    source = Path("/dev/shm", str(host.info["shm"]))
    early, late = (f"{_shm.PREFIX}0vanish-{os.urandom(3).hex()}-{n}" for n in (1, 2))
    held = []
    try:
        for name in (early, late):
            shutil.copyfile(source, Path("/dev/shm", name))
            held.append(os.open(Path("/dev/shm", name), os.O_RDWR))
            assert _shm._lock(held[-1], _shm.HOST)
        real_segments, real_map = _shm.list_segments, ls.map_segment

        def listing() -> list[str]:
            names = real_segments()
            Path("/dev/shm", early).unlink()
            return names

        def mapping(name: str):  # type: ignore[no-untyped-def]
            mapped = real_map(name)
            if name == late:
                Path("/dev/shm", late).unlink()
            return mapped

        view = _live.LiveView()
        before = {str(r["segment"]): r for r in view.refresh(ls.sessions(), 0.0)}
        assert before[early]["alive"] is True and before[late]["alive"] is True
        monkeypatch.setattr(_shm, "list_segments", listing)
        monkeypatch.setattr(ls, "map_segment", mapping)
        during = {str(r["segment"]): r for r in view.refresh(ls.sessions(), 1.0)}
        monkeypatch.undo()
        after = view.refresh(ls.sessions(), 2.0)
    finally:
        for fd in held:
            os.close(fd)
        for name in (early, late):
            Path("/dev/shm", name).unlink(missing_ok=True)
    assert during[early].get("gone") is True  # not read: what the last refresh said
    assert during[late]["alive"] is False and "gone" not in during[late]  # read, unlocked
    assert {early, late} <= {str(r["segment"]) for r in after if r.get("gone")}
    assert not [r for r in after if r["segment"] == host.info["shm"] and r.get("gone")]
    _live.session_lines(after, _live.WATCH_TABLE)  # every row drawable
    host.send("stop")
    assert host.finish() == 0
