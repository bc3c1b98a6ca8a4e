"""start_watchdog() arguments and environment (docs/design.md)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from watchdog_core import _writer, start_watchdog
from watchdog_core._config import (
    MIN_MEMORY_LIMIT,
    SessionConfig,
    differing_arguments,
    ordinal,
    parse_size,
    validate_session_id,
)
from watchdog_core._ring import CONFIG, RingConfig


@pytest.mark.parametrize("good", ["abc", "a.b-c_d", "X" * 64, "0"])
def test_valid_session_ids(good: str) -> None:
    assert validate_session_id(good) == good


@pytest.mark.parametrize("bad", ["", ".hidden", "-rf", "a/b", "../x", "a\0b", "x" * 65, "é", 5,
                                 None, "a b"])
def test_invalid_session_ids(bad: object) -> None:
    with pytest.raises(ValueError, match="session_id"):
        validate_session_id(bad)


@pytest.mark.parametrize(("text", "size"), [("2GiB", 2 << 30), ("512MB", 512_000_000),
                                            ("1.5G", int(1.5 * (1 << 30))), ("100", 100),
                                            (4096, 4096), ("64 KiB", 65536), ("1k", 1024)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["x", "-1", "0", 0, -5, "1.2.3", "GB", True, "²", 1.5])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"soft": 0.2}, "soft"), ({"critical": 0.99}, "critical"),
     ({"soft": 0.7, "hard": 0.6}, "ordered"), ({"interval": 0}, "interval"),
     ({"interval": "fast"}, "interval"), ({"ring_slots": 3}, "ring_slots"),
     ({"max_dumps_per_session": -1}, "max_dumps_per_session"),
     ({"dump_cooldown": -1}, "dump_cooldown"), ({"suggestion": ""}, "suggestion"),
     ({"suggestion": {"loud": "x"}}, "suggestion"), ({"on_pressure": 5}, "on_pressure"),
     ({"hang_after": -1}, "hang_after"), ({"memory_limit": "lots"}, "memory_limit"),
     ({"diagnostics_dir": ""}, "diagnostics_dir"), ({"include_children": 1}, "include_children"),
     # Found by review: each of these got past validation and failed (or misbehaved) only
     # after the shared-memory segment existed.
     ({"suggestion": "a\0b"}, "suggestion"), ({"suggestion": {"hard": "a\0"}}, "suggestion"),
     ({"memory_limit": 10**30}, "memory_limit"), ({"max_bytes": 2**63}, "max_bytes"),
     ({"max_files": 2**63}, "max_files"), ({"dump_cooldown": float("nan")}, "dump_cooldown"),
     ({"dump_cooldown": float("inf")}, "dump_cooldown"),
     ({"hang_after": float("inf")}, "hang_after"), ({"idle_after": float("nan")}, "idle_after"),
     ({"stack_signal": 15}, "stack_signal"), ({"stack_signal": 1}, "stack_signal"),
     ({"stack_signal": 32}, "stack_signal"), ({"stack_signal": 9}, "stack_signal")],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SessionConfig(env={}, **kwargs)


def test_defaults_and_directory_resolution(tmp_path) -> None:
    c = SessionConfig(env={"XDG_STATE_HOME": str(tmp_path)})
    assert c.diagnostics_dir == str(tmp_path / "watchdog-core" / "diagnostics")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{6}", c.session_id)
    assert (c.soft, c.hard, c.critical) == (0.5, 0.65, 0.8)
    c = SessionConfig(env={"WATCHDOG_CORE_DIR": str(tmp_path / "x")})
    assert c.diagnostics_dir == str(tmp_path / "x")
    c = SessionConfig(diagnostics_dir="rel", env={})
    assert c.diagnostics_dir.endswith("/rel") and c.diagnostics_dir.startswith("/")


def test_threshold_environment_overrides() -> None:
    c = SessionConfig(env={"WATCHDOG_CORE_HARD": "0.7", "WATCHDOG_CORE_CRITICAL": "0.9"})
    assert (c.soft, c.hard, c.critical) == (0.5, 0.7, 0.9)


@pytest.mark.parametrize("env", [{"WATCHDOG_CORE_HARD": "lots"},
                                 {"WATCHDOG_CORE_SOFT": "0.9"}])
def test_bad_threshold_environment_warns_once_and_keeps_defaults(env: dict) -> None:
    with pytest.warns(RuntimeWarning) as caught:
        c = SessionConfig(env=env)
    assert len(caught) == 1
    assert (c.soft, c.hard, c.critical) == (0.5, 0.65, 0.8)


@pytest.mark.parametrize("limit", [1, 1024, "1KiB", "1", "16000000", MIN_MEMORY_LIMIT - 1,
                                   "15.9MiB", "16MB"])
def test_a_memory_limit_below_16_mib_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="memory_limit must be at least 16 MiB"):
        SessionConfig(env={}, memory_limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [MIN_MEMORY_LIMIT, "16MiB", "16M", "2GiB"])
def test_a_memory_limit_of_16_mib_and_above_is_accepted(limit: object) -> None:
    assert SessionConfig(env={}, memory_limit=limit).memory_limit == parse_size(limit)  # type: ignore[arg-type]


def test_start_watchdog_refuses_a_one_byte_limit_before_starting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        start_watchdog(diagnostics_dir=tmp_path / "d", memory_limit=1)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("n", "text"), [
    (1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
    (13, "13th"), (21, "21st"), (22, "22nd"), (23, "23rd"), (33, "33rd"), (101, "101st"),
    (111, "111th"), (112, "112th"), (0, "0th"),
])
def test_ordinals(n: int, text: str) -> None:
    assert ordinal(n) == text


def test_the_33rd_stat_name_is_called_the_33rd() -> None:
    writer = _writer.RingWriter(None, 16)
    for i in range(32):
        writer.add_name(f"s{i}")
    with pytest.raises(ValueError, match=r"'s32' would be the 33rd$"):
        writer.add_name("s32")


DEFAULTS = start_watchdog.__kwdefaults__ or {}


@pytest.mark.parametrize(("first", "again", "differ"), [
    ({}, {}, []),
    ({"diagnostics_dir": "/a"}, {}, []),  # a repeat call with defaults asks for nothing
    ({"diagnostics_dir": "/a"}, {"diagnostics_dir": Path("/a")}, []),
    ({"diagnostics_dir": "/a"}, {"diagnostics_dir": "/b"}, ["diagnostics_dir"]),
    ({}, {"diagnostics_dir": "/b"}, ["diagnostics_dir"]),
    ({"memory_limit": "2GiB"}, {"memory_limit": 2 << 30}, []),
    ({"memory_limit": "2GiB"}, {"memory_limit": "3GiB", "interval": 1.0},
     ["interval", "memory_limit"]),
    ({"interval": 1.0}, {"interval": 0.25}, []),  # the default, as if left out
    ({"suggestion": "x"}, {"suggestion": dict.fromkeys(("normal", "soft", "hard",
                                                        "critical"), "x")}, []),
    ({"memory_limit": "2GiB"}, {"memory_limit": "lots"}, ["memory_limit"]),
])
def test_differing_arguments(first: dict, again: dict, differ: list) -> None:
    first = {**DEFAULTS, **first}
    again = {**DEFAULTS, **again}
    assert sorted(differing_arguments(first, again, DEFAULTS)) == differ


def test_a_repeat_start_warns_once_naming_what_it_ignored(tmp_path: Path) -> None:
    wd = start_watchdog(diagnostics_dir=tmp_path / "d", memory_limit="1GiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # identical or default-only: no warning
            assert start_watchdog(diagnostics_dir=tmp_path / "d", memory_limit="1GiB") is wd
            assert start_watchdog(diagnostics_dir=str(tmp_path / "d")) is wd
            assert start_watchdog() is wd
        with pytest.warns(RuntimeWarning) as caught:
            assert start_watchdog(diagnostics_dir=tmp_path / "other", memory_limit="1GiB",
                                  interval=1.0) is wd
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "diagnostics_dir, interval" in message and "memory_limit" not in message
        assert wd.diagnostics_dir == str(tmp_path / "d")
    finally:
        wd.stop()


@pytest.mark.parametrize(("extras", "kept"), [
    ((), ()), ([], ()), (("stacks",), ("stacks",)), (["tracemalloc"], ("tracemalloc",)),
    (("tracemalloc", "stacks", "stacks"), ("stacks", "tracemalloc")),
])
def test_extras_are_kept_once_each_in_their_own_order(extras: object, kept: tuple) -> None:
    assert SessionConfig(env={}, extras=extras).extras == kept  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["stacks", "", None, {"stacks"}, ("heap",), ("stacks", 1),
                                 [["stacks"]], ("Stacks",)])
def test_bad_extras_raise_value_error_naming_them(bad: object) -> None:
    with pytest.raises(ValueError, match="extras"):
        SessionConfig(env={}, extras=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("frames", "kept"), [(None, 0), (0, 0), (1, 1), (5, 5), (100, 100)])
def test_tracemalloc_frames(frames: int | None, kept: int) -> None:
    assert SessionConfig(env={}, tracemalloc_frames=frames).tracemalloc_frames == kept


@pytest.mark.parametrize("bad", [-1, 101, 1.0, "5", True, False, 2**64])
def test_bad_tracemalloc_frames_raise_value_error_naming_them(bad: object) -> None:
    with pytest.raises(ValueError, match="tracemalloc_frames"):
        SessionConfig(env={}, tracemalloc_frames=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("extras", [(), ("stacks",), ("tracemalloc",), ("stacks", "tracemalloc")])
@pytest.mark.parametrize("children", [False, True])
def test_the_extras_travel_in_the_config_block_s_options(extras: tuple, children: bool) -> None:
    packed = RingConfig(0.5, 0.65, 0.8, None, 30.0, 3, None, None, children,
                        extras=extras).pack()
    again = RingConfig.unpack(packed)
    assert again.extras == extras and again.include_children is children
    assert len(packed) == CONFIG.size == 96  # no layout change: bits of the options word


@pytest.mark.parametrize(("first", "again", "differ"), [
    ({"extras": ("stacks",)}, {"extras": ["stacks"]}, []),
    ({"extras": ("stacks", "tracemalloc")}, {"extras": ("tracemalloc", "stacks")}, []),
    ({"extras": ("stacks",)}, {"extras": ("tracemalloc",)}, ["extras"]),
    ({"tracemalloc_frames": 5}, {"tracemalloc_frames": 0}, []),  # 0 is the default: none
    ({}, {"tracemalloc_frames": 5}, ["tracemalloc_frames"]),
])
def test_a_repeat_start_compares_extras_as_read(first: dict, again: dict, differ: list) -> None:
    first = {**DEFAULTS, **first}
    again = {**DEFAULTS, **again}
    assert sorted(differing_arguments(first, again, DEFAULTS)) == differ
