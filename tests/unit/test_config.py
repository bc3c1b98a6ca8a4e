"""start_watchdog() arguments and environment (docs/design.md)."""

from __future__ import annotations

import pytest

from watchdog_core._config import SessionConfig, parse_size, validate_session_id


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
    assert len(c.session_id) == 12 and (c.soft, c.hard, c.critical) == (0.5, 0.65, 0.8)
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
