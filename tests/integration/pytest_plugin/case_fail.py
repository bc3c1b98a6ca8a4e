"""Run by tests/integration/test_pytest_plugin.py, never by the repo's own suite: a run
that fails, so pytest exits 1."""


def test_passes() -> None:
    pass


def test_fails() -> None:
    raise AssertionError("failed on purpose")
