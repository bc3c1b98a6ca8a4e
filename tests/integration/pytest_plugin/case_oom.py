"""Run by tests/integration/test_pytest_plugin.py in a 200 MiB memory cgroup, never by
the repo's own suite: test_balloon grows until the kernel OOM-kills its process."""

import pytest


def test_first() -> None:
    pass


@pytest.mark.parametrize("prompt", ["SECRET-PROMPT-123"])
def test_second(prompt: str) -> None:
    assert prompt


def test_balloon() -> None:
    hold = []
    while True:  # 4 MiB at a time, every page written, until the kernel steps in
        hold.append(bytearray(b"\xa5") * (4 << 20))


def test_after() -> None:
    pass
