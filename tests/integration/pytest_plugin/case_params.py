"""Run by tests/integration/test_pytest_plugin.py, never by the repo's own suite: every
way pytest names a parametrized test, each value a 'SECRET-...' that must reach no file;
the last test kills its own process, so the postmortem's ring holds every label."""

import os
import signal

import pytest


@pytest.fixture(params=["SECRET-FIXTURE-1", "SECRET-FIXTURE-2"])
def derived(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["SECRET-FIXTURE-3", "SECRET-FIXTURE-4"], ids=["three", "four"])
def written(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("prompt", ["SECRET-PROMPT-123", "SECRET-PROMPT-456"])
def test_prompt(prompt: str) -> None:
    assert prompt


@pytest.mark.parametrize("x", [1, 2], ids=["first", "second"])
@pytest.mark.parametrize("y", ["SECRET-Y", pytest.param("SECRET-NAMED", id="named")])
def test_stacked(x: int, y: str) -> None:
    assert y


@pytest.mark.parametrize(("a", "b"), [("SECRET-A", 1)])
def test_fixtures(a: str, b: int, derived: str, written: str) -> None:
    assert a


@pytest.mark.parametrize("v", ["SECRET-IDFN"], ids=str)
def test_ids_function(v: str) -> None:
    assert v


@pytest.mark.parametrize("written", ["SECRET-INDIRECT"], indirect=True)
def test_indirect(written: str) -> None:
    assert written


class TestInClass:
    @pytest.mark.parametrize("token", ["SECRET-TOKEN"])
    def test_method(self, token: str) -> None:
        assert token


def test_dies() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
