"""wd.status_line(): one line for a status bar, from the watchdog's status block."""

from __future__ import annotations

import math

import pytest

from watchdog_core._reader import Status
from watchdog_core._ring import LIMIT_SOURCES, STATUS
from watchdog_core._statusline import render

GIB, MIB = 1 << 30, 1 << 20


def status(level: int, ratio: float, rss: int, limit: int, growth: float,
           to_limit: float) -> Status:
    # The block exactly as the watchdog packs it into the ring header.
    return Status(STATUS.pack(level, ratio, rss, rss, limit, growth, to_limit,
                              LIMIT_SOURCES.index("cgroup-v2"), 0, 1))


def test_the_line_the_docs_show() -> None:
    s = status(2, 0.65, int(1.3 * GIB), 2 * GIB, 40 * MIB / 60, 14 * 60)
    assert render(s) == "mem 1.3 GiB / 2.0 GiB (65%) +40 MiB/min, ~14 min to limit"


def test_normal_is_empty_unless_always() -> None:
    s = status(0, 0.10, 200 * MIB, 2 * GIB, 0.0, math.nan)
    assert render(s) == ""
    assert render(s, always=True) == "mem 200 MiB / 2.0 GiB (10%)"  # flat: no growth, no eta


def test_before_the_first_sample_and_without_a_limit() -> None:
    assert render(None, always=True) == ""
    assert render(status(1, 0.0, 3 * GIB, 0, 0.0, math.nan)) == "mem 3.0 GiB"


@pytest.mark.parametrize(("seconds", "text"), [(40, "40 s"), (600, "10 min"),
                                               (9000, "2.5 h"), (5 * 86400, "5 d")])
def test_durations_read_naturally(seconds: float, text: str) -> None:
    s = status(3, 0.9, GIB, 2 * GIB, 100 * MIB, seconds)
    assert render(s).endswith(f", ~{text} to limit")
