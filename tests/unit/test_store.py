"""Naming, atomic two-phase writes, retention (docs/design.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchdog_core._store import (
    DiagnosticsDir,
    StoreError,
    dump_name,
    dump_set_of,
    dump_timestamp,
)

T = 1_795_628_401_123_456_789  # 2026-11-25T17:40:01.123456789Z


def test_names_and_timestamps() -> None:
    assert dump_timestamp(T) == ("20261125T174001.123456Z", "2026-11-25T17:40:01.123456Z")
    assert dump_name("abc-123", T) == "memory-abc-123-20261125T174001.123456Z.json"


def test_publish_never_overwrites_and_moves_to_the_next_microsecond(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"))
    names = [store.publish("s", T, f"{i}".encode()) for i in range(3)]
    assert names == ["memory-s-20261125T174001.123456Z.json",
                     "memory-s-20261125T174001.123457Z.json",
                     "memory-s-20261125T174001.123458Z.json"]
    assert [(tmp_path / "d" / n).read_text() for n in names] == ["0", "1", "2"]
    assert not [n for n in os.listdir(tmp_path / "d") if n.startswith(".tmp")]


def test_a_planted_symlink_at_the_name_is_not_followed(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"))
    store.open()
    target = tmp_path / "victim"
    target.write_text("keep me")
    (tmp_path / "d" / dump_name("s", T)).symlink_to(target)
    name = store.publish("s", T, b"dump")
    assert name == dump_name("s", T + 1000)
    assert target.read_text() == "keep me"


def test_replace_is_atomic_and_private(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"))
    name = store.publish("s", T, b"phase one")
    store.replace(name, b"phase two")
    path = tmp_path / "d" / name
    assert path.read_bytes() == b"phase two"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700


def test_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StoreError, match="symlink"):
        DiagnosticsDir(str(tmp_path / "link")).open()


def test_symlinks_in_ancestors_are_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    store = DiagnosticsDir(str(tmp_path / "alias" / "diag"))
    store.publish("s", T, b"x")
    assert len(list((tmp_path / "real" / "diag").iterdir())) == 1


def test_refuses_a_world_writable_directory(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(StoreError, match="writable by others"):
        DiagnosticsDir(str(d)).open()


def test_retention_prunes_oldest_sets_but_never_the_new_file(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=3)
    names = []
    for i in range(5):
        name = store.publish("s", T + i * 10**9, b"{}")
        store.write_new(name.replace(".json", ".ring"), b"ring")
        os.utime(tmp_path / "d" / name, (1000 + i, 1000 + i))
        names.append(name)
    removed = store.prune(keep=names[0])  # pretend the oldest is the one just written
    left = sorted(n for n in os.listdir(tmp_path / "d") if n.endswith(".json"))
    assert left == sorted([names[0], names[3], names[4]])
    assert sorted(removed) == sorted([names[1], names[1].replace(".json", ".ring"),
                                      names[2], names[2].replace(".json", ".ring")])
    assert not (tmp_path / "d" / names[1].replace(".json", ".ring")).exists()


def test_retention_by_bytes(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=100, max_bytes=2500)
    for i in range(4):
        name = store.publish("s", T + i * 10**9, b"x" * 1000)
        os.utime(tmp_path / "d" / name, (1000 + i, 1000 + i))
    store.prune()
    assert len([n for n in os.listdir(tmp_path / "d") if n.endswith(".json")]) == 2


def test_a_planted_symlink_at_the_lock_file_is_refused(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=1)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    for i in range(2):
        store.publish("s", T + i * 10**9, b"{}")
    (tmp_path / "d" / ".watchdog-core.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="not a plain file"):
        store.prune()
    assert victim.read_text() == "keep"


SIBLINGS = (".ring", ".stacks.txt")


def _dump_set(store: DiagnosticsDir, session: str, second: int,
              siblings: tuple[str, ...] = SIBLINGS) -> list[str]:
    """A dump at T + ``second`` s with its siblings, as the writer leaves it; its names."""
    name = store.publish(session, T + second * 10**9, b"{}")
    stem = name[: -len(".json")]
    for suffix in siblings:
        store.write_new(stem + suffix, suffix.encode())
    return sorted([name] + [stem + suffix for suffix in siblings])


def _listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_dump_set_of_parses_the_stem_and_its_timestamp() -> None:
    stamp = "20261125T174001.123456Z"
    assert dump_set_of(f"memory-s-{stamp}.json") == (f"memory-s-{stamp}", stamp)
    assert dump_set_of(f"memory-s-{stamp}.stacks.txt") == (f"memory-s-{stamp}", stamp)
    odd = f"memory-x-{stamp}.json-20261126T000000.000000Z"  # a session id holding both
    assert dump_set_of(f"{odd}.ring") == (odd, "20261126T000000.000000Z")
    for name in (".watchdog-core.lock", f".crash-{stamp}", ".tmp-1-1-beef",
                 f"memory-{stamp}.json", f"memory-s-{stamp}", f"memory-s_{stamp}.json",
                 f"memory-a b-{stamp}.json", "memory-s-20261125T174001.123456.json",
                 "memory-s-\u0662\u0660261125T174001.123456Z.json", "memory-s.json"):
        assert dump_set_of(name) is None, name


def test_retention_keeps_the_stacks_of_the_dump_just_written(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=2)
    oldest = _dump_set(store, "s", 0, ())
    middle = _dump_set(store, "s", 1, ())
    newest = _dump_set(store, "s", 2, (".stacks.txt",))
    assert store.prune(keep=newest[0]) == oldest
    assert _listing(tmp_path / "d") == sorted([".watchdog-core.lock", *middle, *newest])


def test_retention_removes_a_set_with_all_its_siblings(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=1)
    old = _dump_set(store, "s", 0)
    new = _dump_set(store, "s", 1)
    assert len(old) == len(new) == 3
    assert store.prune(keep=new[0]) == old
    assert _listing(tmp_path / "d") == sorted([".watchdog-core.lock", *new])


@pytest.mark.parametrize(("session", "neighbour"), [
    ("a.json", "a"),
    ("x-20261125T174001.123456Z", "x"),  # a session id that looks like a timestamp
    ("a.b", "a"),
])
def test_retention_does_not_merge_sets_of_odd_session_ids(
        tmp_path: Path, session: str, neighbour: str) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=3)
    sets = [_dump_set(store, s, i)
            for i, s in enumerate([neighbour, session, neighbour, session, session])]
    assert len({dump_set_of(n) for names in sets for n in names}) == 5
    assert store.prune(keep=sets[-1][0]) == sets[0] + sets[1]
    assert _listing(tmp_path / "d") == sorted(
        [".watchdog-core.lock", *sets[2], *sets[3], *sets[4]])


def test_retention_orders_by_the_timestamp_in_the_name_not_mtime(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=2)
    # By name, "a" < "m" < "z"; by mtime the reverse of their dump times.
    sets = [_dump_set(store, s, i) for i, s in enumerate(["z", "m", "a"])]
    for i, names in enumerate(sets):
        for name in names:
            os.utime(tmp_path / "d" / name, (2000 - i, 2000 - i))
    before = _listing(tmp_path / "d")
    assert store.prune(dry_run=True) == sets[0]
    assert _listing(tmp_path / "d") == [".watchdog-core.lock", *before]  # a dry run
    assert store.prune() == sets[0]
    assert store.list_dumps() == [sets[1][0], sets[2][0]]


def test_retention_never_removes_files_that_are_not_dump_sets(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=1)
    stamp = dump_timestamp(T)[0]
    foreign = [".crash-123-456", ".tmp-1-1-beef", "notes.txt", "memory-notes.json",
               f"memory-{stamp}.json", f"memory-s-{stamp}", f"memory-s_{stamp}.json",
               f"memory-a b-{stamp}.json", "memory-s-20261125T174001.json"]
    store.open()
    for name in foreign:
        (tmp_path / "d" / name).write_text("not a dump")
    sets = [_dump_set(store, "s", i) for i in range(3)]
    assert store.prune(keep=sets[2][0]) == sets[0] + sets[1]
    assert _listing(tmp_path / "d") == sorted([".watchdog-core.lock", *foreign, *sets[2]])
    # The quick look counts the same sets: nothing over the limit, so no lock is taken.
    (tmp_path / "d" / ".watchdog-core.lock").unlink()
    assert store.prune() == []
    assert store.last_lock_wait is None
    assert not (tmp_path / "d" / ".watchdog-core.lock").exists()


def test_a_set_without_its_json_is_pruned_in_its_turn(tmp_path: Path) -> None:
    store = DiagnosticsDir(str(tmp_path / "d"), max_files=3)
    sets = [_dump_set(store, "s", i, (".ring",)) for i in range(4)]
    (tmp_path / "d" / sets[1][0]).unlink()  # only its .ring is left
    assert store.prune(keep=sets[3][0]) == sets[0]  # four sets: the oldest goes first
    store.max_files = 2
    assert store.prune(keep=sets[3][0]) == sets[1][1:]
    assert _listing(tmp_path / "d") == sorted([".watchdog-core.lock", *sets[2], *sets[3]])
