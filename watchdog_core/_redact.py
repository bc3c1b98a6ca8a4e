"""argv with secrets taken out (SPEC 6: privacy).

The host's command line goes into every dump, and command lines are where
people put tokens. What is redacted (docs/privacy.md):

* the value of an option whose name looks secret: ``--token=X``, ``--password X``,
  ``-p`` is *not* guessed at (too common a flag for other things);
* ``NAME=value`` where NAME looks secret (``OPENAI_API_KEY=...``, ``DB_PASSWORD=...``);
* HTTP headers: ``Authorization: Bearer X``, ``Cookie: X``, ``X-Api-Key: X``;
* passwords in URLs: ``https://user:pw@host`` -> ``https://user:<redacted>@host``;
* well-known token shapes anywhere (``sk-...``, ``ghp_...``, ``xoxb-...``, ``AKIA...``);
* the source of ``python -c CODE``, replaced by its length.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
_SENSITIVE = r"(?:pass(?:word|wd|phrase)?|secret|token|api[-_]?key|access[-_]?key|" \
               r"private[-_]?key|auth(?:orization)?|credentials?|cookie|session[-_]?key|" \
               r"client[-_]?secret|signature|[a-z0-9]*[-_]key)"
_OPTION = re.compile(rf"^(--?[a-z0-9_-]*{_SENSITIVE}[a-z0-9_-]*)(=)(.*)$", re.IGNORECASE)
_OPTION_ALONE = re.compile(rf"^--?[a-z0-9_-]*{_SENSITIVE}[a-z0-9_-]*$", re.IGNORECASE)
_ASSIGNMENT = re.compile(rf"^([A-Za-z_][A-Za-z0-9_]*{_SENSITIVE}[A-Za-z0-9_]*)=(.+)$",
                         re.IGNORECASE)
_ASSIGNMENT_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*_(?:KEY|TOKEN|SECRET|PASSWORD|PASS))=(.+)$",
                             re.IGNORECASE)
_HEADER = re.compile(r"^((?:proxy-)?authorization|cookie|set-cookie|x-[a-z0-9-]*(?:key|token|"
                     r"secret)[a-z0-9-]*)\s*:\s*(.+)$", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]+):([^@/\s]+)@", re.IGNORECASE)
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
    r"AIza[0-9A-Za-z_-]{30,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)"
)
_BEARER = re.compile(r"\b(bearer|basic)\s+\S+", re.IGNORECASE)


def redact_arg(arg: str) -> str:
    """One argument with its secret parts replaced by ``<redacted>``."""
    if m := _OPTION.match(arg):
        return f"{m.group(1)}={REDACTED}"
    if m := _HEADER.match(arg):
        return f"{m.group(1)}: {REDACTED}"
    if (m := _ASSIGNMENT.match(arg)) or (m := _ASSIGNMENT_KEY.match(arg)):
        return f"{m.group(1)}={REDACTED}"
    arg = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", arg)
    arg = _BEARER.sub(rf"\1 {REDACTED}", arg)
    return _TOKEN_SHAPES.sub(REDACTED, arg)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as it may appear in a dump."""
    out: list[str] = []
    hide_next = False
    code_next = False
    for position, arg in enumerate(argv):
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if code_next:
            out.append(f"<code: {len(arg)} chars>")
            code_next = False
            continue
        if _OPTION_ALONE.match(arg):
            out.append(arg)
            hide_next = True
            continue
        if arg in ("-H", "--header"):
            out.append(arg)
            continue
        if position >= 1 and _is_python(argv[0]) and arg == "-c" and _before_script(argv, position):
            out.append(arg)
            code_next = True
            continue
        out.append(redact_arg(arg))
    return out


def _is_python(executable: str) -> bool:
    base = executable.rsplit("/", 1)[-1]
    return base.startswith(("python", "pypy"))


def _before_script(argv: list[str], position: int) -> bool:
    # `-c` is the interpreter's own option only before a script or -m has been named.
    skip = False
    for arg in argv[1:position]:
        if skip:
            skip = False
        elif arg in ("-X", "-W"):  # options whose value is the next argument
            skip = True
        elif not arg.startswith("-") or arg == "-m":
            return False
    return not skip
