"""``watchdog-core run -- CMD``: watch a program nobody can modify, as its parent
(docs/run.md).

One process is the child's parent, its watchdog and, as PID 1 of a container, its
init. Being the parent makes every exit status exact (the wait status, rung 1 of
``_death``'s ladder). The child runs in a process group of its own, in the
terminal's foreground when ``run`` holds the terminal, so Ctrl-C reaches it once
and never ``run``; what is sent to ``run`` itself is passed on. ``run`` holds both
locks of the ring it makes for the child, as the host and its watchdog would.

The child is forked and waits on a pipe until its process group, the terminal, its
cgroup and its ring are in place, then execs: nothing the program does happens
outside the watch.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from functools import partial
from typing import Literal

from . import _procfs, _ring, _shm
from ._attribution import KMSG_SETTLE
from ._config import SessionConfig
from ._death import ExitStatus, signal_name
from ._tree import TREE_CGROUP_PREFIX, DescendantDeath, Tree, TreeCgroup, oom_group_warning

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._document import DescendantDoc
    from ._watchdog import Watcher
    from ._writer import RingWriter

# Exit codes of `run`'s own failures, as `env` and `timeout` use them, so they cannot be
# taken for the child's.
EXIT_OWN_ERROR, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND = 125, 126, 127
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)
TERMINAL_STOPS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
# "<pid>:<segment>": the ring a Python child may join instead of starting its own
# session. Every descendant inherits the variable; only the pid it names may take it.
OFFER_ENV = "WATCHDOG_CORE_RUN_OFFER"
PR_SET_CHILD_SUBREAPER = 36


class RunError(Exception):
    """``run`` cannot start the command: ``code`` is the exit status to leave with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def find_executable(name: str, env: dict[str, str]) -> str:
    """The file ``execvp`` would run for ``name``: RunError 127 when there is none, 126
    when the only candidates cannot be executed (as a shell says)."""
    if not name:
        raise RunError(EXIT_NOT_FOUND, "the command is empty")
    if "/" in name:
        candidates = [name]
    else:
        path = env.get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", name) for d in path.split(os.pathsep)]
    denied = None
    for candidate in candidates:
        if os.path.isdir(candidate):
            if "/" in name:
                raise RunError(EXIT_NOT_EXECUTABLE, f"{name}: is a directory")
            continue
        if not os.path.exists(candidate):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = candidate
    if denied is not None:
        raise RunError(EXIT_NOT_EXECUTABLE, f"{denied}: permission denied")
    raise RunError(EXIT_NOT_FOUND, f"{name}: command not found")


def _terminal() -> int:
    """A descriptor (0, 1 or 2) of ``run``'s controlling terminal, or -1."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                os.tcgetpgrp(fd)  # ENOTTY unless it is our controlling terminal
                return fd
        except OSError:
            continue
    return -1


def _foreground(tty: int) -> int:
    """The terminal's foreground process group, or -1."""
    try:
        return os.tcgetpgrp(tty) if tty >= 0 else -1
    except OSError:
        return -1


def _give_terminal(tty: int, pgid: int) -> None:
    if tty < 0:
        return
    # A process outside the foreground that changes it gets SIGTTOU: ignored meanwhile.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _become_subreaper() -> None:
    """Orphans of the tree come to ``run`` rather than to init: they stay in the tree
    it measures, and it reaps them, with their exact status."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Runner:
    """One ``run``: the child, its ring, the watcher, the signals, the tree."""

    def __init__(self, config: SessionConfig, argv: list[str], *, tree_cgroup: bool = True
                 ) -> None:
        self.config = config
        self.argv = argv
        self.want_cgroup = tree_cgroup
        self.child = -1
        self.status: int | None = None  # the child's wait status, once reaped
        self.tty = -1
        self.watcher: Watcher | None = None
        self.writer: RingWriter | None = None
        self.host_lock = -1
        self.no_dumps = False
        self.cgroup_refusal = ""
        self.descendant_dumps = 0
        self.descendants_skipped = 0
        self.tree_kills_seen = 0  # OOM kills of the tree's cgroup accounted for
        self.told: set[int] = set()  # pids of descendants whose death was dumped
        self.kmsg_fd = -1
        self.job_stopped = False  # run stopped itself with its child (Ctrl-Z)

    # -- starting ------------------------------------------------------------------------

    def start(self) -> int:
        """Run the command to its end; returns ``run``'s exit status."""
        env = dict(os.environ)
        env.pop(OFFER_ENV, None)  # an offer to us is not our child's
        path = find_executable(self.argv[0], env)
        ring_config = self._ring_config()
        _reserve_stdio()
        if os.environ.get("WATCHDOG_CORE_DISABLE", "") not in ("", "0"):
            self.no_dumps = True  # the child runs as ever, unwatched
        else:
            self._settle_folder()
        warning = oom_group_warning()
        if warning:
            say(warning)
        cgroup, why = None, "not asked for (--no-cgroup)"
        if self.want_cgroup and not self.no_dumps:
            cgroup, why = TreeCgroup.create(f"{TREE_CGROUP_PREFIX}{os.getpid()}")
        self.cgroup_refusal = why
        if not self.no_dumps:
            from ._attribution import _open_kmsg_at_end

            # Open before the child runs: an OOM kill in its first milliseconds is in
            # the log after this point (and the tree's cgroup counts from 0).
            self.kmsg_fd = _open_kmsg_at_end()
        _become_subreaper()
        self.tty = _terminal()
        go_read, go_write = os.pipe()
        err_read, err_write = os.pipe()
        blocked = set(FORWARDED) | {signal.SIGCHLD}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if cgroup is not None:
                cgroup.remove()
            raise RunError(EXIT_OWN_ERROR, f"cannot start {self.argv[0]}: {exc.strerror}"
                           ) from None
        if pid == 0:
            _exec_child(path, self.argv, env, go_read, go_write, err_read, err_write, mask)
        self.child = pid
        os.close(go_read)
        os.close(err_write)
        ring = None
        try:
            try:
                os.setpgid(pid, pid)  # as the child does: whichever runs first, it is done
            except OSError:
                pass
            if _foreground(self.tty) == os.getpgrp():
                _give_terminal(self.tty, pid)
            if cgroup is not None:
                try:
                    cgroup.add(pid)
                except OSError as exc:
                    cgroup.remove()
                    cgroup = None
                    self.cgroup_refusal = f"cannot move the child: {exc.strerror}"
            ring = self._make_ring(pid, ring_config)
            wake = self._install_signals()
        except BaseException as exc:
            # Before the go: the child has run nothing of its own. Nothing may outlive us.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.status = 0
            self._release_start(ring, cgroup)
            raise RunError(EXIT_OWN_ERROR, f"cannot watch {self.argv[0]}: {exc!r}") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # Let the child go, with the ring's name (its offer) when there is one.
        try:
            os.write(go_write, (ring[0] if ring else "").encode() + b"\n")
        except OSError:
            pass
        os.close(go_write)
        failure = _read_all(err_read)
        os.close(err_read)
        if failure:
            return self._exec_failed(failure, path, ring, cgroup)
        tree = Tree(os.getpid(), pid, cgroup)
        if ring is None:
            tree.close()
            return self._wait_only(wake)
        return self._watch(ring, tree, wake)

    def _ring_config(self) -> _ring.RingConfig:
        """The ring's copy of the options, packed once here: a value the ring cannot hold
        is refused before anything starts."""
        import struct

        ring_config = self.config.ring_config(include_children=True)
        try:
            ring_config.pack()
        except struct.error as exc:
            raise RunError(EXIT_OWN_ERROR, f"an option is out of range: {exc}") from None
        return ring_config

    def _settle_folder(self) -> None:
        from ._config import state_diagnostics_dir
        from ._safedir import choose_dir

        chosen, refusals = choose_dir(self.config.diagnostics_dir,
                                      state_diagnostics_dir(os.environ))
        if chosen is None:
            say(f"no dumps will be written: {'; '.join(refusals)}")
            self.no_dumps = True
            return
        self.no_dumps = False
        if refusals:
            say(f"{'; '.join(refusals)}; dumps go to {chosen}")
        self.config.diagnostics_dir = chosen

    def _make_ring(self, pid: int, ring_config: _ring.RingConfig) -> tuple[str, int] | None:
        """The child's ring, with both locks held by ``run``: (name, watchdog lock)."""
        from ._attribution import read_proc_stat
        from ._writer import RingWriter

        if self.no_dumps:
            return None
        config = self.config
        try:
            name, mapping, host_lock = _shm.create_segment(
                config.session_id, pid, _ring.ring_size(config.ring_slots))
        except (OSError, ValueError) as exc:
            say(f"cannot create the ring of {self.argv[0]}: {exc}; running it unwatched")
            return None
        writer = RingWriter(mapping, config.ring_slots)
        writer.lock_fd = host_lock
        stat = read_proc_stat(pid)
        writer.init_header(
            session_id=config.session_id, host_pid=pid,
            host_start_ticks=stat.start_ticks if stat else 0,
            created_unix_ns=time.time_ns(), created_mono_ns=time.monotonic_ns(),
            interval=config.interval, boot_id=_procfs.boot_id(),
            diagnostics_dir=config.diagnostics_dir,
            config=ring_config,
            features=(_ring.FEATURE_LOCKS if _shm.LOCKS else 0) | _ring.FEATURE_RUN,
        )
        # Before the child runs: a Python child joining at once checks this is its parent.
        writer.words[_ring.W_WATCHDOG_PID] = os.getpid()
        self.host_lock = host_lock  # held for the child's life, as a host holds its own
        self.writer = writer
        watchdog_lock = _shm.lock_for_watchdog(name)
        return name, watchdog_lock

    def _install_signals(self) -> int:
        wake, poke = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(poke, warn_on_full_buffer=False)
        for signum in FORWARDED:
            signal.signal(signum, self._forward)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wakeup fd wakes us
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        return wake

    def _forward(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCONT and self.job_stopped:
            return  # our own continuation: _child_stopped continues the child's group
        if self.child > 0 and self.status is None:
            try:
                os.kill(self.child, signum)
            except OSError:  # reaped between the check and the kill
                pass

    def _exec_failed(self, failure: bytes, path: str, ring: tuple[str, int] | None,
                     cgroup: TreeCgroup | None) -> int:
        try:
            code = int(failure)
        except ValueError:
            code = errno.ENOEXEC
        os.waitpid(self.child, 0)
        self.status = 0
        self._release_start(ring, cgroup)
        if code == errno.ENOENT and os.path.exists(path):
            # The file is there: what is missing is the interpreter its #! line names.
            raise RunError(EXIT_NOT_EXECUTABLE, f"{self.argv[0]}: bad interpreter (its #! "
                           "line names a program that does not exist)")
        exit_code = EXIT_NOT_FOUND if code == errno.ENOENT else EXIT_NOT_EXECUTABLE
        raise RunError(exit_code, f"{self.argv[0]}: {os.strerror(code)}")

    def _release_start(self, ring: tuple[str, int] | None, cgroup: TreeCgroup | None
                       ) -> None:
        """Undo a start that did not get as far as the watch."""
        if _foreground(self.tty) == self.child:
            _give_terminal(self.tty, os.getpgrp())
        if ring is not None:
            _shm.unlink_segment(ring[0], self.host_lock)
        if cgroup is not None:
            cgroup.remove()

    # -- watching ------------------------------------------------------------------------

    def _watch(self, ring: tuple[str, int], tree: Tree, wake: int) -> int:
        import select

        from ._watchdog import Watcher

        name, watchdog_lock = ring
        try:
            pidfd = os.pidfd_open(self.child) if hasattr(os, "pidfd_open") else -1
        except OSError:
            pidfd = -1
        watcher = Watcher(name, watchdog_lock, pidfd, -1, self.config.suggestion, tree=tree,
                          kmsg_fd=self.kmsg_fd,
                          textfile_dir=self.config.prometheus_textfile_dir,
                          textfile_expire=self.config.prometheus_expire_after,
                          sentry=self.config.sentry,
                          # the child may not have exec'd CMD yet: its comm is ours then
                          program=os.path.basename(self.argv[0])[:15] or None)
        self.watcher = watcher
        from ._hang import HangDetector
        from ._redact import redact_argv

        # What run started, not what the child's /proc says after an early death; and
        # no Python unless the child joins (its heartbeat is what a hang is measured by).
        watcher.writer.argv = redact_argv(self.argv)
        watcher.writer.python = None
        watcher.hang = HangDetector(None, None)
        if self.cgroup_refusal and tree.cgroup is None:
            watcher.writer.notes.append(f"no cgroup for the tree: {self.cgroup_refusal}")
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        next_sample = time.monotonic()
        watching, joined = True, False
        while self.status is None:
            timeout = max(0.0, next_sample - time.monotonic()) if watching else 1.0
            try:
                events = poller.poll(timeout * 1000)
            except InterruptedError:
                events = []
            ended: list[DescendantDeath] = []
            for fd, _ in events:
                if fd == wake:
                    _drain(wake)
                elif fd in tree.by_fd:
                    poller.unregister(fd)
                    death = tree.ended(fd)
                    if death is not None:
                        ended.append(death)
            ended.extend(self._reap(tree))
            if not watching:
                continue
            # Told even when the child ended in the same turn (a shell that reaps its
            # killed job and exits at once): these deaths are off the tree's books now,
            # and the last look below only finds those still on them.
            for death in ended:
                watcher._guarded(partial(self._descendant_ended, death))
            if self.status is not None:
                continue
            if watcher.words[_ring.W_FLAGS] & _ring.FLAG_STOPPED:
                watching = False  # a joined host called stop(): the session is over
                watcher.close()
                _shm.unlink_segment(name, watchdog_lock)
                continue
            if not joined and watcher.words[_ring.W_JOINED]:
                joined = True
                watcher._guarded(self._child_joined)
            if time.monotonic() >= next_sample:
                next_sample += watcher.interval
                if next_sample < time.monotonic():
                    next_sample = time.monotonic() + watcher.interval
                watcher._guarded(watcher._tick)
                watcher._guarded(self._unseen_kills)
                for fd in tree.take_new_fds():
                    poller.register(fd, select.POLLIN)
            watcher._guarded(watcher.answer_requests)
        signal.set_wakeup_fd(-1)
        if watching:
            # Deaths in the tree just before the child's own (its pipeline's last job,
            # OOM-killed a moment ago) are told before its postmortem.
            for fd in list(tree.by_fd):
                if select.select([fd], [], [], 0)[0]:
                    death = tree.ended(fd)
                    if death is not None:
                        watcher._guarded(partial(self._descendant_ended, death))
            status = self.status or 0
            host_killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            if tree.cgroup is not None and tree.cgroup.oom_kills() > self.tree_kills_seen:
                time.sleep(KMSG_SETTLE)  # the kernel prints its line just after the kill
                watcher._guarded(partial(self._unseen_kills, host_killed))
            watcher.death.parent_status = ExitStatus(self.status, "run")
            if self.descendants_skipped:
                watcher.writer.notes.append(
                    f"{self.descendants_skipped} more descendant death(s) past the dump "
                    "budget were not dumped")
            watcher.host_ended()
        tree.close()
        return self._leave()

    def _wait_only(self, wake: int) -> int:
        """No ring (no folder, no shared memory): still the child's parent and init."""
        import select

        poller = select.poll()
        poller.register(wake, select.POLLIN)
        while self.status is None:
            poller.poll(1000)
            _drain(wake)
            self._reap(None)
        signal.set_wakeup_fd(-1)
        return self._leave()

    def _child_joined(self) -> None:
        """The Python child called start_watchdog() and took our offer: its stats and
        marks go into the ring from now on, and the settings it merged into the header
        apply (the tightest limits win; hang detection is its to ask for)."""
        from ._reader import RingImage

        watcher = self.watcher
        assert watcher is not None
        with RingImage(watcher.buf) as image:
            watcher.reconfigure(image.config)

    def _reap(self, tree: Tree | None) -> list[DescendantDeath]:
        """Reap every child that has ended (as PID 1, every orphan of the container);
        a stop of the child by the terminal stops ``run`` too."""
        ended: list[DescendantDeath] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return ended
            if pid == 0:
                return ended
            if pid == self.child:
                if os.WIFSTOPPED(status):
                    self._child_stopped(os.WSTOPSIG(status))
                    continue
                self.status = status
            elif tree is not None and not os.WIFSTOPPED(status):
                death = tree.adopted_ended(pid, status)
                if death is not None:
                    ended.append(death)

    def _child_stopped(self, signum: int) -> None:
        """The terminal stopped the child (Ctrl-Z, or a read from a terminal it does not
        own): stop ``run`` too, so the shell sees its job stop. When the shell continues
        the job, the child's group goes on, with the terminal only if ``run`` was
        continued in the foreground (``fg``, not ``bg``)."""
        if signum not in TERMINAL_STOPS or self.tty < 0:
            return  # a SIGSTOP from outside: whoever sent it will continue the child
        if _foreground(self.tty) == self.child:
            _give_terminal(self.tty, os.getpgrp())
        self.job_stopped = True
        try:
            os.kill(os.getpid(), signal.SIGSTOP)
            if _foreground(self.tty) == os.getpgrp():
                _give_terminal(self.tty, self.child)
            try:
                os.killpg(self.child, signal.SIGCONT)
            except OSError:
                pass
        finally:
            self.job_stopped = False

    # -- descendants ---------------------------------------------------------------------
    #
    # One dump per process, whichever path tells it first: its pidfd (a process some
    # sample saw), or the tree's OOM counter with the kernel's log (one no sample saw).
    # ``told`` holds the pids told; ``tree_kills_seen`` the kills of the tree's cgroup
    # accounted for, so a kill is never told twice nor put on the wrong process.

    def _descendant_ended(self, death: DescendantDeath) -> None:
        """A process of the tree ended while the child lives: a dump of its own when it
        was killed outright or crashed, within the session's dump budget."""
        from ._attribution import killed_process
        from ._document import descendant, host_exit

        if not death.worth_a_dump or death.pid in self.told:
            return
        self.told.add(death.pid)
        watcher = self.watcher
        assert watcher is not None
        kind, confidence, evidence = self._judge_descendant(watcher, death)
        exit = host_exit(kind, signal=signal_name(death.signal), evidence=evidence,
                         confidence=confidence)
        rss = death.rss
        line = watcher.oom.kernel.lines.get(death.pid)
        if line:  # the kernel's figure is from the moment of the kill, not a sample before
            rss = max(rss or 0, killed_process(line)[1] or 0)
        self._dump_descendant(watcher, descendant(death.pid, death.name, rss, exit))

    def _dump_descendant(self, watcher: Watcher, descendant: DescendantDoc) -> None:
        if self.descendant_dumps >= self.config.max_dumps_per_session:
            self.descendants_skipped += 1
            return
        # The tree as it was at the last sample, before this process's memory went.
        reading = watcher.last or watcher.sample()
        if reading is not None and watcher.dump("descendant-died", reading,
                                                descendant=descendant) is not None:
            self.descendant_dumps += 1

    def _tree_suffix(self, watcher: Watcher) -> str | None:
        tree = watcher.probe.tree
        if tree is None or tree.cgroup is None:
            return None
        return "/" + os.path.basename(tree.cgroup.directory)

    def _judge_descendant(self, watcher: Watcher, death: DescendantDeath
                          ) -> tuple[Literal["oom-killed", "crashed", "killed"],
                                     Literal["certain", "likely"], list[str]]:
        """(kind, confidence, evidence) of a descendant killed or crashed."""
        from ._death import CRASH_SIGNALS, SOURCE_TEXT

        evidence = [f"{SOURCE_TEXT.get(death.source, death.source)}: killed by "
                    f"{signal_name(death.signal)}"]
        if death.signal in CRASH_SIGNALS:
            return "crashed", "certain", evidence
        oom = watcher.oom
        suffix = self._tree_suffix(watcher)
        tree = watcher.probe.tree
        kills = tree.cgroup.oom_kills() if tree is not None and tree.cgroup else 0
        oom.read_kernel_log()
        log = oom.kernel
        if death.pid not in log.others and kills > self.tree_kills_seen and log.readable:
            time.sleep(KMSG_SETTLE)  # the kernel prints its line just after the kill
            oom.read_kernel_log()
        if death.pid in log.others:
            evidence.append(f"kernel: the OOM killer named pid {death.pid}")
            if suffix and log.memcgs.get(death.pid, "").endswith(suffix):
                self.tree_kills_seen += 1
            return "oom-killed", "certain", evidence
        if log.readable and not log.overrun:
            evidence.append("kernel: no OOM kill of this pid was logged")
            return "killed", "certain", evidence
        if suffix:
            if kills > self.tree_kills_seen:
                self.tree_kills_seen += 1
                evidence.append(f"the tree's own cgroup counted an OOM kill ({kills} in "
                                "all), and no kernel log says whose")
                return "oom-killed", "likely", evidence
            evidence.append("the tree's own cgroup counted no OOM kill for it")
            return "killed", "certain", evidence
        evidence.append("neither the kernel log nor a cgroup of the tree's own could tell "
                        "an OOM kill from another SIGKILL")
        return "killed", "likely", evidence

    def _unseen_kills(self, host_killed: bool = False) -> None:
        """OOM kills in the tree's cgroup that no process seen at a sample explains: one
        born and killed between two samples (a `make` job that balloons in 50 ms). The
        kernel's log names it where it can be read. ``host_killed``: the child itself
        died of SIGKILL just now; its kill is its own postmortem's."""
        from ._attribution import killed_process
        from ._document import descendant, host_exit

        watcher = self.watcher
        assert watcher is not None
        tree = watcher.probe.tree
        suffix = self._tree_suffix(watcher)
        if tree is None or tree.cgroup is None or suffix is None:
            return
        kills = tree.cgroup.oom_kills()
        if kills <= self.tree_kills_seen:
            return
        oom = watcher.oom
        oom.read_kernel_log()
        log = oom.kernel
        in_tree = [pid for pid, memcg in log.memcgs.items() if memcg.endswith(suffix)]
        if host_killed and (self.child in in_tree or not log.readable):
            self.tree_kills_seen += 1
        if log.readable and not log.overrun:
            # Each kill is named: tell those of processes no sample saw. A process a
            # sample saw is told by its pidfd, which counts its kill then.
            for pid in in_tree:
                seen = tree.known.get(pid)
                if pid in self.told or pid == self.child or (seen and seen.pidfd >= 0):
                    continue
                self.told.add(pid)
                self.tree_kills_seen += 1
                name, rss = killed_process(log.lines.get(pid, ""))
                self._dump_descendant(watcher, descendant(
                    pid, name, rss, host_exit(
                        "oom-killed", signal="SIGKILL", confidence="certain",
                        evidence=["the tree's own cgroup counted an OOM kill no sample "
                                  "explains", f"kernel: the OOM killer named pid {pid} "
                                  f"({name}) in the tree's cgroup"])))
            return
        # No log: count. A process a sample saw that is dying now will be told by its
        # pidfd; until it is, a kill may be its.
        if any(_dying(pid) for pid in tree.known if pid not in self.told) and not host_killed:
            return
        while self.tree_kills_seen < kills:
            self.tree_kills_seen += 1
            self._dump_descendant(watcher, descendant(
                None, "?", None, host_exit(
                    "oom-killed", signal="SIGKILL", confidence="certain",
                    evidence=["the tree's own cgroup counted an OOM kill no sample "
                              "explains", "the kernel's log, which names the process, "
                              "could not be read (root or CAP_SYSLOG reads /dev/kmsg)"])))

    def _leave(self) -> int:
        if _foreground(self.tty) == self.child:  # never take it from a shell that has it
            _give_terminal(self.tty, os.getpgrp())
        status = self.status or 0
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0


def _exec_child(path: str, argv: list[str], env: dict[str, str], go_read: int,
                go_write: int, err_read: int, err_write: int,
                mask: set[int | signal.Signals]) -> None:
    """In the forked child: wait for ``run``'s go, then become the command. Never
    returns; an exec that fails sends its errno back on ``err_write``."""
    try:
        os.close(go_write)
        os.close(err_read)
        os.setpgid(0, 0)
        # Python ignores these two, and exec keeps what is ignored: the program must
        # start with the defaults, as from a shell.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        offer = _read_all(go_read).strip().decode()
        if offer:
            env[OFFER_ENV] = f"{os.getpid()}:{offer}"
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            os.execve(path, argv, env)  # noqa: S606 (the user's command is the point)
        except OSError as exc:
            if exc.errno != errno.ENOEXEC or not _looks_like_text(path):
                raise
            # No #! line: a shell script, as execvp (and so env and timeout) runs it. A
            # binary the kernel does not run (another CPU's) is not, as bash decides.
            os.execve("/bin/sh", ["sh", path, *argv[1:]], env)  # noqa: S606
    except OSError as exc:
        try:
            os.write(err_write, str(exc.errno or errno.ENOEXEC).encode())
        except OSError:
            pass
    finally:
        os._exit(EXIT_NOT_EXECUTABLE)


def _reserve_stdio() -> None:
    """Keep our own descriptors off 0, 1 and 2 when they were closed for us: the child
    must find them closed as given (these close at its exec), and a line of ours must
    never go into a file that happened to take descriptor 2."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            if held != fd:
                os.dup2(held, fd, inheritable=False)
                os.close(held)


def say(message: str) -> None:
    """One line on stderr, as the watchdog says things (``_report.say``, imported only
    when there is something to say: the child starts before pydantic is loaded)."""
    from ._report import say as report_say

    report_say(message)


def _looks_like_text(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" not in f.read(128)
    except OSError:
        return False


def _dying(pid: int) -> bool:
    """Gone, a zombie, or in do_exit(): its pidfd is about to tell how it ended."""
    from ._attribution import read_proc_stat

    stat = read_proc_stat(pid)
    return stat is None or stat.dying


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def run(config: SessionConfig, argv: list[str], *, tree_cgroup: bool = True) -> int:
    """``watchdog-core run``: RunError when the command cannot be started."""
    return Runner(config, argv, tree_cgroup=tree_cgroup).start()


