"""The watchdog process: ``python -m watchdog_core._watchdog`` (docs/design.md).

A fresh interpreter started by the host. It samples the host every
``interval`` seconds, grades pressure, writes dumps on escalation and on
request, and when the host dies (its pidfd turns readable, or the control pipe
hits EOF where there is no pidfd) writes the postmortem, saves the ring image
beside it, removes the segment and exits.

It never imports the host's modules and holds no lock while sampling.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from functools import partial

from . import _attribution, _death, _extras, _outside, _reader, _ring, _shm
from ._extras import CriticalExtras
from ._grading import Grading, Reading, sampling_delay
from ._hang import HangDetector, collect_stacks, stack_signal_refusal
from ._levels import LevelGrader, PressureLevel
from ._report import DumpWriter, say
from ._sampling import HostProbe, HostSample, SystemProbe
from ._wakeups import Wakeups

# A glance between two samples that finds the host's RSS moved by this much, or by a
# sixteenth, takes a full sample at once (``Watcher.glance``).
GLANCE_STEP = 4 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._document import DescendantDoc, ResponsivenessDoc
    from ._sentry import Reporter
    from ._textfile import SessionFile
    from ._tree import Tree


class _Arguments:
    """What ``_spawn`` passes: ``--shm NAME [--lock FD] [--pidfd FD] [--ctl FD]
    [--suggestion LEVEL=TEXT]... [--prometheus DIR --prometheus-expire SECONDS]``.
    Parsed by hand: argparse (and the gettext it loads) would be 0.4 MiB of every idle
    watchdog, for arguments only we write."""

    def __init__(self, argv: list[str]) -> None:
        self.shm = self.prometheus = ""
        self.lock = self.pidfd = self.ctl = -1
        self.prometheus_expire: float | None = None
        self.suggestions: dict[str, str] = {}
        if len(argv) % 2:
            raise ValueError(f"an option without its value: {argv[-1]}")
        for option, value in zip(argv[::2], argv[1::2], strict=True):
            if option == "--shm":
                self.shm = value
            elif option in ("--lock", "--pidfd", "--ctl"):
                setattr(self, option[2:], int(value))  # a ValueError names it
            elif option == "--suggestion":
                level, _, text = value.partition("=")
                self.suggestions[level] = text
            elif option == "--prometheus":
                self.prometheus = value
            elif option == "--prometheus-expire":
                self.prometheus_expire = float(value)
            else:
                raise ValueError(f"unknown option {option}")
        if not self.shm:
            raise ValueError("--shm is required")


class Watcher:
    """State of one watched host."""

    def __init__(self, shm_name: str, lock_fd: int, pidfd: int, ctl: int,
                 suggestions: dict[str, str], tree: Tree | None = None,
                 kmsg_fd: int | None = None, textfile_dir: str = "",
                 textfile_expire: float | None = None,
                 sentry: dict[str, object] | None = None, program: str | None = None) -> None:
        """``tree`` is ``watchdog-core run``'s: the host's descendants are measured with
        it, in their cgroup where they have one (``_tree``); ``kmsg_fd`` the kernel log
        it opened before its child ran. ``textfile_dir``: keep the session's metrics
        file there (``_textfile``), old ones expiring after ``textfile_expire`` s.
        ``sentry``: report deaths and hangs there (``_sentry_host`` settings).
        ``program``: the host's name for the metrics, where its comm may not say it yet."""
        self.shm_name = shm_name
        # The descriptor holding our lock is the segment our host created: map it, not
        # whatever the name points at now.
        self.lock_fd = lock_fd
        self.mapping = (_shm.map_descriptor(lock_fd, writable=True) if lock_fd >= 0
                        else _shm.open_segment(shm_name, writable=True))
        self.buf = memoryview(self.mapping)
        self.words = self.buf.cast("Q")
        # The header as it was at attach: the fallback when the host scribbles over it.
        self.attach_header = bytes(self.buf[: _ring.HEADER_SIZE])
        header = _reader.RingImage(self.buf, header=self.attach_header)
        self.header = header
        self.host_pid = header.host_pid
        self.config = header.config
        self.interval = header.interval
        self.pidfd = pidfd
        self.ctl = ctl
        self.words[_ring.W_WATCHDOG_PID] = os.getpid()
        self.probe = HostProbe(self.host_pid, exclude_pids={os.getpid()},
                               include_children=self.config.include_children, tree=tree)
        self.grading = Grading(self.config, SystemProbe(self.host_pid))
        self.oom = _attribution.OomWatch(
            self.host_pid, tree_dir=tree.cgroup.directory if tree and tree.cgroup else None,
            kmsg_fd=kmsg_fd)
        self.writer = DumpWriter(header, suggestions, self.probe)
        self.extras = CriticalExtras(self.buf, self.words, self.writer)
        self.hang = HangDetector(self.config.hang_after, self.config.idle_after)
        self.hang_dumps, self.last_hang_dump = 0, 0.0
        self.files = _death.HostFiles(header.session_id, self.host_pid,
                                      int(self.words[_ring.W_NONCE]))
        self.death = _death.Death(words=self.words, shm_name=shm_name, host_pid=self.host_pid,
                                  start_ticks=header.host_start_ticks, pidfd=pidfd,
                                  private_files=self.files.names, segment_fd=lock_fd)
        # Locks say whether the host lives and still runs our program (an exec drops its
        # lock); a ring made without them cannot tell, and signals are then not sent.
        self.locks = bool(header.features & _ring.FEATURE_LOCKS) and lock_fd >= 0
        self.last: Reading | None = None  # the last good reading: what a postmortem reports
        self.records = 0
        self.last_record_wall_ns = 0
        self.last_activity = time.monotonic()
        self.checked_level = PressureLevel.NORMAL  # level at the last pressure-dump check
        self.faults: set[str] = set()
        # The kernel's notifications, armed once the first sample found the limits, for
        # the cgroups that limited the host then; the poller they wake.
        self.wakeups: Wakeups | None = None
        self.wakeup_dirs: tuple[str, ...] = ()
        self.poller: select.poll | None = None
        self.postmortem_path: str | None = None
        self.textfile: SessionFile | None = None
        if textfile_dir:
            from ._textfile import DEFAULT_EXPIRE_AFTER, SessionFile

            self.textfile = SessionFile(
                textfile_dir, header.session_id, self.host_pid, header.host_start_ticks,
                DEFAULT_EXPIRE_AFTER if textfile_expire is None else textfile_expire, say,
                program)
        self.sentry: Reporter | None = None
        # A critical dump whose report waits for the extras the host is asked for.
        self.sentry_after_extras: str | None = None
        self.ctl_pending = b""  # the start of a message on the control pipe
        if sentry:
            self.report_to(sentry)

    def reconfigure(self, config: _ring.RingConfig) -> None:
        """Grade by ``config`` from now on: the settings a Python child merged into the
        header when it joined ``watchdog-core run``'s ring (docs/run.md)."""
        self.config = config
        self.grading.config = config
        self.grading.grader = LevelGrader(config.soft, config.hard, config.critical)
        self.writer.soft, self.writer.hard = config.soft, config.hard
        self.writer.critical = config.critical
        self.hang = HangDetector(config.hang_after, config.idle_after)

    # -- sampling ---------------------------------------------------------------------

    def sample(self) -> Reading | None:
        """A graded reading of the host; None when it is gone or being torn down (then
        ``self.last`` stays the last good one, and the death has begun)."""
        host = self.probe.sample()
        if host.dying:
            self.death.dying(_attribution.read_proc_stat(self.host_pid))
            return None
        if not host.alive:
            return None
        if host.leader_gone:
            self.death.leader_gone = True
            self.grading.system.follow_thread(self.probe.live_tid)
        reading = self.grading.grade(host, _reader.read_label(self.buf, self.words))
        self._note_records(host)
        _ring.write_status(self.buf, self.words, reading.status_block(self.grading.samples))
        self.last = reading
        return reading

    def _note_records(self, host: HostSample) -> None:
        count = self.header.slot_count
        records = _reader.newest_index(self.words, count, hint=self.records - 1) + 1
        if records != self.records:
            self.records = records
            self.last_activity = host.t
            self.last_record_wall_ns = host.wall_ns
            self.words[_ring.W_LAST_RECORD_NS] = host.wall_ns
            self.words[_ring.W_RECORDS] = records

    # -- dumps while the host lives ---------------------------------------------------

    def maybe_pressure_dump(self, reading: Reading) -> None:
        """Dump on a rise to hard or critical, within budget and cooldown (docs/pressure.md).

        The budget's state lives in the ring header, so a restarted watchdog goes on
        counting where the one before stopped.
        """
        # Compared with the level of the last check, not of the last sample: a sample
        # taken for a manual dump must not hide an escalation from this check.
        level, previous = reading.level, self.checked_level
        self.checked_level = level
        if level <= previous or level < PressureLevel.HARD:
            return
        words = self.words
        now_ns = time.monotonic_ns()
        last_ns = words[_ring.W_LAST_PRESSURE_NS]
        first_critical = level == PressureLevel.CRITICAL and not words[_ring.W_CRITICAL_WRITTEN]
        within_budget = words[_ring.W_PRESSURE_DUMPS] < self.config.max_dumps and (
            not last_ns or (now_ns - last_ns) / 1e9 >= self.config.dump_cooldown)
        if not (first_critical or within_budget):
            return
        name = self.dump(level.label, reading)
        if name is not None:
            words[_ring.W_PRESSURE_SAMPLE] = self.grading.samples
            words[_ring.W_PRESSURE_DUMPS] += 1
            words[_ring.W_LAST_PRESSURE_NS] = now_ns
            if level == PressureLevel.CRITICAL:
                words[_ring.W_CRITICAL_WRITTEN] = 1
                self.extras.ask(name)  # on disk first; the host answers, followed below

    def check_responsiveness(self, reading: Reading) -> None:
        if not self.hang.enabled:
            return
        event = self._check_hang()
        if event is None or not self._hang_dump_allowed():
            return
        flags = self.words[_ring.W_FLAGS]
        signum = self.config.stack_signal
        stacks = None
        refusal = stack_signal_refusal(
            flags, signum, self.host_pid,
            holds_ring=self.locks and _shm.held(self.lock_fd, _shm.HOST))
        if refusal is None:
            def stacks() -> str | None:
                self.words[_ring.W_STACK_REQUESTS] += 1
                text = collect_stacks(self.writer.store, self.files.stacks, self.host_pid,
                                      self.pidfd, signum)
                if text is None:
                    event["stacksMissing"] = "the host wrote no stacks within 2 s"
                return text
        else:
            event["stacksMissing"] = refusal
        self.dump("unresponsive", reading, responsiveness=event, stacks=stacks)

    def _hang_dump_allowed(self) -> bool:
        """Unresponsive dumps share the pressure dumps' budget and cooldown, counted on
        their own: a host that hangs again and again must not push its postmortem out
        of the folder by retention (docs/hangs.md)."""
        now = time.monotonic()
        if self.hang_dumps >= self.config.max_dumps or (
                self.hang_dumps and now - self.last_hang_dump < self.config.dump_cooldown):
            return False
        self.hang_dumps += 1
        self.last_hang_dump = now
        return True

    def _check_hang(self) -> ResponsivenessDoc | None:
        words = self.words
        if self.hang.main is None:  # the host publishes its main thread once it is set up
            self.hang.watch_main_thread(self.host_pid, words[_ring.W_MAIN_TID],
                                        words[_ring.W_MAIN_IDENT])
        return self.hang.check(words[_ring.W_HEARTBEAT], self.last_activity,
                               words[_ring.W_MAIN_FRAME_SINCE])

    def answer_requests(self) -> None:
        """Manual dumps asked for by the host (``wd.dump()``) and from outside it
        (``watchdog-core dump``), each answered with the name of the file written."""
        words = self.words
        request = words[_ring.W_REQUEST]
        if request > words[_ring.W_REQUEST_DONE]:
            name = self._manual_dump(_request_reason(self.buf) or "manual")
            self._set_last_dump(name or "")
            words[_ring.W_REQUEST_DONE] = request
        outside = int(words[_ring.W_OUTSIDE_REQUEST])
        if outside > words[_ring.W_OUTSIDE_DONE]:
            name = self._manual_dump("asked for by watchdog-core dump")
            _outside.answered(self.buf, words, outside, name or "")

    def _manual_dump(self, reason: str) -> str | None:
        reading = self.sample() or self.last
        if reading is None:
            return None
        event = None
        if self.hang.enabled:  # bring the state up to date: a recovery is noted here
            event = self._check_hang()
        return self.dump("manual", reading, reason=reason, responsiveness=event)

    def dump(self, trigger: str, reading: Reading, reason: str | None = None,
             responsiveness: ResponsivenessDoc | None = None,
             stacks: Callable[[], str | None] | None = None,
             descendant: DescendantDoc | None = None) -> str | None:
        with self.image(self.buf) as image:
            name = self.writer.write_live(
                trigger, reading, image, self.grading.timeline_before(reading.host.t),
                self.last_record_wall_ns, reason=reason,
                responsiveness=responsiveness or self.hang.take_recovery(), stacks=stacks,
                descendant=descendant)
        if name is not None:
            self._set_last_dump(name)
            self.words[_ring.W_DUMPS] += 1
            _ring.count_dump(self.words, trigger)
            if self.sentry is not None and trigger in _SENTRY_TRIGGERS:
                path = os.path.join(self.writer.store.path, name)
                if trigger == "critical" and self.config.extras:
                    self.sentry_after_extras = path  # sent once the extras are in it
                else:
                    self.sentry.send_later(path)
        return name

    def report_to(self, settings: dict[str, object]) -> None:
        """Report to Sentry from now on (``_sentry``): settings from the spawn, from
        ``run``, or sent later by the host over the control pipe."""
        from ._sentry import Reporter

        self.sentry = Reporter(settings)

    def read_control(self, data: bytes) -> None:
        """Messages in what the control pipe gave (wake-up bytes are anything else):
        ``_sentry_host.FRAME`` + settings + newline."""
        from ._sentry_host import FRAME, decode

        data = self.ctl_pending + data
        self.ctl_pending = b""
        while True:
            start = data.find(FRAME)
            if start < 0:
                # keep what may be the start of a frame cut by the read
                keep = max((n for n in range(1, len(FRAME)) if data.endswith(FRAME[:n])),
                           default=0)
                self.ctl_pending = data[len(data) - keep:] if keep else b""
                return
            end = data.find(b"\n", start)
            if end < 0:
                self.ctl_pending = data[start:]
                return
            settings = decode(data[start + len(FRAME):end])
            if settings is not None:
                self.report_to(settings)
            data = data[end + 1:]

    def image(self, raw: memoryview) -> _reader.RingImage:
        """Decode the ring now; if the host has scribbled over its header, fall back to
        the header as it was when we attached, and say the ring was corrupt."""
        try:
            image = _reader.RingImage(raw)
        except _ring.RingError as exc:
            self.writer.ring_corrupt = str(exc)
            return _reader.RingImage(raw, header=self.attach_header)
        if image.corrupt_names:
            self.writer.ring_corrupt = "corrupt ring header: stat name count out of range"
        return image

    def _set_last_dump(self, name: str) -> None:
        _ring._put_str(self.buf, _ring.DUMP_NAME_AT, _ring.DUMP_NAME_SIZE, name)

    # -- the end ------------------------------------------------------------------------

    def host_ended(self) -> int:
        """The host is gone: judge how, write the postmortem if it was unclean, and let
        go of the evidence only once it is on disk (docs/design.md)."""
        death = self.death
        image = self.image(self.buf)
        store = self.writer.store
        crash_text, frames_text = self.files.read(store, image.flags)
        verdict = death.judge(image, crash_text, self.oom.evidence(),
                              self.last.effective.ratio if self.last else None)
        self.oom.close()
        written = verdict.clean or self._write_postmortem(verdict, image, crash_text,
                                                          frames_text)
        textfile = self.textfile
        if textfile is not None and not verdict.clean:  # after the postmortem: disk first
            self._guarded(partial(textfile.host_died, verdict.kind, verdict.signal,
                                  verdict.confidence))
        if self.sentry is not None:  # after every file: disk first, then the network
            self._guarded(partial(self.report_death, None if verdict.clean else
                                  self.postmortem_path))
        # After the postmortem: an answer the host gave just before it died still
        # names its files in the critical dump.
        self._guarded(self.extras.follow)
        image.release()
        self.close()
        if not written and not self.writer.refused:
            say(f"the ring stays in shared memory as {self.shm_name} until "
                "`watchdog-core gc` or the next session writes its postmortem")
            return 1
        death.release(store.remove_private)
        return 0 if written else 1

    def _write_postmortem(self, verdict: _death.Verdict, image: _reader.RingImage,
                          crash_text: str | None, frames_text: str | None) -> bool:
        """The postmortem and the ring image; True once both are on disk."""
        dump, wall_ns = self.writer.postmortem(
            verdict, self.last, image, self.grading.timeline_before(time.monotonic()),
            self.last_record_wall_ns, crash_text=crash_text, frames_text=frames_text)
        path = self.death.write(self.writer, dump, wall_ns, self.buf)
        if path is not None:
            say(f"postmortem written to {path}")
            self.postmortem_path = path
        return path is not None

    def report_death(self, path: str | None) -> None:
        """The reports still queued (a hang just before the death), then the death's,
        before the watchdog exits: each waits at most a few seconds."""
        from ._sentry import SEND_TIMEOUT

        sentry = self.sentry
        if sentry is not None:
            if self.sentry_after_extras is not None:  # the host died before answering
                sentry.send_later(self.sentry_after_extras)
                self.sentry_after_extras = None
            sentry.drain(SEND_TIMEOUT)
            if self.words[_ring.W_FLAGS] & _ring.FLAG_HOST_SENTRY:
                # The host's own client, set up after the session began, reported the
                # uncaught exception itself.
                sentry.settings = {**sentry.settings, "hostSdk": True}
            if path is not None:
                sentry.send(path)

    def _wait_gone(self, timeout: float = 30.0) -> bool:
        """Without a pidfd: EOF came; wait (bounded) for the host to be gone unless it
        stopped. While it dies, the stat may give its exit status away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.words[_ring.W_FLAGS] & _ring.FLAG_STOPPED:
                return False
            stat = _attribution.read_proc_stat(self.host_pid)
            if stat is not None and stat.dying:
                self.death.dying(stat)
            if _death.host_is_gone(self.host_pid, self.header.host_start_ticks):
                return True
            time.sleep(0.002)
        return True

    def end_after_exec(self) -> int:
        """The host exec'd another program: the session is over, as after stop()."""
        self.close()
        self.death.release(self.writer.store.remove_private)
        return 0

    def host_replaced(self) -> bool:
        """True when the host process runs another program now: it dropped its lock
        (close-on-exec) while alive, and no longer maps the ring."""
        if not self.locks or _shm.held(self.lock_fd, _shm.HOST):
            return False
        stat = _attribution.read_proc_stat(self.host_pid)
        if stat is None or stat.dying:
            return False  # a death, not an exec: the pidfd will say so
        return _attribution.maps_segment(self.host_pid, self.shm_name) is False

    def _tick(self) -> bool:
        """One sample and its consequences; False when the host turned out to be gone."""
        reading = self.sample()
        if reading is None:  # with a pidfd, poll() reports the death itself
            return self.pidfd >= 0 or not _death.host_is_gone(
                self.host_pid, self.header.host_start_ticks)
        self.oom.refresh()
        self._guarded(partial(self.follow_wakeups, reading))
        self.maybe_pressure_dump(reading)
        self.words[_ring.W_TICK_DONE] = self.grading.samples  # the host may announce now
        self._guarded(self.extras.follow)  # never waits: a death is seen at the next poll
        waiting = self.sentry_after_extras
        if waiting is not None and self.sentry is not None and (
                self.extras.name is None or self.extras.noted == _extras.LATE):
            self.sentry_after_extras = None  # answered, or given up on: the dump is final
            self.sentry.send_later(waiting)
        self.check_responsiveness(reading)
        if self.textfile is not None:
            self._guarded(partial(self.update_textfile, reading.host.t))
        return True

    def update_textfile(self, now: float) -> None:
        """The metrics file from the status block just written and the dumps so far:
        what ``export`` would print of the session."""
        textfile = self.textfile
        if textfile is None or not textfile.may_write(now):
            return  # most samples: nothing to read for it
        status = _reader.read_status(self.buf, self.words)
        if status is not None:
            textfile.update(status, _ring.dump_counts(self.words), now)

    def glance(self) -> bool:
        """Between two samples, at the interval: one read of the host's RSS. True when it
        moved enough since the last sample to take a full one now: far from its limits
        the next is up to 2 s away, and a host that grows (or is about to die) should not
        be graded, nor remembered by its postmortem, as it was then."""
        last = self.last
        rss = self.probe.resident() if last is not None else None
        if last is None or rss is None:
            return False
        return abs(rss - last.host.rss) >= max(GLANCE_STEP, last.host.rss // 16)

    def next_delay(self) -> float:
        """Seconds to the next sample: longer while the host is far from its limits and
        flat (``sampling_delay``), never longer than half the time a hang or an idle
        spell takes to be noticed."""
        reading = self.last
        delay = (sampling_delay(reading, self.config, self.interval) if reading is not None
                 else self.interval)
        for after in (self.config.hang_after, self.config.idle_after):
            if after:
                delay = min(delay, max(self.interval, after / 2))
        return delay

    def _guarded(self, step: Callable[[], object], on_error: object = True) -> object:
        """Run one step; a bug or an odd environment costs that step, not the watchdog.

        The watchdog's reason to exist is to outlive the host: an exception in sampling
        or in a dump is reported once per kind and the loop goes on.
        """
        try:
            return step()
        except Exception as exc:  # deliberately broad: see the docstring
            what = getattr(step, "__name__", None) or getattr(step, "func", step).__name__
            key = f"{what}:{type(exc).__name__}"
            if key not in self.faults:
                self.faults.add(key)
                say(f"internal error in {what} ({type(exc).__name__}: {exc}); "
                    "still watching")
            return on_error

    def arm_wakeups(self, poller: select.poll) -> None:
        """The kernel's memory notifications for the host, as extra wake-ups of
        ``poller`` (``_wakeups``): usage thresholds at soft, hard and critical of its
        cgroup v1 limit, its cgroup v2 memory events, a PSI trigger."""
        config, reading = self.config, self.last
        self.poller = poller
        self.wakeup_dirs = self.grading.system.cgroup_dirs
        self.wakeups = Wakeups.for_host(
            self.host_pid, limit=_v1_limit(reading) if reading is not None else None,
            ratios=(config.soft, config.hard, config.critical))
        self.wakeups.register(poller)

    def follow_wakeups(self, reading: Reading) -> None:
        """After a sample: thresholds moved to a changed limit, all of them armed anew
        for a host moved to other cgroups (the old ones' usage is not its own any
        more), and wake-ups heard again after the pause that followed the last one."""
        wakeups = self.wakeups
        if wakeups is None or self.poller is None:
            return
        if self.grading.system.cgroup_dirs != self.wakeup_dirs:
            wakeups.close()
            self.arm_wakeups(self.poller)
            return
        wakeups.rearm(_v1_limit(reading))
        wakeups.resume()

    def close(self) -> None:
        """Unmap the ring; our lock goes with our descriptor when we exit."""
        if self.sentry is not None:
            # A hang reported just before a stop() gets a moment, not the full timeout:
            # the host's stop() waits for us.
            self.sentry.drain(1.0)
        if self.textfile is not None:
            self._guarded(self.textfile.host_ended)  # no live file of a session that ended
        if self.wakeups is not None:
            self.wakeups.close()
        self.probe.close()
        self.header.release()
        self.words.release()
        self.buf.release()
        self.mapping.close()

    def recover_orphans(self) -> None:
        from ._recovery import recover_orphans

        # Quiet: another session's full or read-only folder is not this host's news, and
        # every new session would print it again; `gc` says it. Our own writer is apart.
        for name, path, outcome in recover_orphans(exclude={self.shm_name}, quiet=True):
            if outcome == "written":
                say(f"recovered orphaned ring {name}: postmortem {path}")

    def run(self, wake: int = -1) -> int:
        """Watch until the host ends. ``wake`` is read when an outside requester
        signalled us (``_outside``): the request is answered at once."""
        poller = select.poll()
        orphans_checked = False
        if self.pidfd >= 0:
            poller.register(self.pidfd, select.POLLIN)
        if wake >= 0:
            poller.register(wake, select.POLLIN)
        if self.ctl >= 0:
            poller.register(self.ctl, select.POLLIN)
        channel_open = self.ctl >= 0
        next_sample = next_glance = time.monotonic()
        last_sample = next_sample - self.interval
        while True:
            timeout = max(0.0, min(next_sample, next_glance) - time.monotonic())
            host_gone = False
            for fd, revents in poller.poll(timeout * 1000):
                if fd == self.pidfd:
                    host_gone = True
                elif fd == self.ctl:
                    data = _read_nonblocking(self.ctl)
                    if data:
                        self._guarded(partial(self.read_control, data))
                    else:
                        poller.unregister(self.ctl)
                        channel_open = False
                        if self.pidfd < 0:
                            host_gone = self._wait_gone()
                elif fd == wake:
                    _read_nonblocking(wake)  # the request itself is in the ring
                elif self.wakeups is not None and self.wakeups.drain(fd, revents):
                    # The kernel saw memory move: look now, but no sooner than a fifth of
                    # the interval after the last sample (a host rising past hard then
                    # critical 100 ms apart gets both; a usage hovering at a threshold,
                    # which fires at every crossing, does not get a sample each), and
                    # hear no more until then.
                    self.wakeups.pause()
                    self.grading.system.expire()
                    next_sample = min(next_sample, last_sample + self.interval / 5)
            if host_gone:
                return self.host_ended()
            if not channel_open and self.words[_ring.W_FLAGS] & _ring.FLAG_STOPPED:
                # stop(): the host lives on and has asked us to go. No postmortem.
                self.close()
                _shm.unlink_segment(self.shm_name, self.lock_fd)
                return 0
            started = time.monotonic()
            if next_glance <= started < next_sample:
                next_glance = started + self.interval
                if self._guarded(self.glance, on_error=False):
                    self.grading.system.expire()
                    next_sample = started
            if started >= next_sample:
                last_sample = started
                if not self._guarded(self._tick):  # gone between two polls (no pidfd)
                    return self.host_ended()
                delay = self._guarded(self.next_delay, on_error=self.interval)
                next_sample = started + float(delay)  # type: ignore[arg-type]
                next_glance = started + self.interval
                if self._guarded(self.host_replaced, on_error=False):
                    return self.end_after_exec()
            self._guarded(self.answer_requests)
            if not orphans_checked:  # once, after the first sample: the host comes first
                orphans_checked = True
                self._guarded(partial(self.arm_wakeups, poller))
                self._guarded(self.recover_orphans)


# Live dumps reported to Sentry, if the settings and the dump say so (_sentry.should_send).
_SENTRY_TRIGGERS = ("hard", "critical", "unresponsive", "descendant-died")


def _v1_limit(reading: Reading) -> int | None:
    """The host's cgroup v1 memory limit, where one limits it: what usage thresholds
    are set against (the usage they watch is that cgroup's)."""
    return next((p.limit for p in reading.effective.pairs if p.source == "cgroup-v1"), None)


def _request_reason(buf: memoryview) -> str | None:
    return _ring._cstr(bytes(buf[_ring.REASON_AT : _ring.REASON_AT + _ring.REASON_SIZE])) or None


def _read_nonblocking(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b"r"
    except OSError:
        return b""




def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor but stdio and ours: an inherited pipe end would keep some
    other process waiting for EOF as long as we live."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _lower_oom_priority() -> None:
    # The watchdog is tiny; it must never be the OOM killer's pick instead of the host,
    # and it must outlive the host to write the postmortem. Needs CAP_SYS_RESOURCE to
    # go below 0: where that is refused, the default stays.
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-900")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    if sys.path and sys.path[0] in ("", os.getcwd()):  # Python 3.10 has no -P
        del sys.path[0]
    try:
        args = _Arguments(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        say(f"watchdog_core._watchdog: {exc}")
        return 2
    _close_inherited({args.lock, args.pidfd, args.ctl})
    _lower_oom_priority()
    if args.ctl >= 0:
        os.set_blocking(args.ctl, False)
    wake = _listen_for_requests()
    sentry = None
    raw = os.environ.pop("WATCHDOG_CORE_SENTRY_SETTINGS", None)  # _sentry_host.ENV
    if raw:
        from ._sentry_host import decode

        sentry = decode(raw)
    try:
        watcher = Watcher(args.shm, args.lock, args.pidfd, args.ctl, args.suggestions,
                          textfile_dir=args.prometheus,
                          textfile_expire=args.prometheus_expire, sentry=sentry)
    except (OSError, ValueError) as exc:
        say(f"cannot attach to ring {args.shm}: {exc}")
        return 2
    return watcher.run(wake)


def _listen_for_requests() -> int:
    """Make the outside requesters' signal wake the loop, not kill us: done before the
    Watcher writes our pid into the header, which is what requesters signal."""
    import signal

    wake, poke = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(poke, warn_on_full_buffer=False)
    signal.signal(_outside.WAKE_SIGNAL, lambda signum, frame: None)
    return wake


if __name__ == "__main__":
    sys.exit(main())
