"""Run by tests/integration/test_pytest_plugin.py, never by the repo's own suite: a run
that passes, with one test that keeps 48 MiB and one that keeps 16 MiB."""

import pytest

KEPT: list[bytearray] = []


@pytest.mark.parametrize("n", range(6))
def test_small(n: int) -> None:
    assert n >= 0


def test_keeps_48_mib() -> None:
    KEPT.append(bytearray(b"\x5a") * (48 << 20))


def test_keeps_16_mib() -> None:
    KEPT.append(bytearray(b"\x5a") * (16 << 20))
