"""Orphans: rings whose host and watchdog are both gone (issue 4).

A cgroup-wide kill or a machine-wide OOM can take the watchdog with the host;
their segment then outlives both. Every new watchdog looks for such segments
once at start (so does ``watchdog-core gc``): the host's pid must be gone, or
reused (its start time or the boot id differ), and no watchdog may be attached.
The finder claims the segment with a lock, writes a ``recovered`` postmortem into
the directory named in the ring, saves the ``.ring`` and removes the segment.
"""

from __future__ import annotations

import os

from . import _attribution, _reader, _ring, _shm
from ._report import DumpWriter
from ._safedir import private_file_name
from ._sampling import HostProbe


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def orphan_evidence(image: _reader.RingImage, shm_name: str) -> list[str] | None:
    """Why this ring is an orphan, or None while its host or watchdog lives."""
    evidence = []
    boot = _boot_id()
    if image.boot_id and boot and image.boot_id != boot:
        evidence.append("ring from an earlier boot")
    else:
        ticks = process_start_ticks(image.host_pid)
        if ticks is None:
            evidence.append(f"host pid {image.host_pid} is gone")
        elif image.host_start_ticks and ticks != image.host_start_ticks:
            evidence.append(f"host pid {image.host_pid} now belongs to another process")
        elif _is_zombie(image.host_pid):
            evidence.append(f"host pid {image.host_pid} is a zombie")
        else:
            return None
        if image.watchdog_pid and _watches(image.watchdog_pid, shm_name):
            return None  # its watchdog is alive and will write the postmortem itself
        evidence.append(f"watchdog pid {image.watchdog_pid or '-'} is gone")
    return evidence


def _is_zombie(pid: int) -> bool:
    return _attribution.read_wait_status(pid) is not None


def _watches(pid: int, shm_name: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"watchdog_core._watchdog" in argv and shm_name.encode() in argv


def recover_orphans(exclude: set[str] | None = None, *, dry_run: bool = False
                    ) -> list[tuple[str, str | None]]:
    """Recover every orphaned segment on the machine.

    Returns ``(segment, postmortem path or None)`` for each orphan found; with
    ``dry_run`` nothing is written or removed.
    """
    out: list[tuple[str, str | None]] = []
    for name in _shm.list_segments():
        if exclude and name in exclude:
            continue
        # Another user's segment could name any directory in its header: never write
        # where a ring we did not create tells us to.
        if _shm.segment_owner(name) != os.geteuid():
            continue
        image_bytes = _shm.read_segment(name)
        if image_bytes is None:
            continue
        try:
            image = _reader.RingImage(image_bytes)
        except _ring.RingError:
            continue  # not ours to judge; `watchdog-core gc` reports corrupt segments
        evidence = orphan_evidence(image, name)
        if evidence is None:
            continue
        if dry_run:
            out.append((name, None))
            continue
        claim = _shm.claim_segment(name)
        if claim is None:
            continue  # another recoverer has it
        try:
            if not _shm.segment_exists(name):
                continue
            out.append((name, recover(name, image, image_bytes, evidence)))
        finally:
            os.close(claim)
    return out


def recover(name: str, image: _reader.RingImage, image_bytes: bytes,
            evidence: list[str]) -> str | None:
    """Write the orphan's postmortem (unless it had ended cleanly) and remove it."""
    writer = DumpWriter(image, {}, HostProbe(image.host_pid))
    crash_name = private_file_name("crash", image.session_id, image.host_pid)
    crash_text = (writer.store.read_private(crash_name)
                  if image.flags & _ring.FLAG_CRASH_FILE else None)
    status = image.status
    verdict = _attribution.judge(
        image=image, wait_status=None, crash_text=crash_text, oom_counters=[],
        kernel_log=None, last_ratio=status.ratio if status else None,
    )
    path = None
    if not verdict.clean:
        verdict.evidence[:0] = [*evidence, f"recovered by watchdog pid {os.getpid()}"]
        path = writer.write_postmortem(verdict, None, image, image_bytes, [], 0,
                                       crash_text=crash_text, trigger="recovered",
                                       status=status)
    for kind in ("crash", "stacks"):
        writer.store.remove_private(private_file_name(kind, image.session_id, image.host_pid))
    _shm.unlink_segment(name)
    return path
