"""argv redaction (SPEC 6: privacy)."""

from __future__ import annotations

import pytest

from watchdog_core._redact import REDACTED, redact_argv

R = REDACTED


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["agent", "--token=abc123"], ["agent", f"--token={R}"]),
        (["agent", "--password", "hunter2", "--verbose"], ["agent", "--password", R, "--verbose"]),
        (["agent", "--api-key=k", "--db-password=p"], ["agent", f"--api-key={R}",
                                                       f"--db-password={R}"]),
        (["env", "OPENAI_API_KEY=sk-abc", "HOME=/root"], ["env", f"OPENAI_API_KEY={R}",
                                                           "HOME=/root"]),
        (["x", "AWS_SECRET_ACCESS_KEY=zzz", "MY_KEY=v"], ["x", f"AWS_SECRET_ACCESS_KEY={R}",
                                                          f"MY_KEY={R}"]),
        (["curl", "-H", "Authorization: Bearer abc.def"], ["curl", "-H", f"Authorization: {R}"]),
        (["curl", "Cookie: a=b"], ["curl", f"Cookie: {R}"]),
        (["git", "clone", "https://me:pw@example.com/r.git"],
         ["git", "clone", f"https://me:{R}@example.com/r.git"]),
        (["run", "key is sk-" + "a" * 30], ["run", f"key is {R}"]),
        (["run", "ghp_" + "b" * 36], ["run", R]),
        (["tool", "--session-key", "x"], ["tool", "--session-key", R]),
        (["agent", "--model", "big", "--turns=3"], ["agent", "--model", "big", "--turns=3"]),
    ],
)
def test_redaction(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


def test_python_dash_c_source_is_replaced_by_its_length() -> None:
    code = "import os; print(os.environ['SECRET'])"
    assert redact_argv(["/usr/bin/python3", "-c", code, "arg"]) == [
        "/usr/bin/python3", "-c", f"<code: {len(code)} chars>", "arg"]
    assert redact_argv(["python3.11", "-X", "dev", "-c", "x=1"]) == [
        "python3.11", "-X", "dev", "-c", "<code: 3 chars>"]


def test_dash_c_of_a_script_is_the_scripts_own_option() -> None:
    assert redact_argv(["python", "tool.py", "-c", "config.toml"]) == [
        "python", "tool.py", "-c", "config.toml"]
