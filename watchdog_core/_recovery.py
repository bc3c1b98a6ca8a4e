"""Orphans: rings whose host and watchdog are both gone (docs/design.md).

A cgroup-wide kill or a machine-wide OOM can take the watchdog with the host, and
a full disk at the moment of death leaves a ring its watchdog could not write;
the segment then outlives both. Every new watchdog looks for such segments once
after its first sample, and so does ``watchdog-core gc``.

A segment is an orphan exactly when no one holds its locks (``_shm``): not by
pid, start time or command line, which mean nothing across pid namespaces that
share ``/dev/shm``. Taking both locks is also the claim, so one recoverer wins.
The recoverer reuses what the watchdog had done: its verdict from the header
(``_death``), and its half-written postmortem, which it completes; otherwise it
judges from what the host left in the ring and says ``unknown`` where nothing
tells. The segment and the host's private files go only once the postmortem and
the ``.ring`` are on disk.
"""

from __future__ import annotations

import os

from . import _death, _procfs, _reader, _ring, _shm
from ._attribution import OomEvidence
from ._report import RECOVERED_BY, DumpWriter

Recovered = tuple[str, str | None, str]  # (segment, postmortem path or None, outcome)
# Outcomes: "written" (a postmortem is on disk, the segment gone), "clean" (it had ended
# cleanly: removed, nothing to write), "kept" (the disk refused: the segment stays for
# the next try), "partial" (the postmortem's JSON is on disk, its path given, but the
# ring image is not: the segment stays for the next try), "dropped" (its directory is
# refused for what it is: removed unwritten), "found" (a dry run).


class _QuietDumpWriter(DumpWriter):
    """Says nothing on stderr of what stops a write. A watchdog's scan for the orphans
    of other sessions would otherwise print their disk's trouble on its own host's
    stderr, at every start of every session on the machine; ``gc`` says it."""

    def _report_once(self, key: str, message: str) -> None:
        return


def recover_orphans(exclude: set[str] | None = None, *, dry_run: bool = False,
                    quiet: bool = False) -> list[Recovered]:
    """Recover every orphaned segment on the machine that belongs to us.

    With ``dry_run`` nothing is written or removed. With ``quiet`` a write that fails
    is not said on stderr (the outcome still says it).
    """
    out: list[Recovered] = []
    for name in _shm.list_segments():
        if exclude and name in exclude:
            continue
        # Another user's segment could name any directory in its header: never write
        # where a ring we did not create tells us to.
        if _shm.segment_owner(name) != os.geteuid():
            continue
        claim = _shm.claim_segment(name)
        if claim is None:
            continue  # its host or its watchdog lives (or another recoverer has it)
        try:
            if os.fstat(claim).st_nlink == 0:
                continue  # removed between our open and our lock
            found = _recover_claimed(name, claim, dry_run, quiet=quiet)
        except (OSError, ValueError):
            continue  # empty, unreadable or not a ring: `ls` reports such segments
        finally:
            os.close(claim)
        if found is not None:
            out.append(found)
    return out


def _recover_claimed(name: str, claim: int, dry_run: bool, *, quiet: bool = False
                     ) -> Recovered | None:
    size = os.fstat(claim).st_size
    if not _ring.HEADER_SIZE <= size <= _ring.ring_size(_reader.MAX_SLOTS):
        # Not a ring of any geometry: copying a segment someone truncated to 10 GiB would
        # take 10 GiB from every new watchdog's orphan scan. `gc` removes such segments.
        raise ValueError(f"segment {name} is {size} bytes, not a ring")
    mapping = _shm.map_descriptor(claim, writable=True)
    buf = memoryview(mapping)
    words = buf.cast("Q")
    try:
        with _reader.RingImage(buf) as header:  # the header alone: no page is touched
            if not header.features & _ring.FEATURE_LOCKS and header.boot_id == _procfs.boot_id():
                return None  # made before rings had locks: no lock says whether it lives
            if header.features & _ring.FEATURE_RUN and _child_of_run_lives(header):
                return None  # run was killed, its child was not: no orphan until it dies
        if dry_run:
            return name, None, "found"
        image_bytes = bytes(buf)  # the whole ring, for its postmortem and its .ring file
        image = _reader.RingImage(image_bytes)
        return (name, *recover(name, image, image_bytes, words, buf, claim, quiet=quiet))
    finally:
        words.release()
        buf.release()
        mapping.close()


def _child_of_run_lives(header: _reader.RingImage) -> bool:
    """The host of a ring ``watchdog-core run`` made holds no lock of its own (``run``
    held it for the child): is that child still running? By pid, start time and boot,
    which can only say yes in the pid namespace the child runs in (docs/run.md)."""
    from ._attribution import read_proc_stat

    if header.death_state != _ring.DEATH_ALIVE or header.boot_id != _procfs.boot_id():
        return False
    stat = read_proc_stat(header.host_pid)
    return stat is not None and not stat.ended and stat.start_ticks == header.host_start_ticks


def recover(name: str, image: _reader.RingImage, image_bytes: bytes, words: memoryview,
            buf: memoryview, claim: int, *, quiet: bool = False) -> tuple[str | None, str]:
    """Write (or finish) the orphan's postmortem, unless it had ended cleanly, and
    remove it once that is on disk. Returns (the postmortem's path, the outcome)."""
    # The host is gone: its pid may be another's, so no probe.
    writer = (_QuietDumpWriter if quiet else DumpWriter)(image, {}, argv=[])
    store = writer.store
    files = _death.HostFiles(image.session_id, image.host_pid, image.nonce)
    death = _death.Death(words=words, shm_name=name, host_pid=image.host_pid,
                         start_ticks=image.host_start_ticks, pidfd=-1,
                         private_files=files.names, segment_fd=claim)
    crash_text, frames_text = files.read(store, image.flags)
    note = (f"{RECOVERED_BY}{os.getpid()}: neither the host nor its watchdog holds "
            "the ring any more")
    verdict = (_death.decode_verdict(image.verdict_word, image)
               if image.death_state >= _ring.DEATH_JUDGED else None)
    if verdict is None:
        status = image.status
        verdict = _death.judge(image=image, status=None, crash_text=crash_text,
                               oom=OomEvidence(), last_ratio=status.ratio if status else None)
        death.record_verdict(verdict)
    if verdict.clean:
        death.release(store.remove_private)
        return None, "clean"
    if image.death_state >= _ring.DEATH_PUBLISHED and image.last_dump:
        # The watchdog's own postmortem is on disk, waiting for its ring: finish it.
        finished = writer.finish_published(image.last_dump, bytes(buf), note)
        if finished:
            death.written()
            death.release(store.remove_private)
            return os.path.join(store.path, image.last_dump), "written"
        if finished is False:  # the disk still refuses: keep everything for the next try
            return os.path.join(store.path, image.last_dump), "partial"
    verdict.evidence[:0] = [note]
    dump, wall_ns = writer.postmortem(verdict, None, image, [], 0, crash_text=crash_text,
                                      frames_text=frames_text, trigger="recovered",
                                      status=image.status)
    path = death.write(writer, dump, wall_ns, buf)
    if path is not None or writer.refused:  # a refused directory will not get better
        death.release(store.remove_private)
    published = _reader.read_dump_name(buf)
    if path is None and death.state >= _ring.DEATH_PUBLISHED and published and (
            published != image.last_dump):  # this try's JSON is on disk, its ring is not
        return os.path.join(store.path, published), "partial"
    return path, "written" if path else ("dropped" if writer.refused else "kept")
