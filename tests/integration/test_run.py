"""``watchdog-core run -- CMD``: real children of any language, real signals, a real pty,
a real pid namespace and a real cgroup OOM kill (docs/run.md)."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

RUN = [sys.executable, "-m", "watchdog_core", "run"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def dumps(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("memory-*.json"))]


def by_trigger(directory: Path, trigger: str) -> list[dict[str, object]]:
    return [d for d in dumps(directory) if d["trigger"] == trigger]


def run(diag: Path, *command: str, options: tuple[str, ...] = (), timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--dir", str(diag), *options, "--", *command, timeout=timeout)


def no_leftovers(diag: Path) -> None:
    assert not list(diag.glob("*.tmp"))
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("watchdog_core-run")]


# -- exit codes ---------------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 2, 3])
def test_exit_codes_pass_through(tmp_path: Path, code: int) -> None:
    result = run(tmp_path, "sh", "-c", f"echo out; echo err >&2; exit {code}")
    assert result.returncode == code
    assert result.stdout == "out\n"
    post = by_trigger(tmp_path, "host-died")
    if code == 0:
        assert post == [] and result.stderr == "err\n"
        return
    # The child's stderr, then one line of ours: nothing else.
    lines = result.stderr.splitlines()
    assert lines[0] == "err" and len(lines) == 2 and "postmortem written to" in lines[1]
    (dump,) = post
    exit = dump["host"]["exit"]
    assert (exit["kind"], exit["exitCode"], exit["confidence"]) == ("exited", code, "certain")
    assert "the parent's wait status: exit status" in " ".join(exit["evidence"])
    assert dump["host"]["argv"][:2] == ["sh", "-c"]
    assert dump["host"]["python"] is None
    assert (tmp_path / dump["ring"]["file"]).exists()


@pytest.mark.parametrize(("sig", "kind"), [(signal.SIGKILL, "killed"),
                                           (signal.SIGSEGV, "crashed")])
def test_death_by_signal_is_128_plus_n(tmp_path: Path, sig: int, kind: str) -> None:
    result = run(tmp_path, "sh", "-c", f"sleep 0.6; kill -{int(sig)} $$",
                 options=("--no-cgroup",))
    assert result.returncode == 128 + sig
    (dump,) = by_trigger(tmp_path, "host-died")
    exit = dump["host"]["exit"]
    assert exit["kind"] == kind and exit["signal"] == signal.Signals(sig).name
    assert exit["confidence"] == "certain"
    assert dump["memory"]["rss"] > 0  # sampled while it lived
    no_leftovers(tmp_path)


def test_command_not_found_is_127(tmp_path: Path) -> None:
    result = run(tmp_path, "no-such-command-xyz")
    assert result.returncode == 127
    assert result.stderr == "watchdog-core run: no-such-command-xyz: command not found\n"
    assert dumps(tmp_path) == []


def test_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run(tmp_path, str(script))
    assert result.returncode == 126
    assert "permission denied" in result.stderr
    result = run(tmp_path, str(tmp_path))
    assert result.returncode == 126 and "is a directory" in result.stderr


def test_exec_format_error_is_126(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\0" * 60)
    junk.chmod(0o755)
    result = run(tmp_path, str(junk))
    assert result.returncode == 126
    assert "Exec format error" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    no_leftovers(tmp_path)


@pytest.mark.parametrize("options", [
    ("--memory-limit", "1"), ("--memory-limit", "lots"), ("--soft", "0.9"),
    ("--interval", "0"), ("--session-id", "../x"), ("--bogus",), ("--max-dumps", "-1"),
])
def test_own_bad_options_are_125(tmp_path: Path, options: tuple[str, ...]) -> None:
    result = run(tmp_path, "true", options=options)
    assert result.returncode == 125, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_no_command_is_125(tmp_path: Path) -> None:
    result = run_cli("run", "--dir", str(tmp_path))
    assert result.returncode == 125
    assert "needs a command" in result.stderr


# -- signals -----------------------------------------------------------------------------

def test_sigterm_to_run_reaches_the_child_once(tmp_path: Path) -> None:
    marks = tmp_path / "got"
    child = (f"trap 'echo TERM >> {marks}; exit 7' TERM; echo ready; "
             "while :; do sleep 0.05; done")
    with subprocess.Popen([*RUN, "--dir", str(tmp_path), "--", "sh", "-c", child],
                          stdout=subprocess.PIPE, text=True, env=ENV) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 7
    assert marks.read_text() == "TERM\n"
    (dump,) = by_trigger(tmp_path, "host-died")
    assert dump["host"]["exit"]["exitCode"] == 7


COUNT_SIGINTS = """
import signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda s, f: got.append(time.monotonic()))
print("ready", flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not (got and time.monotonic() - got[0] > 1.0):
    time.sleep(0.02)
sys.exit(10 + len(got))
"""


def _pty_run(tmp_path: Path, *command: str) -> tuple[int, int]:
    """``run`` as a terminal session's leader, the pty its controlling terminal:
    (pid, master fd)."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        os.execve(sys.executable, [*RUN, "--dir", str(tmp_path), "--no-cgroup", "--",
                                   *command], ENV)
    return pid, master


def _end_pty_run(pid: int, master: int) -> None:
    """After a failure: nothing of the test may outlive it (a stopped run holds a ring)."""
    os.close(master)
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)  # run leads its terminal session
    except OSError:
        pass
    for group in _child_groups(pid):
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _child_groups(pid: int) -> set[int]:
    groups = set()
    for entry in Path("/proc").iterdir():
        try:
            raw = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid:  # ppid
            groups.add(int(fields[2]))
    return groups


def _read_until(master: int, needle: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in {seen!r}"
        if select.select([master], [], [], left)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    return seen


def test_ctrl_c_in_a_terminal_reaches_the_child_exactly_once(tmp_path: Path) -> None:
    pid, master = _pty_run(tmp_path, sys.executable, "-c", COUNT_SIGINTS)
    try:
        _read_until(master, b"ready")
        os.write(master, b"\x03")  # the terminal's interrupt character: Ctrl-C
        _, status = os.waitpid(pid, 0)
        os.close(master)
    except BaseException:
        _end_pty_run(pid, master)
        raise
    assert os.waitstatus_to_exitcode(status) == 11  # one SIGINT, and run survived it


def _state(pid: int) -> str:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


def _wait_state(pid: int, states: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while (state := _state(pid)) not in states:
        if time.monotonic() >= deadline:
            wchan = Path(f"/proc/{pid}/wchan").read_text()
            raise AssertionError(f"pid {pid} stayed {state} in {wchan}")
        time.sleep(0.01)
    return state


def test_ctrl_z_stops_run_with_the_child_and_fg_continues_both(tmp_path: Path) -> None:
    # A Python child, not a shell: dash forks `sleep` with vfork, and a Ctrl-Z landing
    # before the exec leaves the shell waiting on a stopped vfork child (state D), in
    # any terminal, with or without run.
    pid, master = _pty_run(tmp_path, sys.executable, "-c",
                           "import os, time; print('ready', os.getpid(), flush=True); "
                           "time.sleep(2); print('done')")
    try:
        line = _read_until(master, b"ready")
        line += _read_until(master, b"\n") if not line.rstrip().split()[-1].isdigit() else b""
        child = int(line.split(b"ready")[1].split()[0])
        os.write(master, b"\x1a")  # Ctrl-Z: SIGTSTP to the foreground group, the child's
        _wait_state(child, "T")
        _wait_state(pid, "T")  # run stops too, as its shell expects of a job
        os.kill(pid, signal.SIGCONT)  # what `fg` does to the job
        _read_until(master, b"done")
        _, status = os.waitpid(pid, 0)
        os.close(master)
    except BaseException:
        _end_pty_run(pid, master)
        raise
    assert os.waitstatus_to_exitcode(status) == 0


# -- as PID 1 ----------------------------------------------------------------------------

def _unshare() -> list[str]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a new pid namespace")
    return ["unshare", "--pid", "--fork", "--mount-proc"]


def test_as_pid_1_it_reaps_orphans(tmp_path: Path) -> None:
    # The grandchild is orphaned at once (its parent, the subshell, exits) and so is
    # adopted by PID 1: run. Had run not reaped it, it would stay a zombie.
    child = "(sleep 0.2 &); sleep 1; ps -e -o stat= | grep -c '^Z' || true; exit 5"
    result = subprocess.run([*_unshare(), *RUN, "--dir", str(tmp_path), "--", "sh", "-c",
                             child], capture_output=True, text=True, env=ENV, timeout=60,
                            check=False)
    assert result.returncode == 5, result.stderr
    assert result.stdout.strip() == "0"
    (dump,) = by_trigger(tmp_path, "host-died")
    assert dump["host"]["exit"]["exitCode"] == 5


def test_as_pid_1_a_killed_child_still_gets_its_postmortem(tmp_path: Path) -> None:
    result = subprocess.run([*_unshare(), *RUN, "--dir", str(tmp_path), "--", "sh", "-c",
                             "sleep 0.5; kill -9 $$"], capture_output=True, text=True,
                            env=ENV, timeout=60, check=False)
    assert result.returncode == 137
    (dump,) = by_trigger(tmp_path, "host-died")
    assert dump["host"]["exit"]["signal"] == "SIGKILL"
    assert dump["host"]["exit"]["confidence"] == "certain"


# -- the tree ----------------------------------------------------------------------------

ALLOCATE = "x = b'a' * ({mib} << 20); import time; time.sleep(30)"


def _tree_script(marks: Path) -> str:
    """A shell that forks two allocating Python children, waits until both hold their
    memory, and SIGKILLs the bigger one (as a supervisor's timeout would)."""
    py = sys.executable
    return (f"{py} -c \"{ALLOCATE.format(mib=60)}\" & A=$!; "
            f"{py} -c \"{ALLOCATE.format(mib=90)}\" & B=$!; "
            f"while [ ! -s {marks} ]; do sleep 0.05; done; "
            "kill -9 $B; sleep 0.8; kill $A; wait; exit 4")


def _wait_for_tree(diag: Path, marks: Path, proc: subprocess.Popen[str]) -> None:
    """Until run's status block shows the tree above 150 MiB, then tell the shell."""
    from watchdog_core import _reader, _shm

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name in _shm.list_segments():
            try:
                mapping = _shm.open_segment(name)
            except OSError:
                continue
            with _reader.RingImage(memoryview(mapping)) as image:
                status = image.status
                ours = image.diagnostics_dir == str(diag)
            mapping.close()
            if ours and status is not None and status.rss > 150 << 20:
                marks.write_text("go")
                return
        assert proc.poll() is None
        time.sleep(0.1)
    raise AssertionError("the tree's memory never reached 150 MiB")


@pytest.mark.parametrize("measure", ["cgroup", "tree-rss"])
def test_the_tree_is_measured_and_a_killed_grandchild_is_named(tmp_path: Path,
                                                               measure: str) -> None:
    if measure == "cgroup" and not os.access("/sys/fs/cgroup/memory", os.W_OK):
        pytest.skip("no writable cgroup v1 memory hierarchy: run cannot make a cgroup")
    diag, marks = tmp_path / "d", tmp_path / "go"
    options = ["--memory-limit", "200MiB"] + (["--no-cgroup"] if measure == "tree-rss"
                                              else [])
    with subprocess.Popen([*RUN, "--dir", str(diag), *options, "--", "sh", "-c",
                           _tree_script(marks)], env=ENV, text=True) as proc:
        _wait_for_tree(diag, marks, proc)
        assert proc.wait(timeout=60) == 4
    (died,) = by_trigger(diag, "descendant-died")
    descendant = died["descendant"]
    assert descendant["name"].startswith("python")
    assert descendant["rss"] > 80 << 20  # its own memory, at the last sample before
    exit = descendant["exit"]
    assert (exit["kind"], exit["signal"], exit["confidence"]) == ("killed", "SIGKILL",
                                                                  "certain")
    # The tree, both children and the shell, graded against the limit.
    assert died["memory"]["measure"] == measure
    assert died["memory"]["rss"] > 150 << 20
    assert died["host"]["alive"] is True
    # Graded as one: the tree crossed hard against the 200 MiB limit, and was dumped.
    assert by_trigger(diag, "hard") or by_trigger(diag, "critical")
    (post,) = by_trigger(diag, "host-died")  # exit 4; the SIGTERMed child is no news
    assert post["host"]["exit"]["exitCode"] == 4
    assert post["memory"]["measure"] == measure
    assert not [n for n in os.listdir("/sys/fs/cgroup/memory")
                if n.startswith("watchdog-core-run-")] if measure == "cgroup" else True


@pytest.mark.cgroup
def test_a_real_oom_kill_of_a_c_program_in_the_tree(tmp_path: Path,
                                                    memory_cgroup: Path) -> None:
    """`tail -c` holds what it reads: in a 200 MB cgroup it is OOM-killed within a
    fraction of a second, before any sample sees it. Its shell lives on."""
    command = ("head -c 400000000 /dev/zero | tail -c 399000000 > /dev/null; "
               "echo pipeline $?; exit 0")
    result = subprocess.run(
        ["sh", "-c", f'echo $$ > "{memory_cgroup}/cgroup.procs" && exec "$@"', "sh", *RUN,
         "--dir", str(tmp_path), "--", "sh", "-c", command],
        capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pipeline 137\n"
    assert by_trigger(tmp_path, "host-died") == []  # the shell exited 0
    (died,) = by_trigger(tmp_path, "descendant-died")
    descendant = died["descendant"]
    assert descendant["exit"]["kind"] == "oom-killed"
    assert descendant["exit"]["confidence"] == "certain"
    assert descendant["name"] == "tail"
    assert descendant["pid"] is not None
    assert descendant["rss"] > 100 << 20
    assert died["memory"]["measure"] == "cgroup"


@pytest.mark.cgroup
def test_a_real_oom_kill_of_the_child_itself(tmp_path: Path, memory_cgroup: Path) -> None:
    # tail itself is the child: it holds the last 300 MB of its stdin.
    run_tail = " ".join([*RUN, "--dir", str(tmp_path), "--", "tail", "-c", "300000000"])
    result = subprocess.run(
        ["sh", "-c", f'echo $$ > "{memory_cgroup}/cgroup.procs" && '
         f"head -c 400000000 /dev/zero | {run_tail} > /dev/null; echo $?"],
        capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert result.stdout == "137\n", result.stderr
    (post,) = by_trigger(tmp_path, "host-died")
    exit = post["host"]["exit"]
    assert (exit["kind"], exit["signal"], exit["confidence"]) == ("oom-killed", "SIGKILL",
                                                                  "certain")
    assert post["host"]["argv"] == ["tail", "-c", "300000000"]


# -- the rest of the session -------------------------------------------------------------

def test_dump_asks_a_run_session_from_outside(tmp_path: Path) -> None:
    with subprocess.Popen([*RUN, "--dir", str(tmp_path), "--session-id", "outside-1",
                           "--", "sh", "-c", "echo ready; sleep 30"],
                          stdout=subprocess.PIPE, text=True, env=ENV) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        asked = run_cli("dump", "outside-1")
        assert asked.returncode == 0, asked.stderr
        path = Path(asked.stdout.strip())
        dump = json.loads(path.read_text())
        assert dump["trigger"] == "manual" and dump["sessionId"] == "outside-1"
        listed = run_cli("ls", "--dir", str(tmp_path))
        assert "outside-1" in listed.stdout
        proc.terminate()
        proc.wait(timeout=30)


def test_secrets_on_the_command_line_are_redacted(tmp_path: Path) -> None:
    result = run(tmp_path, "sh", "-c", "exit 9", "--api-key=sk-live-123456789abcdef",
                 "--token", "ghp_abcdefabcdef")
    assert result.returncode == 9
    (post,) = by_trigger(tmp_path, "host-died")
    text = json.dumps(post)
    assert "sk-live-123456789abcdef" not in text and "ghp_abcdefabcdef" not in text


# -- a Python child that calls start_watchdog() too ----------------------------------------

JOINING_CHILD = """
import os, sys, time
import watchdog_core
wd = watchdog_core.start_watchdog(memory_limit="512MiB", diagnostics_dir=sys.argv[1])
wd.record(tokens=5, turns=2)
wd.mark("tool:shell")
import multiprocessing
ctx = multiprocessing.get_context("fork")
q = ctx.Queue()
def worker(q):
    w = watchdog_core.start_watchdog(diagnostics_dir=sys.argv[2])
    q.put(w.shm_name != wd.shm_name)
    w.stop()
p = ctx.Process(target=worker, args=(q,))
p.start(); print("worker apart", q.get(timeout=30), flush=True); p.join()
print("joined", wd.shm_name, wd.session_id, flush=True)
time.sleep(0.6)
{end}
"""


def test_a_python_child_joins_runs_session(tmp_path: Path) -> None:
    diag, other = tmp_path / "d", tmp_path / "other"
    script = JOINING_CHILD.format(end="raise RuntimeError('boom')")
    result = run(diag, sys.executable, "-c", script, str(diag), str(other),
                 options=("--memory-limit", "1GiB", "--session-id", "agent-1"))
    assert result.returncode == 1, result.stderr
    assert "worker apart True" in result.stdout  # a forked worker inherits the offer, not it
    assert "joined watchdog_core-agent-1-" in result.stdout
    (post,) = dumps(diag)  # one session, one file
    assert post["sessionId"] == "agent-1"
    assert post["session"] == {"tokens": 5, "turns": 2}
    assert post["lastActivity"] == "tool:shell"
    exit = post["host"]["exit"]
    assert (exit["kind"], exit["exitCode"], exit["exception"], exit["confidence"]) == (
        "exited", 1, "RuntimeError", "certain")
    assert "the parent's wait status: exit status 1" in exit["evidence"]
    assert post["memory"]["limits"]["configured"] == 512 << 20  # the tighter of the two
    assert post["memory"]["measure"] in ("cgroup", "tree-rss")
    no_leftovers(diag)


def test_a_joined_child_that_stops_ends_the_session(tmp_path: Path) -> None:
    script = JOINING_CHILD.format(end="wd.stop(); time.sleep(0.5); sys.exit(3)")
    result = run(tmp_path, sys.executable, "-c", script, str(tmp_path), str(tmp_path / "o"))
    assert result.returncode == 3, result.stderr
    assert dumps(tmp_path) == []  # stop() is a clean end: no postmortem
    no_leftovers(tmp_path)


def test_the_offer_is_only_for_the_pid_it_names(tmp_path: Path) -> None:
    # The shell is run's child and takes no offer; the Python under it is a grandchild
    # with the variable inherited: it starts a session of its own.
    script = JOINING_CHILD.format(end="sys.exit(0)")
    result = run(tmp_path / "d", "sh", "-c", f'{sys.executable} -c "$0" "$@"; exit 2',
                 script, str(tmp_path / "g"), str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert "joined watchdog_core-" in result.stdout
    assert "joined watchdog_core-sh-" not in result.stdout
    (post,) = dumps(tmp_path / "d")
    assert post["session"] == {}  # the grandchild's stats went to its own session


def test_a_killed_run_leaves_its_ring_alone_until_the_child_ends(tmp_path: Path) -> None:
    with subprocess.Popen([*RUN, "--dir", str(tmp_path), "--session-id", "orphaned-run",
                           "--no-cgroup", "--", "sh", "-c", "echo $$; read line"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=ENV) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        child = int(proc.stdout.readline())
        proc.kill()  # run is gone; the child reads on
        proc.wait(timeout=30)
        assert run_cli("gc", "--dir", str(tmp_path)).returncode == 0
        assert dumps(tmp_path) == []  # the child lives: not an orphan
        assert [n for n in os.listdir("/dev/shm") if "orphaned-run" in n]
        proc.stdin.write("end\n")
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child}").exists():  # reaped by init or the subreaper above
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert run_cli("gc", "--dir", str(tmp_path)).returncode == 0
    (post,) = dumps(tmp_path)
    assert post["trigger"] == "recovered"
    assert not [n for n in os.listdir("/dev/shm") if "orphaned-run" in n]


# -- what a breaker found ------------------------------------------------------------------

def _bash_in_a_pty() -> tuple[int, int]:
    """An interactive bash with job control, a pty its controlling terminal."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover
        os.execve("/bin/bash", ["bash", "--norc", "--noprofile", "-i"],
                  dict(ENV, PS1="$ ", TERM="dumb"))
    return pid, master


def _type(master: int, line: str) -> None:
    os.write(master, line.encode() + b"\n")


def test_ctrl_z_then_bg_leaves_the_terminal_to_the_shell(tmp_path: Path) -> None:
    ticker = ("import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)")
    (tmp_path / "tick.py").write_text(ticker)
    bash, master = _bash_in_a_pty()
    try:
        _type(master, f"{' '.join(RUN)} --dir {tmp_path / 'd'} --no-cgroup -- "
                      f"{sys.executable} {tmp_path / 'tick.py'} > {tmp_path / 'out'}")
        deadline = time.monotonic() + 30
        while not (tmp_path / "out").exists() or "tick" not in (tmp_path / "out").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.write(master, b"\x1a")
        _read_until(master, b"Stopped")
        _type(master, "bg")
        _type(master, "echo shell-$((40 + 2))")
        _read_until(master, b"shell-42")  # the shell still reads its terminal
        size = len((tmp_path / "out").read_text())
        time.sleep(0.6)
        assert len((tmp_path / "out").read_text()) > size  # the job goes on in the background
        _type(master, "kill %1; wait; echo done-$((1 + 1))")
        _read_until(master, b"done-2")
    finally:
        _end_pty_run(bash, master)


def test_a_background_run_whose_child_reads_the_terminal_comes_back_with_fg(
        tmp_path: Path) -> None:
    bash, master = _bash_in_a_pty()
    try:
        _type(master, f"{' '.join(RUN)} --dir {tmp_path} --no-cgroup -- {sys.executable} "
                      "-c \"print('got', input())\" &")
        # The child reads a terminal it does not own: it stops, and run with it.
        deadline = time.monotonic() + 30
        while True:
            _type(master, "jobs")
            seen = _read_until(master, b"$ ", timeout=5)
            if b"Stopped" in seen:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        _type(master, "fg")
        time.sleep(0.5)
        _type(master, "hello")
        _read_until(master, b"got hello")
        _type(master, "echo rc-$?")
        _read_until(master, b"rc-0")
    finally:
        _end_pty_run(bash, master)


def test_closed_stderr_never_sends_our_line_into_stdout(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", "-c", 'exec 2>&-; exec "$@"', "sh", *RUN, "--dir", str(tmp_path), "--",
         "sh", "-c", "echo data; if [ -e /proc/$$/fd/2 ]; then echo has-stderr; "
         "else echo no-stderr; fi; exit 3"],
        capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert result.returncode == 3
    assert result.stdout == "data\nno-stderr\n"  # the child's stderr closed, as given
    (post,) = by_trigger(tmp_path, "host-died")
    assert post["host"]["exit"]["exitCode"] == 3


def test_a_value_the_ring_cannot_hold_is_125_before_anything_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = run(tmp_path, "touch", str(marker),
                 options=("--max-dumps", "99999999999999999999999"))
    assert result.returncode == 125
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not marker.exists()
    no_leftovers(tmp_path)


def test_a_bad_interpreter_is_126_and_a_script_without_one_runs_with_sh(tmp_path: Path
                                                                        ) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/nonexistent/interpreter\necho never\n")
    bad.chmod(0o755)
    result = run(tmp_path, str(bad))
    assert result.returncode == 126
    assert "bad interpreter" in result.stderr
    plain = tmp_path / "plain"
    plain.write_text("echo from-sh $1\nexit 4\n")
    plain.chmod(0o755)
    result = run(tmp_path, str(plain), "arg")
    assert (result.returncode, result.stdout) == (4, "from-sh arg\n")


def test_disabled_runs_the_child_unwatched(tmp_path: Path) -> None:
    result = run_cli("run", "--dir", str(tmp_path), "--", "sh", "-c", "exit 6",
                     env={"WATCHDOG_CORE_DISABLE": "1"})
    assert result.returncode == 6 and result.stderr == ""
    assert dumps(tmp_path) == []


def _in_cgroup(cgroup: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv],
        capture_output=True, text=True, env=ENV, timeout=120, check=False)


BALLOON = "x = b'a' * (400 << 20)"


@pytest.mark.cgroup
def test_an_oom_kill_at_the_childs_very_start_is_certain_and_told_once(
        tmp_path: Path, memory_cgroup: Path) -> None:
    result = _in_cgroup(memory_cgroup, *RUN, "--dir", str(tmp_path), "--",
                        sys.executable, "-c", BALLOON)
    assert result.returncode == 137, result.stderr
    (post,) = by_trigger(tmp_path, "host-died")
    assert by_trigger(tmp_path, "descendant-died") == []  # its own kill, not also another's
    exit = post["host"]["exit"]
    assert (exit["kind"], exit["confidence"]) == ("oom-killed", "certain"), exit


@pytest.mark.cgroup
def test_an_early_grandchild_oom_kill_is_named_once(tmp_path: Path,
                                                    memory_cgroup: Path) -> None:
    result = _in_cgroup(memory_cgroup, *RUN, "--dir", str(tmp_path), "--", "sh", "-c",
                        f'{sys.executable} -c "{BALLOON}"; sleep 0.5; exit 0')
    assert result.returncode == 0, result.stderr
    # A sample may also have caught the tree at critical on its way: a pressure dump.
    (died,) = by_trigger(tmp_path, "descendant-died")
    assert by_trigger(tmp_path, "host-died") == []
    descendant = died["descendant"]
    assert descendant["pid"] is not None and descendant["name"].startswith("python")
    assert (descendant["exit"]["kind"], descendant["exit"]["confidence"]) == (
        "oom-killed", "certain")


@pytest.mark.cgroup
def test_a_sampled_grandchild_oom_kill_is_named_once(tmp_path: Path,
                                                     memory_cgroup: Path) -> None:
    grow = ("import time\nx = []\nfor _ in range(400):\n    x.append(b'a' * (1 << 20))\n"
            "    time.sleep(0.004)")
    result = _in_cgroup(memory_cgroup, *RUN, "--dir", str(tmp_path), "--", "sh", "-c",
                        f'{sys.executable} -c "$0"; sleep 0.5; exit 0', grow)
    assert result.returncode == 0, result.stderr
    died = by_trigger(tmp_path, "descendant-died")
    assert len(died) == 1, [d["descendant"] for d in died]
    exit = died[0]["descendant"]["exit"]
    assert (exit["kind"], exit["confidence"]) == ("oom-killed", "certain")


def test_cgroups_that_killed_runs_left_are_swept(tmp_path: Path) -> None:
    """A SIGKILLed run cannot remove its cgroup; the next run removes the empty ones
    whose run is gone, and never one whose run lives."""
    own = _own_memory_cgroup()
    gone_pid = _a_dead_pid()
    left = own / f"watchdog-core-run-{gone_pid}"
    living = own / f"watchdog-core-run-{os.getpid()}"
    left.mkdir()
    living.mkdir()
    try:
        assert run(tmp_path, "true").returncode == 0
        assert not left.exists()
        assert living.exists()  # this process lives: its cgroup is not another's to take
    finally:
        for d in (left, living):
            if d.exists():
                d.rmdir()


def _own_memory_cgroup() -> Path:
    if not os.access("/sys/fs/cgroup/memory", os.W_OK):
        pytest.skip("no writable cgroup v1 memory hierarchy: run makes no cgroup here")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path)
    pytest.skip("this process is in no v1 memory cgroup")


def _a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
