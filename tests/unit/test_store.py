"""Naming, atomic two-phase writes, retention (SPEC 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchdog_core._store import DiagnosticsDir, StoreError, dump_name, dump_timestamp

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
