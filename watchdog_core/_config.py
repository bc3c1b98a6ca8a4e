"""Validated settings of one watchdog session (README, docs/design.md).

Everything here runs once in ``start_watchdog()``, in the host, so it imports
stdlib modules only and avoids ``dataclasses``/``typing`` (docs/performance.md: a cheap import).
Explicit bad arguments raise ``ValueError`` naming the argument; bad environment
values warn once and keep the defaults, because the environment is not the
caller's code.
"""

from __future__ import annotations

import _signal  # not `signal`: that imports enum, 8 ms in a fresh host (docs/performance.md)
import os
import sys
import warnings

from ._ring import EXTRAS, RingConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# `re` and `enum` are not imported here: each costs 8-13 ms in a fresh venv (docs/performance.md).
_SESSION_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_SIZE_UNITS = {
    "": 1, "B": 1,
    "K": 1024, "KI": 1024, "KIB": 1024, "KB": 1000,
    "M": 1024**2, "MI": 1024**2, "MIB": 1024**2, "MB": 1000**2,
    "G": 1024**3, "GI": 1024**3, "GIB": 1024**3, "GB": 1000**3,
    "T": 1024**4, "TI": 1024**4, "TIB": 1024**4, "TB": 1000**4,
}

THRESHOLD_RANGE = (0.30, 0.98)
DEFAULT_STACK_SIGNAL = int(_signal.SIGUSR2)
# The signals a host can lend us for its stacks: the two user signals and the real-time
# ones (Python's SIGRTMIN already skips those glibc keeps for itself). Every other signal
# means something to the host or its tools: faulthandler on SIGTERM would turn a
# `kill` into a stack dump, on SIGHUP or SIGQUIT a terminal's hangup or Ctrl-\.
_STACK_SIGNALS = frozenset(
    [int(_signal.SIGUSR1), int(_signal.SIGUSR2)]
    + (list(range(int(_signal.SIGRTMIN), int(_signal.SIGRTMAX) + 1))
       if hasattr(_signal, "SIGRTMIN") else [])
)
_INF = float("inf")
_MAX_INT64 = (1 << 63) - 1  # what the ring's config block holds
MAX_STATS = 32
LEVEL_NAMES = ("normal", "soft", "hard", "critical")
# Below this a limit is a typo ("1" for "1GiB"): the interpreter alone is ~10 MiB, so
# every sample would be critical and the dump budget spent at once.
MIN_MEMORY_LIMIT = 16 * 1024 * 1024
SESSION_ID_MAX = 64
_SUFFIX_LEN = 7  # "-" and six hex characters


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``12th``, ``13th``, ``21st``, ``101st``."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def program_stem() -> str:
    """The running program's name as its user knows it, or ``""`` when there is none.

    ``python -m pkg.tool`` gives ``tool`` (``python -m pkg`` gives ``pkg``); ``python
    agent.py`` and a console script ``agent`` give ``agent``; ``python -c``, stdin and
    the REPL give ``""``. A ``__main__.py`` run as a folder or zip app is named after
    the folder.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if isinstance(name, str):
        parts = [part for part in name.split(".") if part and part != "__main__"]
        if parts:
            return parts[-1]
    path = getattr(main, "__file__", None)
    if not isinstance(path, str):
        argv = getattr(sys, "argv", None)  # absent in some embedding interpreters
        path = argv[0] if argv and isinstance(argv[0], str) else ""
    if path in ("", "-", "-c") or path.startswith("<"):  # -c, the REPL; "<stdin>"
        return ""
    folder, base = os.path.split(os.path.normpath(path))
    stem = os.path.splitext(base)[0]
    if stem == "__main__":
        stem = os.path.splitext(os.path.basename(folder))[0]
    return stem


def readable_session_id(stem: str) -> str:
    """``{stem}-{6 hex}``, the stem cut to the session-id alphabet: each run of other
    characters becomes one ``-``, leading ``.``/``-`` and trailing ``-``/``.`` go, and it
    is capped so the id is at most 64 characters; ``python`` when nothing is left."""
    cleaned = session_id_chars(stem).lstrip(".-")[: SESSION_ID_MAX - _SUFFIX_LEN].rstrip(".-")
    return f"{cleaned or 'python'}-{os.urandom(3).hex()}"


def session_id_chars(text: str) -> str:
    """``text`` in the session-id alphabet: each run of other characters becomes one
    ``-``. Neither trimmed nor cut: that is the caller's to decide."""
    out: list[str] = []
    for ch in text:
        if ch in _SESSION_ID_CHARS:
            out.append(ch)
        elif not out or out[-1] != "-":
            out.append("-")
    return "".join(out)


def validate_session_id(value: object, what: str = "session_id") -> str:
    """Return ``value`` if it is a safe session id, else raise ``ValueError``.

    Session ids become part of file and shared-memory names, so the alphabet is
    closed: no separators, no traversal, no NUL, no leading dot.
    """
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not _SESSION_ID_CHARS.issuperset(value)
        or value.startswith((".", "-"))  # a hidden file; an option to every tool
    ):
        raise ValueError(
            f"{what} must match [A-Za-z0-9._-]{{1,64}} and not start with '.' or '-', "
            f"got {value!r}"
        )
    return value


def parse_size(value: object, what: str = "memory_limit") -> int:
    """Bytes from an int or a string such as ``"2GiB"``, ``"512MB"``, ``"1.5G"``.

    ``KiB/MiB/GiB`` and the bare ``K/M/G`` are powers of 1024 (as Docker and
    Kubernetes read them); ``KB/MB/GB`` are powers of 1000.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of bytes or a size string, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and (parsed := _parse_size_string(value)) is not None:
        size = parsed
    else:
        raise ValueError(f"{what} must be a number of bytes or a size string, got {value!r}")
    if not 0 < size <= _MAX_INT64:
        raise ValueError(f"{what} must be positive and below 8 EiB, got {value!r}")
    return size


def _parse_size_string(text: str) -> int | None:
    text = text.strip().upper()
    digits = text.rstrip("KMGTIB ")
    unit = text[len(digits) :].strip()
    number = digits.replace(".", "", 1)
    if unit not in _SIZE_UNITS or not number.isascii() or not number.isdigit():
        return None
    return int(float(digits) * _SIZE_UNITS[unit])


def _positive(value: object, what: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < _INF:
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def _env_thresholds(
    env: Mapping[str, str], soft: float, hard: float, critical: float
) -> tuple[float, float, float]:
    """Apply WATCHDOG_CORE_SOFT/HARD/CRITICAL; an invalid value warns once, defaults kept."""
    values = {"soft": soft, "hard": hard, "critical": critical}
    changed = dict(values)
    for name in values:
        raw = env.get(f"WATCHDOG_CORE_{name.upper()}")
        if raw is None:
            continue
        try:
            changed[name] = float(raw)
        except ValueError:
            warnings.warn(
                f"watchdog-core: ignoring WATCHDOG_CORE_{name.upper()}={raw!r}: not a number",
                RuntimeWarning,
                stacklevel=4,
            )
            return soft, hard, critical
    try:
        return check_thresholds(changed["soft"], changed["hard"], changed["critical"])
    except ValueError as exc:
        warnings.warn(
            f"watchdog-core: ignoring WATCHDOG_CORE_* thresholds: {exc}",
            RuntimeWarning,
            stacklevel=4,
        )
        return soft, hard, critical


def check_thresholds(soft: object, hard: object, critical: object) -> tuple[float, float, float]:
    lo, hi = THRESHOLD_RANGE
    out = []
    for name, value in (("soft", soft), ("hard", hard), ("critical", critical)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ValueError(f"{name} must be a fraction within [{lo}, {hi}], got {value!r}")
        out.append(float(value))
    if not out[0] < out[1] < out[2]:
        raise ValueError(f"thresholds must be ordered soft < hard < critical, got {out}")
    return out[0], out[1], out[2]


def default_diagnostics_dir(env: Mapping[str, str]) -> str:
    """``$WATCHDOG_CORE_DIR``, else the default state folder (``state_diagnostics_dir``)."""
    if env.get("WATCHDOG_CORE_DIR"):
        return env["WATCHDOG_CORE_DIR"]
    return state_diagnostics_dir(env)


def state_diagnostics_dir(env: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/watchdog-core/diagnostics`` (default ``~/.local/state/...``):
    the default, and the last folder tried when the one asked for is refused."""
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "watchdog-core", "diagnostics")


def _normalised(name: str, value: object) -> object:
    """An argument as ``SessionConfig`` would read it, for comparing two calls."""
    try:
        if name == "diagnostics_dir" and isinstance(value, (str, os.PathLike)):
            return os.path.abspath(os.fspath(value))
        if name in ("memory_limit", "max_bytes") and value is not None:
            return parse_size(value, name)
        if name == "suggestion":
            return _check_suggestion(value)
        if name == "extras":
            return check_extras(value)
        if name == "tracemalloc_frames":
            return check_tracemalloc_frames(value)
    except (TypeError, ValueError):
        pass
    return value


def differing_arguments(first: Mapping[str, object], again: Mapping[str, object],
                        defaults: Mapping[str, object]) -> list[str]:
    """The names of ``again``'s arguments that ask for something ``first`` did not.

    An argument left at its default in ``again`` asks for nothing; one equal to the
    first call's (``"2GiB"`` and ``2147483648`` are equal, so are two spellings of a
    path) is no difference either.
    """
    out = []
    for name, value in again.items():
        default = defaults.get(name)
        if value is default or _normalised(name, value) == _normalised(name, default):
            continue
        if _normalised(name, value) != _normalised(name, first.get(name, default)):
            out.append(name)
    return out


class SessionConfig:
    """Everything ``start_watchdog()`` was asked for, checked once."""

    __slots__ = (
        "arguments",
        "catch_sigterm",
        "critical",
        "diagnostics_dir",
        "dump_cooldown",
        "extras",
        "hang_after",
        "hard",
        "idle_after",
        "include_children",
        "interval",
        "large_history_share",
        "max_bytes",
        "max_dumps_per_session",
        "max_files",
        "memory_limit",
        "on_pressure",
        "prometheus_expire_after",
        "prometheus_textfile_dir",
        "restart",
        "ring_slots",
        "sentry",
        "sentry_dsn",
        "sentry_pressure",
        "sentry_reports",
        "session_id",
        "soft",
        "stack_signal",
        "suggestion",
        "tracemalloc_frames",
    )

    def __init__(
        self,
        *,
        session_id: str | None = None,
        diagnostics_dir: str | os.PathLike[str] | None = None,
        interval: float = 0.25,
        memory_limit: int | str | None = None,
        soft: float = 0.50,
        hard: float = 0.65,
        critical: float = 0.80,
        ring_slots: int = 4096,
        max_dumps_per_session: int = 3,
        dump_cooldown: float = 30.0,
        suggestion: str | Mapping[str, str] | None = None,
        on_pressure: Callable[[object], object] | None = None,
        hang_after: float | None = None,
        idle_after: float | None = None,
        include_children: bool = False,
        catch_sigterm: bool = False,
        restart: bool = True,
        stack_signal: int | None = None,
        large_history_share: float = 0.25,
        max_files: int | None = None,
        max_bytes: int | str | None = None,
        extras: tuple[str, ...] | list[str] = (),
        tracemalloc_frames: int | None = None,
        prometheus_textfile_dir: str | os.PathLike[str] | None = None,
        sentry_dsn: str | None = None,
        sentry_reports: bool = False,
        sentry_pressure: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        # start_watchdog()'s arguments as given, to tell a repeat call that asks for more.
        self.arguments: dict[str, object] = {}
        self.session_id = (
            readable_session_id(program_stem()) if session_id is None
            else validate_session_id(session_id)
        )
        if diagnostics_dir is None:
            diagnostics_dir = default_diagnostics_dir(env)
        try:
            path = os.fspath(diagnostics_dir)
        except TypeError:
            raise ValueError(
                f"diagnostics_dir must be a path, got {diagnostics_dir!r}"
            ) from None
        if not isinstance(path, str) or not path or "\0" in path:
            raise ValueError(f"diagnostics_dir must be a non-empty path, got {diagnostics_dir!r}")
        self.diagnostics_dir = os.path.abspath(path)
        if len(os.fsencode(self.diagnostics_dir)) > 4095:
            raise ValueError("diagnostics_dir is longer than 4095 bytes")
        _positive(interval, "interval")
        self.interval = float(interval)
        if not 0.01 <= self.interval <= 60:
            raise ValueError(f"interval must be within [0.01, 60] seconds, got {interval!r}")
        self.memory_limit = None if memory_limit is None else parse_size(memory_limit)
        if self.memory_limit is not None and self.memory_limit < MIN_MEMORY_LIMIT:
            raise ValueError(f"memory_limit must be at least 16 MiB ({MIN_MEMORY_LIMIT} "
                             f"bytes), got {memory_limit!r}")
        soft, hard, critical = check_thresholds(soft, hard, critical)
        self.soft, self.hard, self.critical = _env_thresholds(env, soft, hard, critical)
        if isinstance(ring_slots, bool) or not isinstance(ring_slots, int):
            raise ValueError(f"ring_slots must be an int, got {ring_slots!r}")
        if not 16 <= ring_slots <= 1 << 20:
            raise ValueError(f"ring_slots must be within [16, 1048576], got {ring_slots!r}")
        self.ring_slots = ring_slots
        if (
            isinstance(max_dumps_per_session, bool)
            or not isinstance(max_dumps_per_session, int)
            or not 0 <= max_dumps_per_session <= MAX_DUMPS_LIMIT
        ):
            raise ValueError(
                f"max_dumps_per_session must be an int within [0, {MAX_DUMPS_LIMIT}], got "
                f"{max_dumps_per_session!r}"
            )
        self.max_dumps_per_session = max_dumps_per_session
        if isinstance(dump_cooldown, bool) or not isinstance(dump_cooldown, (int, float)) or (
            not 0 <= dump_cooldown < _INF
        ):
            raise ValueError(f"dump_cooldown must be finite seconds >= 0, got {dump_cooldown!r}")
        self.dump_cooldown = float(dump_cooldown)
        self.suggestion = _check_suggestion(suggestion)
        if on_pressure is not None and not callable(on_pressure):
            raise ValueError(f"on_pressure must be callable, got {on_pressure!r}")
        self.on_pressure = on_pressure
        self.hang_after = _positive(hang_after, "hang_after", allow_none=True)
        self.idle_after = _positive(idle_after, "idle_after", allow_none=True)
        for name, flag in (("include_children", include_children),
                           ("catch_sigterm", catch_sigterm), ("restart", restart)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        self.include_children = include_children
        self.catch_sigterm = catch_sigterm
        self.restart = restart
        if stack_signal is None:
            stack_signal = DEFAULT_STACK_SIGNAL
        if isinstance(stack_signal, bool) or not isinstance(stack_signal, int) or not (
            stack_signal == 0 or stack_signal in _STACK_SIGNALS
        ):
            raise ValueError(f"stack_signal must be 0 (none), SIGUSR1, SIGUSR2 or a real-time "
                             f"signal, got {stack_signal!r}")
        self.stack_signal = int(stack_signal)
        if isinstance(large_history_share, bool) or not isinstance(
            large_history_share, (int, float)
        ) or not 0 < large_history_share <= 1:
            raise ValueError(f"large_history_share must be a fraction in (0, 1], got "
                             f"{large_history_share!r}")
        self.large_history_share = float(large_history_share)
        self.max_files, self.max_bytes = _retention(env, max_files, max_bytes)
        self.extras = check_extras(extras)
        self.tracemalloc_frames = check_tracemalloc_frames(tracemalloc_frames)
        self.prometheus_textfile_dir, self.prometheus_expire_after = prometheus_settings(
            env, prometheus_textfile_dir)
        if sentry_dsn is not None:
            from ._sentry_host import check_dsn

            sentry_dsn = check_dsn(sentry_dsn)
        self.sentry_dsn = sentry_dsn
        for name, flag in (("sentry_reports", sentry_reports),
                           ("sentry_pressure", sentry_pressure)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        # WATCHDOG_CORE_SENTRY=1 turns reports on from outside, as SENTRY_DSN says where.
        self.sentry_reports = sentry_reports or env.get("WATCHDOG_CORE_SENTRY", "") not in (
            "", "0")
        self.sentry_pressure = sentry_pressure
        # What the watchdog is told (_sentry_host.settings), settled at start: None for
        # no reports.
        self.sentry: dict[str, object] | None = None

    def ring_config(self, *, include_children: bool | None = None) -> RingConfig:
        """These settings as the ring header keeps them for the watchdog (``run``
        watches a whole tree: ``include_children=True``)."""
        return RingConfig(self.soft, self.hard, self.critical, self.memory_limit,
                          self.dump_cooldown, self.max_dumps_per_session, self.hang_after,
                          self.idle_after,
                          self.include_children if include_children is None
                          else include_children,
                          self.large_history_share, self.stack_signal, self.max_files,
                          self.max_bytes, self.extras)


def check_extras(value: object) -> tuple[str, ...]:
    """``extras`` as the names it asks for, in EXTRAS order, each once: a tuple or list of
    names from EXTRAS (a bare string is refused: ``"stacks"`` is not a list of names)."""
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"extras must be a tuple or list of {EXTRAS}, got {value!r}")
    unknown = [name for name in value if name not in EXTRAS]
    if unknown:
        raise ValueError(f"extras must name only {EXTRAS}, got {unknown[0]!r}")
    return tuple(name for name in EXTRAS if name in value)


def check_tracemalloc_frames(value: object) -> int:
    """Frames per traceback for tracemalloc to start with, 0 for not starting it."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"tracemalloc_frames must be None or an int within [0, 100], "
                         f"got {value!r}")
    return value


MAX_DUMPS_LIMIT = 1_000_000  # far beyond any retention; the ring keeps it in an int64
DEFAULT_MAX_FILES = 100
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def _retention(env: Mapping[str, str], max_files: object, max_bytes: object) -> tuple[int, int]:
    """Retention limits: the argument, else WATCHDOG_CORE_MAX_FILES/_MAX_BYTES, else the
    defaults (100 dump sets, 256 MiB). A bad environment value warns and is ignored."""
    if max_files is None:
        raw = env.get("WATCHDOG_CORE_MAX_FILES")
        max_files = DEFAULT_MAX_FILES
        if raw is not None:
            if raw.strip().isdigit() and 1 <= int(raw) <= _MAX_INT64:
                max_files = int(raw)
            else:
                warnings.warn(f"watchdog-core: ignoring WATCHDOG_CORE_MAX_FILES={raw!r}: not a "
                              "whole number >= 1", RuntimeWarning, stacklevel=4)
    elif (isinstance(max_files, bool) or not isinstance(max_files, int)
          or not 1 <= max_files <= _MAX_INT64):
        raise ValueError(f"max_files must be an int >= 1, got {max_files!r}")
    if max_bytes is None:
        raw = env.get("WATCHDOG_CORE_MAX_BYTES")
        max_bytes = DEFAULT_MAX_BYTES
        if raw is not None:
            try:
                max_bytes = parse_size(raw, "WATCHDOG_CORE_MAX_BYTES")
            except ValueError as exc:
                warnings.warn(f"watchdog-core: ignoring {exc}", RuntimeWarning, stacklevel=4)
    else:
        max_bytes = parse_size(max_bytes, "max_bytes")
    return int(max_files), int(max_bytes)


def _check_suggestion(value: object) -> dict[str, str]:
    """Normalise ``suggestion`` to {level: sentence}; a plain string applies to every level."""
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip() or "\0" in value:
            raise ValueError("suggestion must be a non-empty sentence without NUL")
        return dict.fromkeys(LEVEL_NAMES, value)
    if isinstance(value, dict):
        out = {}
        for level, text in value.items():
            if (level not in LEVEL_NAMES or not isinstance(text, str) or not text.strip()
                    or "\0" in text):
                raise ValueError(
                    f"suggestion must map levels {LEVEL_NAMES} to non-empty sentences,"
                    f" got {level!r}: {text!r}"
                )
            out[level] = text
        return out
    raise ValueError(f"suggestion must be a string or a dict of level -> string, got {value!r}")


DEFAULT_PROMETHEUS_EXPIRE = 3600.0  # _textfile.DEFAULT_EXPIRE_AFTER: not loaded by hosts


def prometheus_settings(env: Mapping[str, str], textfile_dir: object,
                        what: str = "prometheus_textfile_dir") -> tuple[str, float]:
    """The folder for the session's metrics file (the argument, else
    $WATCHDOG_CORE_PROMETHEUS_DIR, else "": none) as an absolute path, and the seconds
    after which old files there expire ($WATCHDOG_CORE_PROMETHEUS_EXPIRE, default an
    hour; a bad value warns and is ignored). Whether the folder can be used is the
    watchdog's to find out: it says so on stderr, and the host never fails for it."""
    from_env = textfile_dir is None
    if from_env:
        textfile_dir = env.get("WATCHDOG_CORE_PROMETHEUS_DIR") or None
        what = "WATCHDOG_CORE_PROMETHEUS_DIR"
    path = ""
    try:
        if textfile_dir is not None:
            path = _textfile_path(textfile_dir, what)
    except ValueError as exc:
        if not from_env:
            raise  # a bad argument is a bug to hear about
        # The environment is not the host's code: warn, and write no file.
        warnings.warn(f"watchdog-core: ignoring {exc}", RuntimeWarning, stacklevel=4)
    expire = DEFAULT_PROMETHEUS_EXPIRE
    raw = env.get("WATCHDOG_CORE_PROMETHEUS_EXPIRE")
    if raw is not None:
        try:
            expire = check_expire(raw, "WATCHDOG_CORE_PROMETHEUS_EXPIRE")
        except ValueError as exc:
            warnings.warn(f"watchdog-core: ignoring {exc}", RuntimeWarning, stacklevel=4)
    return path, expire


def _textfile_path(value: object, what: str) -> str:
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{what} must be a path, got {value!r}") from None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty str path, got {value!r}")
    if "\0" in path:
        raise ValueError(f"{what} must not contain a NUL byte")
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > 4095:
        raise ValueError(f"{what} is longer than 4095 bytes")
    return path


def check_expire(raw: object, what: str) -> float:
    """Seconds, finite and at least 1, from a number or its text."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = _INF
    if isinstance(raw, bool) or not 1 <= value < _INF:
        raise ValueError(f"{what}={raw!r}: not a number of seconds >= 1")
    return value
