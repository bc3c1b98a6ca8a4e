"""Run by tests/integration/test_pytest_plugin.py, never by the repo's own suite:
test_segfault reads address 0 and its process dies of SIGSEGV."""

import ctypes


def test_before() -> None:
    pass


def test_segfault() -> None:
    ctypes.string_at(0)


def test_after() -> None:
    pass
