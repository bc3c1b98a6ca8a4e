"""pytest plugin: which test was running when the runner died (docs/pytest.md).

Registered through the ``pytest11`` entry point, so pytest loads this module in every
run where watchdog-core is installed: it must cost nothing and do nothing unless
``pytest --watchdog`` is given. Only stdlib and pytest are imported here; the session
(``_pytest_run``) is imported and registered as a plugin object only with ``--watchdog``.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("watchdog", "watchdog-core: a black box for the test runner")
    group.addoption("--watchdog", action="store_true", default=False,
                    help="watch this run's memory; a postmortem names the test running "
                         "when it died")
    group.addoption("--watchdog-dir", metavar="DIR", default=None,
                    help="diagnostics folder (default: $WATCHDOG_CORE_DIR, else the "
                         "state folder)")
    group.addoption("--watchdog-memory-limit", metavar="SIZE", default=None,
                    help="a limit of your own, such as 2GiB, on top of those the machine "
                         "sets")
    group.addoption("--watchdog-top", metavar="N", type=int, default=5,
                    help="show the N tests that grew RSS the most (default 5, 0: none)")


# trylast: after pytest's own faulthandler plugin has enabled faulthandler, so the
# session finds it enabled and leaves it to pytest (docs/pytest.md, "Native crashes").
@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("watchdog", False):
        return
    from ._pytest_run import WatchedRun

    config.pluginmanager.register(WatchedRun.start(config), WatchedRun.PLUGIN_NAME)
