"""A host's death, handled as one state machine (docs/design.md, "How a death is handled").

    alive -> dying -> dead -> judged -> written -> released

* **dying**: a sample sees the kernel tearing the host down (its memory detached,
  ``PF_EXITING``, a zombie). The last good reading stays the one reported, and
  the exit status is read now if the stat already holds it.
* **dead**: the pidfd turned readable (or the control pipe hit EOF and the pid
  is gone).
* **judged**: the evidence ladder below gives the exit status; with the ring's
  flags, the crash file and the OOM evidence it becomes a :class:`Verdict`, which
  is written into the ring header before anything goes to disk, so whoever
  finishes the work (``gc``, the next session) reuses it instead of guessing.
* **written**: the postmortem's first phase is on disk (its name goes into the
  header), then the ring image beside it, then the complete version.
* **released**: only now are the segment and the host's private files removed.
  A full or read-only disk leaves them in place for a later recovery.

The evidence ladder for the exit status, exact rungs first:

1. ``watchdog-core run`` as the parent: the wait status it reaped (``_runner``);
2. the zombie's ``/proc/<pid>/stat`` (read first: its parent may reap it at once),
   or the same field read while the kernel tore a large host down;
3. the pidfd's exit info, once the host has been reaped (Linux 6.15+);
4. in-host evidence: the *exiting* marker, the exception type, faulthandler's
   crash file, the SIGTERM note, OOM counters and kmsg.

Only where 1-3 all fail may an *exiting* host with no exception be judged clean.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from . import _attribution, _reader, _ring, _shm
from ._attribution import OomEvidence
from ._safedir import private_file_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._document import DumpDoc
    from ._report import DumpWriter
    from ._store import DiagnosticsDir as _Store

CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
     signal.SIGTRAP, signal.SIGSYS}
)
KINDS = ("unknown", "oom-killed", "crashed", "killed", "exited")
CONFIDENCES = ("unknown", "likely", "certain")
SOURCES = ("", "run", "zombie", "exiting", "pidfd")  # where an exit status came from
SOURCE_TEXT = {"run": "the parent's wait status", "zombie": "the zombie's /proc stat",
               "exiting": "/proc stat while the kernel tore the host down",
               "pidfd": "the pidfd's exit info"}
REAP_WAIT = 0.25  # seconds to wait for a parent to reap a host it has been told about
# Once the main thread ended alone (pthread_exit), the zombie's stat holds that thread's
# status, not the process's: only the pidfd can tell, and only after the reap. While the
# zombie is there, a slow parent is waited for this long.
LEADER_REAP_WAIT = 5.0
NEAR_LIMIT = 0.9  # a last ratio this close to the limit makes an unproven OOM kill likely


class ExitStatus:
    """A wait status and the rung of the ladder it came from."""

    __slots__ = ("status", "source")

    def __init__(self, status: int, source: str) -> None:
        self.status, self.source = status, source

    def describe(self) -> str:
        sig = self.status & 0x7F
        what = (f"killed by {signal_name(sig)}" + (" (core dumped)" if self.status & 0x80
                                                    else "")
                if sig else f"exit status {(self.status >> 8) & 0xFF}")
        return f"{SOURCE_TEXT.get(self.source, self.source)}: {what}"


def exit_status(pid: int, pidfd: int, start_ticks: int, earlier: ExitStatus | None = None,
                *, trust_stat: bool = True) -> ExitStatus | None:
    """Rungs 2 and 3 of the ladder, for a host that has just died.

    The zombie's stat first; once it is gone, the pidfd. A parent that has been
    told of the death may take a moment to reap, and the pidfd says nothing before
    the reap, so both are tried again for up to REAP_WAIT seconds. ``earlier`` is a
    status read while the host was dying, the last resort. ``trust_stat`` is False
    when the main thread ended before the process: the stat then holds its status, and
    only the pidfd can tell, so a zombie still unreaped is waited for up to
    LEADER_REAP_WAIT seconds.
    """
    started = time.monotonic()
    while True:
        found = _attribution.stat_exit_status(_attribution.read_proc_stat(pid), start_ticks) \
            if trust_stat else None
        if found is not None and found[1] == "zombie":
            return ExitStatus(*found)
        code = _attribution.pidfd_exit_status(pidfd)
        if code is not None:
            return ExitStatus(code, "pidfd")
        if found is not None:  # still tearing down: the status is final already
            return ExitStatus(*found)
        if pidfd < 0 or _attribution.pidfd_info_supported() is False:
            return earlier
        waited = time.monotonic() - started
        if waited >= REAP_WAIT:
            zombie = not trust_stat and _attribution.stat_exit_status(
                _attribution.read_proc_stat(pid), start_ticks) is not None
            if not zombie or waited >= LEADER_REAP_WAIT:
                return earlier
        time.sleep(0.002)


class Verdict:
    """The attribution: clean or not, and ``host.exit`` for the dump."""

    __slots__ = ("clean", "kind", "signal", "exit_code", "exception", "evidence",
                 "confidence", "source")

    def __init__(self) -> None:
        self.clean = False
        self.kind = "unknown"
        self.signal: str | None = None
        self.exit_code: int | None = None
        self.exception: str | None = None
        self.evidence: list[str] = []
        self.confidence = "unknown"
        self.source = ""  # the rung the exit status came from, if any


def judge(*, image: _reader.RingImage, status: ExitStatus | None, crash_text: str | None,
          oom: OomEvidence, last_ratio: float | None) -> Verdict:
    """Combine the evidence into a verdict; ``confidence`` says how it was reached.

    ``certain``: a wait status, or the kernel naming the host's pid; ``likely``:
    circumstantial (a shared cgroup's OOM counter, a ratio near the limit, in-host
    notes); ``unknown``: nothing to go on, and ``evidence`` says what was checked.
    """
    v = Verdict()
    ev = v.evidence
    if image.stopped:
        ev.append("ring: stopped")
        v.clean, v.kind, v.confidence = True, "exited", "certain"
        return v
    exiting = image.exiting
    ev.append("ring: exiting (atexit ran)" if exiting else "ring: no exiting marker")
    if image.exception:
        v.exception = image.exception
        ev.append(f"ring: uncaught exception {image.exception}")
    if image.thread_exception:
        ev.append(f"ring: a thread died of {image.thread_exception}")
    if image.flags & _ring.FLAG_SIGTERM:
        ev.append("ring: SIGTERM received (catch_sigterm)")
    if image.flags & _ring.FLAG_FOREIGN_FAULTHANDLER:
        ev.append("faulthandler was enabled by the host itself: no crash file of ours")
    if status is None:
        ev.append("exit status not readable (not from a zombie, and the pidfd gave none: a "
                  "kernel before 6.15, or a parent that had not reaped the host in time)")
    else:
        ev.append(status.describe())
        v.source = status.source
    fault = crash_signal(crash_text)
    if fault is not None:
        ev.append(f"faulthandler: Fatal Python error ({signal_name(fault)})")
    ev.extend(oom.counters.values())
    ev.extend(oom.earlier)
    kernel = oom.kernel
    if kernel.ours:
        ev.append(kernel.ours)
    elif kernel.others:
        ev.append("kernel: the OOM killer chose pid " + ", ".join(map(str, kernel.others[:5]))
                  + ", not the host")
    if kernel.overrun:
        ev.append("kernel: some /dev/kmsg records were lost before they were read")
    if last_ratio is not None:
        ev.append(f"last ratio {last_ratio:.2f}")
    if status is not None:
        _judge_status(v, status.status, image, oom, last_ratio)
    else:
        _judge_without_status(v, image, fault, oom, last_ratio)
    return v


def _judge_status(v: Verdict, status: int, image: _reader.RingImage, oom: OomEvidence,
                  last_ratio: float | None) -> None:
    """The wait status is known: kind, signal and code are exact."""
    v.confidence = "certain"
    sig = status & 0x7F
    if not sig:
        v.exit_code = (status >> 8) & 0xFF
        v.kind = "exited"
        v.clean = v.exit_code == 0 and not image.exception
        return
    v.signal = signal_name(sig)
    kernel = oom.kernel
    if sig in CRASH_SIGNALS:
        v.kind = "crashed"
    elif sig != signal.SIGKILL:
        v.kind = "killed"  # a SIGTERM is never an OOM kill, whatever the counters say
    elif kernel.ours:
        v.kind = "oom-killed"  # the kernel named the host
    elif kernel.readable and not kernel.overrun:
        v.kind = "killed"  # the kernel logs every OOM kill, and not this one
    elif oom.cgroup_rose & oom.alone:
        v.kind = "oom-killed"  # its cgroup held nothing else the kill could have hit
    elif oom.cgroup_rose or (oom.vmstat_counts() and (last_ratio or 0) >= NEAR_LIMIT):
        # A counter the host shares with other processes: another's kill, maybe.
        v.kind, v.confidence = "oom-killed", "likely"
    else:
        v.kind = "killed"


def _judge_without_status(v: Verdict, image: _reader.RingImage, fault: int | None,
                          oom: OomEvidence, last_ratio: float | None) -> None:
    """No wait status (an old kernel and a lost race): in-host notes and counters."""
    near_limit = (last_ratio or 0) >= NEAR_LIMIT
    if oom.kernel.ours:  # the kernel names the pid: that is certain
        v.kind, v.signal, v.confidence = "oom-killed", "SIGKILL", "certain"
    elif fault is not None:
        v.kind, v.signal, v.confidence = "crashed", signal_name(fault), "likely"
    elif image.flags & _ring.FLAG_SIGTERM:
        v.kind, v.signal, v.confidence = "killed", "SIGTERM", "likely"
    elif image.exception:
        v.kind, v.confidence = "exited", "likely"
    elif not image.exiting and not (oom.kernel.readable and not oom.kernel.overrun) and (
        oom.cgroup_rose & oom.alone
        or (near_limit and (oom.cgroup_rose or oom.vmstat_counts()))
    ):
        v.kind, v.signal, v.confidence = "oom-killed", "SIGKILL", "likely"
    elif image.exiting:
        # atexit ran with no exception: a status of 0 is the only unseen exit that does
        # that, and the ladder has nothing better to say (docs/fault-matrix.md).
        v.kind, v.clean, v.confidence = "exited", True, "likely"


_FAULT_NAMES = {
    "Segmentation fault": signal.SIGSEGV,
    "Aborted": signal.SIGABRT,
    "Bus error": signal.SIGBUS,
    "Floating point exception": signal.SIGFPE,
    "Illegal instruction": signal.SIGILL,
}


def crash_signal(crash_text: str | None) -> int | None:
    """The signal named by faulthandler's "Fatal Python error: <what>" line."""
    for line in (crash_text or "").splitlines():
        if line.startswith("Fatal Python error: "):
            return _FAULT_NAMES.get(line[len("Fatal Python error: ") :].strip())
    return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


# -- the verdict in the ring header ---------------------------------------------------

def encode_verdict(v: Verdict) -> int:
    """One header word: kind, confidence, signal, exit code, clean, source."""
    member = signal.Signals.__members__.get(v.signal or "")
    sig = member.value if member is not None else 0
    word = KINDS.index(v.kind) | CONFIDENCES.index(v.confidence) << 8 | (sig & 0xFF) << 16
    if v.exit_code is not None:
        word |= 1 << 24 | (v.exit_code & 0xFF) << 32
    if v.clean:
        word |= 1 << 25
    word |= SOURCES.index(v.source) << 40
    return word | 1 << 63  # a verdict of all zeros would be indistinguishable from none


def decode_verdict(word: int, image: _reader.RingImage) -> Verdict | None:
    """The verdict a watchdog wrote before it could finish; None if it wrote none."""
    if not word >> 63:
        return None
    v = Verdict()
    kind, confidence = word & 0xFF, word >> 8 & 0xFF
    v.kind = KINDS[kind] if kind < len(KINDS) else "unknown"
    v.confidence = CONFIDENCES[confidence] if confidence < len(CONFIDENCES) else "unknown"
    sig = word >> 16 & 0xFF
    v.signal = signal_name(sig) if sig else None
    v.exit_code = word >> 32 & 0xFF if word >> 24 & 1 else None
    v.clean = bool(word >> 25 & 1)
    source = word >> 40 & 0xFF
    v.source = SOURCES[source] if source < len(SOURCES) else ""
    v.exception = image.exception
    how = f" (from {SOURCE_TEXT[v.source]})" if v.source in SOURCE_TEXT else ""
    v.evidence.append(f"verdict written into the ring by the host's watchdog{how}")
    return v


class HostFiles:
    """The host's private files beside the dumps, named from its ring header: the crash
    file (faulthandler), the stacks file (the stack signal) and the exception file (an
    uncaught exception's frames). Read at its death, removed with the rest of the
    evidence once the postmortem is on disk."""

    def __init__(self, session_id: str, host_pid: int, nonce: int) -> None:
        self.crash = private_file_name("crash", session_id, host_pid, nonce)
        self.stacks = private_file_name("stacks", session_id, host_pid, nonce)
        self.exception = private_file_name("exception", session_id, host_pid, nonce)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.crash, self.stacks, self.exception)

    def read(self, store: _Store, flags: int) -> tuple[str | None, str | None]:
        """(crash text, exception frames text), each None unless the ring's flags say the
        host wrote it."""
        crash = store.read_private(self.crash) if flags & _ring.FLAG_CRASH_FILE else None
        frames = (store.read_private(self.exception, 64 * 1024)
                  if flags & _ring.FLAG_EXCEPTION else None)
        return crash, frames


# -- the state machine ------------------------------------------------------------------

class Death:
    """One host's death, from the first sign to the evidence released.

    The state lives in the ring header (``W_DEATH``), so a recoverer that takes over
    from a watchdog that died midway knows what is done. ``writer`` is the session's
    ``_report.DumpWriter``; ``private_files`` the names of the host's ``HostFiles``.
    """

    def __init__(self, *, words: memoryview, shm_name: str, host_pid: int,
                 start_ticks: int, pidfd: int, private_files: tuple[str, ...],
                 segment_fd: int = -1) -> None:
        self.words = words
        self.shm_name = shm_name
        self.segment_fd = segment_fd  # ours: the name is removed only while it means this
        self.host_pid = host_pid
        self.start_ticks = start_ticks
        self.pidfd = pidfd
        self.private_files = private_files
        self.early_status: ExitStatus | None = None  # read while the host was dying
        self.leader_gone = False  # its main thread ended first: the stat is that thread's
        # Rung 1: ``watchdog-core run`` is the host's parent and reaped it itself.
        self.parent_status: ExitStatus | None = None

    @property
    def state(self) -> int:
        return int(self.words[_ring.W_DEATH])

    def _advance(self, state: int) -> None:
        if self.state < state:
            self.words[_ring.W_DEATH] = state

    # alive -> dying
    def dying(self, stat: _attribution.ProcStat | None) -> None:
        """A sample saw the teardown: keep the status if the stat holds it already."""
        self._advance(_ring.DEATH_DYING)
        if self.early_status is None and not self.leader_gone:
            found = _attribution.stat_exit_status(stat, self.start_ticks)
            if found is not None:
                self.early_status = ExitStatus(*found)

    # dying -> dead -> judged
    def judge(self, image: _reader.RingImage, crash_text: str | None, oom: OomEvidence,
              last_ratio: float | None) -> Verdict:
        self._advance(_ring.DEATH_DEAD)
        status = self.parent_status or exit_status(
            self.host_pid, self.pidfd, self.start_ticks, self.early_status,
            trust_stat=not self.leader_gone)
        verdict = judge(image=image, status=status, crash_text=crash_text, oom=oom,
                        last_ratio=last_ratio)
        self.record_verdict(verdict)
        return verdict

    def record_verdict(self, verdict: Verdict) -> None:
        self.words[_ring.W_VERDICT] = encode_verdict(verdict)
        self._advance(_ring.DEATH_JUDGED)

    # judged -> written
    def published(self, name: str, buf: memoryview) -> None:
        """The first phase is on disk under ``name``: a recoverer completes it."""
        _ring._put_str(buf, _ring.DUMP_NAME_AT, _ring.DUMP_NAME_SIZE, name)
        self._advance(_ring.DEATH_PUBLISHED)

    def written(self) -> None:
        self._advance(_ring.DEATH_WRITTEN)

    def write(self, writer: DumpWriter, dump: DumpDoc, wall_ns: int,
              buf: memoryview) -> str | None:
        """judged -> written: the postmortem's first phase, the ring image beside it,
        then the complete version, each step noted in the header before the next.
        Returns the file's path once all of it is on disk, else None (the disk is full
        or read-only: the evidence stays for a later recovery)."""
        name = writer.publish(dump, wall_ns)
        if name is None:
            return None
        self.published(name, buf)
        self.words[_ring.W_DUMPS] += 1
        # A copy of the ring now: the host is gone, nothing writes it any more.
        if not writer.complete(name, dump, writer.save_ring(name, bytes(buf))):
            return None
        self.written()
        return os.path.join(writer.store.path, name)

    # written -> released
    def release(self, remove_private: Callable[[str], object]) -> None:
        """Remove the host's private files and the segment: the evidence is on disk.

        ``remove_private`` is the store's ``remove_private``.
        """
        for name in self.private_files:
            remove_private(name)
        _shm.unlink_segment(self.shm_name, self.segment_fd)


def host_is_gone(pid: int, start_ticks: int) -> bool:
    """Without a pidfd: is the host gone (reaped, a zombie, or a new process with its
    pid)? Used after the control pipe's EOF."""
    stat = _attribution.read_proc_stat(pid)
    return stat is None or stat.ended or bool(
        start_ticks and stat.start_ticks != start_ticks)
