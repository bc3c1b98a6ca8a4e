"""Segments and their locks (docs/design.md, "Locks, not pids"), with real shared memory."""

from __future__ import annotations

import os

import pytest

from watchdog_core import _shm

pytestmark = pytest.mark.skipif(not _shm.LOCKS, reason="needs OFD locks (Linux)")


@pytest.fixture
def session() -> str:
    return f"shm-test-{os.urandom(3).hex()}"


def test_locks_say_who_holds_a_segment(session: str) -> None:
    name, mapping, host = _shm.create_segment(session, 4242, 8192)
    try:
        assert _shm.holders(name) == (True, False)
        assert _shm.claim_segment(name) is None  # the host lives
        watchdog = _shm.lock_for_watchdog(name)
        assert _shm.holders(name) == (True, True)
        _shm.release(host)
        assert _shm.holders(name) == (False, True)
        assert _shm.claim_segment(name) is None  # its watchdog lives
        _shm.release(watchdog)
        claim = _shm.claim_segment(name)  # nobody: an orphan, and now ours
        assert claim is not None
        assert _shm.holders(name) == (True, True)  # the claim covers both bytes
        os.close(claim)
    finally:
        mapping.close()
        _shm.unlink_segment(name)


def test_the_mapping_does_not_carry_the_hosts_lock(session: str) -> None:
    """An mmap keeps a dup of the descriptor it was made from: made from the lock's, a
    forked child inheriting the mapping would keep the host's lock after its death."""
    name, mapping, host = _shm.create_segment(session, 4242, 8192)
    try:
        _shm.release(host)
        assert _shm.holders(name) == (False, False)  # the mapping lives on, the lock not
    finally:
        mapping.close()
        _shm.unlink_segment(name)


def test_a_taken_name_gets_a_suffix(session: str) -> None:
    first, m1, fd1 = _shm.create_segment(session, 7, 8192)
    second, m2, fd2 = _shm.create_segment(session, 7, 8192)
    try:
        assert first == f"watchdog_core-{session}-7"
        assert second == f"watchdog_core-{session}-7.1"
        assert _shm.parse_segment_name(second) == (session, 7)
    finally:
        for name, mapping, fd in ((first, m1, fd1), (second, m2, fd2)):
            mapping.close()
            _shm.unlink_segment(name, fd)
            _shm.release(fd)


@pytest.mark.parametrize("name", ["watchdog_core-s-7.0", "watchdog_core-s-7.",
                                  "watchdog_core-s-x.1", "watchdog_core-s-7.1.2"])
def test_bad_suffixes_are_not_segment_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a watchdog-core segment name"):
        _shm.parse_segment_name(name)


def test_a_late_remover_never_takes_a_new_segment_of_the_same_name(session: str) -> None:
    """A removes its segment; B (another pid namespace) creates one of the same name; A's
    late watchdog, or its own stop(), must not remove B's."""
    name, old_map, old = _shm.create_segment(session, 9, 8192)
    assert _shm.unlink_segment(name, old)
    again, new_map, new = _shm.create_segment(session, 9, 8192)
    try:
        assert again == name
        assert not _shm.unlink_segment(name, old)  # the name means another segment now
        assert _shm.segment_exists(name)
        assert _shm.unlink_segment(name, new)
    finally:
        for mapping, fd in ((old_map, old), (new_map, new)):
            mapping.close()
            _shm.release(fd)


def test_a_fifo_with_a_segments_name_blocks_nothing(session: str) -> None:
    # Anyone may put a FIFO named like a segment in /dev/shm; a blocking open of it would
    # wait for a writer forever (ls, gc and every new watchdog's orphan scan).
    name = f"watchdog_core-{session}-1"
    path = os.path.join("/dev/shm", name)
    os.mkfifo(path, 0o600)
    try:
        assert _shm.holders(name) is None
        assert _shm.claim_segment(name) is None
        with pytest.raises(_shm.SegmentError, match="not a regular file"):
            _shm.open_segment(name)
    finally:
        os.unlink(path)


def test_an_orphan_larger_than_any_ring_is_not_copied(session: str) -> None:
    # A lock-free segment truncated past the largest ring: the orphan scan used to copy it
    # whole (a 10 GiB sparse file cost 10 GiB). Measured in a child, by its peak RSS.
    import subprocess
    import sys

    name = f"watchdog_core-{session}-1"
    path = os.path.join("/dev/shm", name)
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: costs no memory until someone reads it
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a big
    # pytest process would report pytest's peak.
    code = ("import sys\n"
            "from watchdog_core import _recovery, _shm\n"
            "claim = _shm.claim_segment(sys.argv[1])\n"
            "try:\n"
            "    _recovery._recover_claimed(sys.argv[1], claim, dry_run=False)\n"
            "except ValueError as exc:\n"
            "    print(exc, file=sys.stderr)\n"
            "print(next(line.split()[1] for line in open('/proc/self/status')\n"
            "           if line.startswith('VmHWM:')))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, name], capture_output=True,
                             text=True, timeout=60, check=True)
        assert "not a ring" in out.stderr, out
        assert int(out.stdout) < 128 * 1024, out  # KiB: nowhere near the 1 GiB
        assert os.path.exists(path)  # left for `gc`, which says what it removes
    finally:
        os.unlink(path)
