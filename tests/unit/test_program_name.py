"""`run`'s default session id names the script an interpreter runs, never an option's
value: the name goes into file names, metric labels and Sentry's grouping."""

from __future__ import annotations

import pytest

from watchdog_core.cli.run import program_name

FILES = {"train.py", "host.py", "app.js", "app.ts", "job.pl"}


@pytest.mark.parametrize(("command", "expected"), [
    (["python", "train.py"], "train"),
    (["python3.12", "-u", "train.py", "--lr", "3"], "train"),
    (["python", "-W", "sk-live-SECRET", "host.py"], "host"),
    (["python", "-X", "importtime", "train.py"], "train"),
    (["node", "-r", "dotenv/config", "app.js"], "app"),
    (["deno", "run", "app.ts"], "app"),
    (["perl", "-I", "sk-SECRET", "job.pl"], "job"),
    (["python", "missing.py"], "python"),  # no such file: the interpreter
    (["python", "-m", "pkg.tool"], "tool"),
    (["python", "-c", "print(1)"], "python"),
    (["/usr/bin/make", "-j4"], "make"),
])
def test_program_name(command: list[str], expected: str) -> None:
    assert program_name(command, is_file=FILES.__contains__) == expected
