"""Run by tests/integration/test_pytest_plugin.py, never by the repo's own suite: a node
id of about 200 bytes, then the process kills itself."""

import os
import signal

import pytest


@pytest.mark.parametrize("case", ["SECRET-LONG"])
def test_a_very_long_name_that_keeps_going_past_sixty_four_bytes_as_the_names_of_real_tests_often_do_once_their_module_path_and_class_are_added_in_front_of_it_too(case: str) -> None:  # noqa: E501
    os.kill(os.getpid(), signal.SIGKILL)
