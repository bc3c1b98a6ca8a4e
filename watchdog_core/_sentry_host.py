"""Where the watchdog's Sentry reports go, found in the host (docs/sentry.md).

The watchdog is another process and cannot read the host's Sentry client: what it
needs (DSN, release, environment, and whether the host reports its own exceptions) is
settled here and handed to it in its environment at spawn, or over the control pipe
later (``Watchdog.report_to_sentry()``); never in argv, where the DSN's key would show
in ``ps`` and slip past argv redaction.

Stdlib only, and ``sentry_sdk`` is never imported here: the host's client is read only
when the host has loaded the SDK itself.
"""

from __future__ import annotations

import json
import sys
import warnings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

ENV = "WATCHDOG_CORE_SENTRY_SETTINGS"  # the settings as JSON, in the watchdog's environment
FRAME = b"\x01sentry "  # a settings message on the control pipe: FRAME + JSON + b"\n"


def check_dsn(value: object, what: str = "sentry_dsn") -> str:
    """``value`` if it reads as a Sentry DSN (``https://KEY@HOST/PROJECT``), else a
    ValueError naming ``what``; the value itself is never quoted (it holds a key)."""
    import urllib.parse

    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    try:
        parts = urllib.parse.urlsplit(value.strip())
        port = parts.port  # a ValueError for a port that is no number
    except ValueError:
        parts, port = None, None
    del port
    if (parts is None or parts.scheme not in ("http", "https") or not parts.username
            or not parts.hostname
            or not parts.path.rstrip("/").rpartition("/")[2].isdigit()):  # the project id
        raise ValueError(f"{what} must be a Sentry DSN such as "
                         "https://PUBLIC_KEY@o0.ingest.sentry.io/PROJECT_ID")
    return value.strip()


def host_client() -> dict[str, object] | None:
    """The host's own Sentry client, if it has one active: its DSN, release and
    environment. None when the host never loaded ``sentry_sdk`` (nothing is imported
    for the question) or has not initialised it."""
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None:
        return None
    try:
        client = sdk.get_client()
        if not client.is_active() or not client.dsn:
            return None
        options = client.options
        return {"dsn": str(client.dsn), "release": options.get("release"),
                "environment": options.get("environment")}
    except Exception:  # another SDK version, a half-initialised client: not ours to fix
        return None


def settings(dsn: str | None, reports: bool, pressure: bool,
             env: Mapping[str, str]) -> dict[str, object] | None:
    """The watchdog's settings, or None for no reports. The DSN is ``dsn`` if given,
    else (with ``reports``) the host's client's, else ``$SENTRY_DSN``; release and
    environment come with the client, else from ``$SENTRY_RELEASE`` and
    ``$SENTRY_ENVIRONMENT``. ``hostSdk`` says the host reports its own exceptions."""
    client = host_client()
    found: dict[str, object] = {}
    if dsn is not None:
        found["dsn"] = dsn
    elif reports and client is not None:
        found.update(client)
    elif reports and env.get("SENTRY_DSN"):
        try:
            found["dsn"] = check_dsn(env["SENTRY_DSN"], "SENTRY_DSN")
        except ValueError as exc:
            warnings.warn(f"watchdog-core: no Sentry reports: {exc}", RuntimeWarning,
                          stacklevel=3)
            return None
    elif reports:
        warnings.warn("watchdog-core: no Sentry reports: no DSN (no sentry_dsn, no active "
                      "Sentry client in this process, SENTRY_DSN not set)", RuntimeWarning,
                      stacklevel=3)
        return None
    else:
        return None
    if "sentry_sdk" not in sys.modules:
        import importlib.util

        if importlib.util.find_spec("sentry_sdk") is None:  # found, never imported
            warnings.warn("watchdog-core: no Sentry reports: sentry-sdk is not installed "
                          "(pip install 'watchdog-core[sentry]')", RuntimeWarning,
                          stacklevel=3)
            return None
    for key, variable in (("release", "SENTRY_RELEASE"), ("environment", "SENTRY_ENVIRONMENT")):
        if not found.get(key):
            found[key] = env.get(variable) or None
    found["hostSdk"] = client is not None
    found["pressure"] = pressure
    return found


def encode(found: dict[str, object]) -> str:
    return json.dumps(found, separators=(",", ":"))


def decode(text: str | bytes) -> dict[str, object] | None:
    """The settings ``encode`` wrote, or None for anything else."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("dsn"), str) else None
