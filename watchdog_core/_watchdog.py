"""The watchdog process: ``python -m watchdog_core._watchdog`` (SPEC 4).

A fresh interpreter started by the host. It samples the host every
``interval`` seconds, grades pressure, writes dumps on escalation and on
request, and when the host dies (its pidfd turns readable, or the control pipe
hits EOF where there is no pidfd) writes the postmortem, saves the ring image
beside it, removes the segment and exits.

It never imports the host's modules and holds no lock while sampling.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable

from . import _attribution, _levels, _limits, _reader, _ring, _shm
from ._diagnostics import Responsiveness
from ._hang import HangDetector, collect_stacks
from ._levels import PressureLevel
from ._report import DumpWriter, Reading, say
from ._safedir import private_file_name
from ._sampling import HostProbe, HostSample, SystemProbe

TIMELINE_SECONDS = 60.0


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="watchdog_core._watchdog")
    parser.add_argument("--shm", required=True)
    parser.add_argument("--pidfd", type=int, default=-1)
    parser.add_argument("--ctl", type=int, default=-1)
    parser.add_argument("--suggestion", action="append", default=[])
    return parser.parse_args(argv)


class Watcher:
    """State of one watched host."""

    def __init__(self, shm_name: str, pidfd: int, ctl: int, suggestions: dict[str, str]) -> None:
        self.shm_name = shm_name
        self.mapping = _shm.open_segment(shm_name, writable=True)
        self.buf = memoryview(self.mapping)
        self.words = self.buf.cast("Q")
        header = _reader.RingImage(bytes(self.buf))
        self.header = header
        self.host_pid = header.host_pid
        self.config = header.config
        self.interval = header.interval
        self.pidfd = pidfd
        self.ctl = ctl
        self.words[_ring.W_WATCHDOG_PID] = os.getpid()
        self.probe = HostProbe(self.host_pid, exclude_pids={os.getpid()},
                               include_children=self.config.include_children)
        self.system = SystemProbe(self.host_pid)
        self.grader = _levels.LevelGrader(self.config.soft, self.config.hard,
                                          self.config.critical)
        self.growth = _levels.GrowthEstimator()
        self.leak = _levels.GrowthEstimator(window=_levels.LEAK_WINDOW, spacing=10.0)
        self.timeline: deque[tuple[float, int, float]] = deque()
        self.oom = _attribution.OomWatch(self.host_pid)
        self.writer = DumpWriter(header, suggestions, self.probe)
        self.hang = HangDetector(self.config.hang_after, self.config.idle_after)
        self.crash_file = private_file_name("crash", header.session_id, self.host_pid)
        self.stacks_file = private_file_name("stacks", header.session_id, self.host_pid)
        self.last: Reading | None = None
        self.records = 0
        self.last_record_wall_ns = 0
        self.last_activity = time.monotonic()
        self.samples = 0
        self.checked_level = PressureLevel.NORMAL  # level at the last pressure-dump check
        self.faults: set[str] = set()

    # -- sampling ---------------------------------------------------------------------

    def sample(self) -> Reading | None:
        host = self.probe.sample()
        if not host.alive:
            return None
        info = self.system.meminfo()
        rlimits = self.system.rlimits()
        effective = _limits.limit_pairs(
            rss=host.rss, vms=host.vms, data=host.data, configured=self.config.memory_limit,
            info=info, cgroups=self.system.cgroups(), limits=rlimits,
        )
        self.growth.add(host.t, host.rss)
        self.leak.add(host.t, host.rss)
        level = self.grader.update(effective.ratio)
        reading = Reading(host=host, effective=effective, level=level,
                          growth=self.growth.slope(),
                          seconds_to_limit=self._seconds_to_limit(effective),
                          system_available=info.get("MemAvailable"), psi=self.system.psi(),
                          leak_bytes_per_hour=self._leak_rate(), fd_limit=rlimits.get("nofile"))
        self.timeline.append((host.t, host.rss, effective.ratio))
        while self.timeline and self.timeline[0][0] < host.t - TIMELINE_SECONDS:
            self.timeline.popleft()
        self.samples += 1
        self._note_records(host)
        self._write_status(reading)
        self.last = reading
        return reading

    def _seconds_to_limit(self, effective: _limits.EffectiveLimit) -> float | None:
        if effective.winner is None:
            return None
        # Remaining headroom of the winning pair, crossed at the RSS growth rate.
        slope = self.growth.slope()  # computed once per sample, cached
        if slope <= 0:
            return None
        return max(0.0, (effective.winner.limit - effective.winner.usage) / slope)

    def _leak_rate(self) -> float | None:
        """Bytes per hour of sustained growth, once LEAK_WINDOW seconds are covered."""
        if self.leak.span() < _levels.LEAK_WINDOW * 0.95:
            return None
        return self.leak.slope() * 3600

    def _note_records(self, host: HostSample) -> None:
        records = _reader.newest_index(self.words, self.header.slot_count) + 1
        if records != self.records:
            self.records = records
            self.last_activity = host.t
            self.last_record_wall_ns = host.wall_ns
            self.words[_ring.W_LAST_RECORD_NS] = host.wall_ns
            self.words[_ring.W_RECORDS] = records

    def _write_status(self, r: Reading) -> None:
        raw = _ring.encode_status(
            int(r.level), r.effective.ratio, r.host.rss, r.host.rss_anon, r.effective.limit,
            r.growth, r.seconds_to_limit, r.effective.source, r.host.wall_ns, self.samples)
        seq = self.words[_ring.W_STATUS_SEQ]
        self.words[_ring.W_STATUS_SEQ] = seq | 1
        self.buf[_ring.STATUS_AT : _ring.STATUS_AT + len(raw)] = raw
        self.words[_ring.W_STATUS_SEQ] = (seq | 1) + 1

    # -- dumps while the host lives ---------------------------------------------------

    def maybe_pressure_dump(self, reading: Reading) -> None:
        """Dump on a rise to hard or critical, within budget and cooldown (SPEC 5).

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
            words[_ring.W_PRESSURE_DUMPS] += 1
            words[_ring.W_LAST_PRESSURE_NS] = now_ns
            if level == PressureLevel.CRITICAL:
                words[_ring.W_CRITICAL_WRITTEN] = 1

    def check_responsiveness(self, reading: Reading) -> None:
        if not self.hang.enabled:
            return
        event = self.hang.check(self.words[_ring.W_HEARTBEAT], self.last_activity)
        if event is None:
            return
        flags = self.words[_ring.W_FLAGS]
        signum = self.config.stack_signal
        stacks = None
        if flags & _ring.FLAG_STACK_SIGNAL and signum:
            def stacks() -> str | None:
                self.words[_ring.W_STACK_REQUESTS] += 1
                text = collect_stacks(self.writer.store, self.stacks_file, self.host_pid,
                                      self.pidfd, signum)
                if text is None:
                    event.stacks_missing = "the host wrote no stacks within 2 s"
                return text
        elif flags & _ring.FLAG_STACK_SIGNAL_TAKEN:
            event.stacks_missing = "the host handles the stack signal itself"
        else:
            event.stacks_missing = "no stack signal registered (stack_signal=0 or no directory)"
        self.dump("unresponsive", reading, responsiveness=event, stacks=stacks)

    def answer_requests(self) -> None:
        request = self.words[_ring.W_REQUEST]
        if request <= self.words[_ring.W_REQUEST_DONE]:
            return
        reading = self.sample() or self.last
        name = None
        if reading is not None:
            reason = _request_reason(self.buf) or "manual"
            event = None
            if self.hang.enabled:  # bring the state up to date: a recovery is noted here
                event = self.hang.check(self.words[_ring.W_HEARTBEAT], self.last_activity)
            name = self.dump("manual", reading, reason=reason, responsiveness=event)
        self._set_last_dump(name or "")
        self.words[_ring.W_REQUEST_DONE] = request

    def dump(self, trigger: str, reading: Reading, reason: str | None = None,
             responsiveness: Responsiveness | None = None,
             stacks: Callable[[], str | None] | None = None) -> str | None:
        image = self.image(bytes(self.buf))
        name = self.writer.write_live(trigger, reading, image, self._timeline(reading.host.t),
                                      self.last_record_wall_ns, reason=reason,
                                      responsiveness=responsiveness or self.hang.take_recovery(),
                                      stacks=stacks)
        if name is not None:
            self._set_last_dump(name)
            self.words[_ring.W_DUMPS] += 1
        return name

    def image(self, raw: bytes) -> _reader.RingImage:
        """Decode the ring now; if the host has scribbled over its header, fall back to
        the header as it was when we attached, and say the ring was corrupt."""
        try:
            image = _reader.RingImage(raw)
        except _ring.RingError as exc:
            self.writer.ring_corrupt = str(exc)
            return self.header
        if image.corrupt_names:
            self.writer.ring_corrupt = "corrupt ring header: stat name count out of range"
        return image

    def _set_last_dump(self, name: str) -> None:
        raw = name.encode()[: _ring.DUMP_NAME_SIZE - 1].ljust(_ring.DUMP_NAME_SIZE, b"\0")
        self.buf[_ring.DUMP_NAME_AT : _ring.DUMP_NAME_AT + _ring.DUMP_NAME_SIZE] = raw

    def _timeline(self, now: float) -> list[tuple[float, int, float]]:
        return [(t - now, rss, ratio) for t, rss, ratio in self.timeline]

    # -- the end ------------------------------------------------------------------------

    def host_ended(self) -> int:
        """The host is gone: judge how, write the postmortem if it was unclean."""
        status = _attribution.read_wait_status(self.host_pid)  # first: the zombie may go soon
        image_bytes = bytes(self.buf)
        image = self.image(image_bytes)
        crash_text = (self.writer.store.read_private(self.crash_file)
                      if image.flags & _ring.FLAG_CRASH_FILE else None)
        verdict = _attribution.judge(
            image=image, wait_status=status, crash_text=crash_text,
            oom_counters=self.oom.risen(), kernel_log=self.oom.kernel_log(),
            last_ratio=self.last.effective.ratio if self.last else None,
        )
        self.oom.close()
        if not verdict.clean:
            try:
                path = self.writer.write_postmortem(
                    verdict, self.last, image, image_bytes,
                    self._timeline(time.monotonic()), self.last_record_wall_ns,
                    crash_text=crash_text)
            except Exception as exc:  # keep the segment: a later recovery can try again
                say(f"cannot write the postmortem ({type(exc).__name__}: {exc}); the ring "
                    f"stays in shared memory as {self.shm_name}")
                self.close()
                return 1
            if path is not None:
                say(f"postmortem written to {path}")
        self.remove_private_files()
        self.close()
        _shm.unlink_segment(self.shm_name)
        return 0

    def remove_private_files(self) -> None:
        """The host's crash and stacks files: their content is in the postmortem now."""
        for name in (self.crash_file, self.stacks_file):
            self.writer.store.remove_private(name)

    def _tick(self) -> bool:
        """One sample and its consequences; False when the host turned out to be gone."""
        reading = self.sample()
        if reading is None:
            return self.pidfd >= 0  # with a pidfd, poll() reports the death itself
        self.oom.refresh()
        self.maybe_pressure_dump(reading)
        self.check_responsiveness(reading)
        return True

    def _guarded(self, step: Callable[[], object]) -> object:
        """Run one step; a bug or an odd environment costs that step, not the watchdog.

        The watchdog's reason to exist is to outlive the host: an exception in sampling
        or in a dump is reported once per kind and the loop goes on.
        """
        try:
            return step()
        except Exception as exc:  # deliberately broad: see the docstring
            key = f"{step.__name__}:{type(exc).__name__}"
            if key not in self.faults:
                self.faults.add(key)
                say(f"internal error in {step.__name__} ({type(exc).__name__}: {exc}); "
                    "still watching")
            return True

    def close(self) -> None:
        self.words.release()
        self.buf.release()
        self.mapping.close()

    def recover_orphans(self) -> None:
        from ._recovery import recover_orphans

        for name, path in recover_orphans(exclude={self.shm_name}):
            say(f"recovered orphaned ring {name}" + (f": postmortem {path}" if path else ""))

    def run(self) -> int:
        poller = select.poll()
        orphans_checked = False
        if self.pidfd >= 0:
            poller.register(self.pidfd, select.POLLIN)
        if self.ctl >= 0:
            poller.register(self.ctl, select.POLLIN)
        channel_open = self.ctl >= 0
        next_sample = time.monotonic()
        while True:
            timeout = max(0.0, next_sample - time.monotonic())
            host_gone = False
            for fd, _ in poller.poll(timeout * 1000):
                if fd == self.pidfd:
                    host_gone = True
                elif fd == self.ctl:
                    data = _read_nonblocking(self.ctl)
                    if not data:
                        poller.unregister(self.ctl)
                        channel_open = False
                        if self.pidfd < 0:
                            host_gone = _wait_gone(self.host_pid, self.words)
            if host_gone:
                return self.host_ended()
            if not channel_open and self.words[_ring.W_FLAGS] & _ring.FLAG_STOPPED:
                # stop(): the host lives on and has asked us to go. No postmortem.
                self.close()
                _shm.unlink_segment(self.shm_name)
                return 0
            if time.monotonic() >= next_sample:
                next_sample += self.interval
                if next_sample < time.monotonic():  # we fell behind: do not burst
                    next_sample = time.monotonic() + self.interval
                if not self._guarded(self._tick):  # gone between two polls (no pidfd)
                    return self.host_ended()
            self._guarded(self.answer_requests)
            if not orphans_checked:  # once, after the first sample: the host comes first
                orphans_checked = True
                self._guarded(self.recover_orphans)


def _request_reason(buf: memoryview) -> str | None:
    raw = bytes(buf[_ring.REASON_AT : _ring.REASON_AT + _ring.REASON_SIZE])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace") or None


def _read_nonblocking(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b"r"
    except OSError:
        return b""


def _wait_gone(pid: int, words: memoryview, timeout: float = 30.0) -> bool:
    """Without a pidfd: EOF came; wait (bounded) for the host to be gone unless stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if words[_ring.W_FLAGS] & _ring.FLAG_STOPPED:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if _attribution.read_wait_status(pid) is not None:
            return True
        time.sleep(0.01)
    return True


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
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    _close_inherited({args.pidfd, args.ctl})
    _lower_oom_priority()
    if args.ctl >= 0:
        os.set_blocking(args.ctl, False)
    suggestions = {}
    for item in args.suggestion:
        level, _, text = item.partition("=")
        suggestions[level] = text
    try:
        watcher = Watcher(args.shm, args.pidfd, args.ctl, suggestions)
    except (OSError, ValueError) as exc:
        say(f"cannot attach to ring {args.shm}: {exc}")
        return 2
    return watcher.run()


if __name__ == "__main__":
    sys.exit(main())
