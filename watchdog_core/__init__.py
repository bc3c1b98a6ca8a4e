"""watchdog-core: a memory-and-crash black box for long-running Python processes.

>>> from watchdog_core import start_watchdog
>>> wd = start_watchdog(diagnostics_dir="diag")      # doctest: +SKIP
>>> wd.record(historyEntries=6401, estimatedHistoryBytes=157_000_000)  # doctest: +SKIP

The front door is lazy: ``import watchdog_core`` loads nothing but this file, so
it costs almost nothing in the host (docs/performance.md). psutil, pydantic and filelock are
imported only by the watchdog process and the command line. ``%load_ext watchdog_core``
watches an IPython kernel (docs/jupyter.md); IPython is never imported here.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "PressureLevel",
    "RingError",
    "Watchdog",
    "__version__",
    "start_watchdog",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._host import Watchdog, start_watchdog
    from ._levels import PressureLevel
    from ._ring import RingError


def __getattr__(name: str) -> object:
    # Each public name loads its module on first use (no importlib: it is not free).
    if name in ("start_watchdog", "Watchdog"):
        from . import _host as module
    elif name == "PressureLevel":
        from . import _levels as module  # type: ignore[no-redef]
    elif name == "RingError":
        from . import _ring as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'watchdog_core' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext watchdog_core``: watch this IPython kernel (docs/jupyter.md)."""
    from .jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext watchdog_core``: end the kernel's session cleanly."""
    from .jupyter import unload_ipython_extension as unload

    unload(ipython)


def __dir__() -> list[str]:
    return sorted(__all__)
