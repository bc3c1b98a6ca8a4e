"""This process's RSS, read cheaply between two pieces of work (a test, a task): the
integrations record it beside their marks."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class RssReader:
    """This process's resident set size in bytes: one ``pread`` of /proc/self/statm
    (a few microseconds), psutil where there is no /proc."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._fd = os.open(f"/proc/{os.getpid()}/statm", os.O_RDONLY)
        except OSError:
            self._fd = -1
        self._psutil: Callable[[], int] | None = None

    def __call__(self) -> int:
        if self._fd >= 0:
            try:
                return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
            except (OSError, ValueError, IndexError):
                pass
        if self._psutil is None:
            try:
                import psutil

                process = psutil.Process()
                self._psutil = lambda: int(process.memory_info().rss)
            except Exception:
                self._psutil = lambda: 0
        return self._psutil()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
