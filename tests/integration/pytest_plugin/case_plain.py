"""Run by tests/integration/test_pytest_plugin.py, never by the repo's own suite: pytest
without --watchdog, where the plugin is loaded and must do nothing at all."""

import sys

import pytest


def test_nothing_of_the_session_is_loaded(request: pytest.FixtureRequest) -> None:
    plugins = request.config.pluginmanager
    assert plugins.has_plugin("watchdog")  # the entry point was loaded...
    assert plugins.get_plugin("watchdog-core") is None  # ...and registered nothing
    loaded = sorted(name for name in sys.modules if name.startswith("watchdog_core"))
    assert loaded == ["watchdog_core", "watchdog_core.pytest_plugin"], loaded
