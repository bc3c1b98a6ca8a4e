"""argv with secrets taken out, judged by what each argument means.

The host's command line goes into every dump, and command lines are where people put
tokens. docs/diagnostics.md ("Privacy") lists exactly what is redacted; in short:

* code given on the command line (``python -c``, ``bash -c``, ``node -e``, ``perl -e``,
  ``ruby -e``, ``php -r``), replaced by its length;
* the value of anything named like a secret: ``--token X``, ``--password=X``, ``-pw X``,
  ``PASSWORD=X``, ``password=X`` inside a conninfo string or a URL query, ``"api_key": "X"``
  inside JSON, ``Authorization: X``, and the argument after a positional secret name
  (``aws configure set aws_secret_access_key X``);
* passwords and bare tokens in URLs, the password of ``-u user:password``;
* the short password flags of the programs that define them (``docker login -p X``,
  ``mysql -pX``, ``sshpass -p X``);
* well-known token shapes anywhere (``sk-...``, ``ghp_...``, ``AKIA...``, JWTs).

A name looks secret by its words (split on ``-``, ``_``, ``.`` and camelCase), so
``--keyboard`` and ``--max-tokens`` are kept; a name whose last word says where the secret
is (``--password-file PATH``, ``--password-stdin``) is not the secret. Where in doubt this
redacts: a dump with one argument too few is better than a leaked key.
"""

from __future__ import annotations

import re
from collections.abc import Callable

REDACTED = "<redacted>"

# -- names ---------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A name holding one of these words names a secret...
_SECRET_WORDS = frozenset({
    "pw", "pwd", "pass", "passwd", "passcode", "passin", "passout", "sshpass", "secret",
    "token", "key", "keys", "privkey", "auth", "oauth", "authorization", "creds", "cookie",
    "cookies", "signature", "sig", "otp", "jwt", "bearer", "sessionid",
})
# ...or a word containing one of these (``PGPASSWORD``, ``clientsecret``, ``openaiapikey``)...
_SECRET_STEMS = ("password", "passwd", "passphrase", "secret", "credential", "apikey",
                 "accesskey", "privatekey", "sessionkey", "authkey", "signingkey")
# ...or ending in one (``authtoken``, ``hftoken``), which spares ``tokenizer``, ``max_tokens``.
_SECRET_ENDINGS = ("token", "pwd")
# A last word that says where a secret is or what it is like, not what it is.
_ABOUT_A_SECRET = frozenset({
    "file", "files", "path", "dir", "stdin", "env", "fd", "sock", "socket", "url", "uri",
    "name", "type", "size", "length", "limit", "count", "helper", "jar",
})
# A first word that makes the option a switch without a value: ``--no-password``, ``--ask-pass``.
_SWITCH_WORDS = frozenset({"no", "ask"})


def _words(name: str) -> list[str]:
    """``OPENAI_API_KEY``, ``x-api-key``, ``apiKey`` -> ``openai api key``, ``x api key``..."""
    return [word.lower() for word in _WORD.findall(name)]


def _names_secret(name: str) -> bool:
    """Whether the value under this name (option, variable, key, header) is a secret."""
    words = _words(name)
    if not words or words[-1] in _ABOUT_A_SECRET or words[0] in _SWITCH_WORDS:
        return False
    return any(word in _SECRET_WORDS or word.endswith(_SECRET_ENDINGS)
               or any(stem in word for stem in _SECRET_STEMS) for word in words)


def _names_user(option: str) -> bool:
    """``-u``, ``--user``, ``--proxy-user``: options whose value may be ``user:password``."""
    return option in ("-u", "-U") or (
        option.startswith("--") and _words(option)[-1:] in (["user"], ["username"]))


# -- one argument on its own ---------------------------------------------------------------

_OPTION = re.compile(r"(--?[A-Za-z][\w.-]*)=(.*)", re.DOTALL)      # --name=value, -Dname=value
_INLINE_USER = re.compile(r"(-[uU])([^:=]*:.*)", re.DOTALL)        # -uuser:password
_ASSIGNMENT = re.compile(r"([A-Za-z_][\w.-]*)=(.*)", re.DOTALL)    # NAME=value
# An npmrc-style key: //registry.npmjs.org/:_authToken=X (the name is its last identifier).
_SCOPED_ASSIGNMENT = re.compile(r"([^=\s?&#]*[:/])([A-Za-z_][\w.-]*)=(.*)", re.DOTALL)
_HEADER = re.compile(r"([A-Za-z][\w.-]*)(\s*:\s*)(.+)", re.DOTALL)  # Name: value
# "key": "value" in JSON or a Python dict; the value may be a string, a flat list or a scalar,
# and the text need not be valid JSON (a truncated string runs to the end).
_QUOTED_PAIR = re.compile(r"""(["'])([^"'\n]{1,200})\1(\s*:\s*)"""
                          r"""("(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|\[[^\[\]]*\]?|[^\s,{}\[\]"']+)""")
# name=value inside a longer argument: at its start, after whitespace or a list separator.
_PAIR = re.compile(r"(?<![^\s,;?&#])([A-Za-z_][\w.-]*)\s*=\s*")
_QUERY_VALUE = re.compile(r"[^\s&#]*")
_VALUE = re.compile(r"""'[^']*'?|"[^"]*"?|\S*""")
_URL_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^/?#\s]*)@", re.IGNORECASE)
_PLAIN_USER = re.compile(r"[a-z][a-z0-9._-]{0,23}")
_TOKEN_PREFIX = re.compile(r"gh[pousr]_|github_pat_|glpat-|hf_|npm_|pypi-|sk-|[rs]k_(?:live|test)_"
                           r"|xox[abprs]-")
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_-]{50,}|"
    r"[rs]k_(?:live|test)_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|A(?:KIA|SIA)[0-9A-Z]{16}|"
    r"AIza[0-9A-Za-z_-]{30,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+|"
    r"T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/[A-Za-z0-9]{20,})"  # the path of a Slack webhook URL
)
_BEARER = re.compile(r"\b(bearer|basic)\s+\S+", re.IGNORECASE)


def redact_arg(arg: str) -> str:
    """One argument, read on its own, with its secret parts replaced by ``<redacted>``."""
    if m := _OPTION.fullmatch(arg):
        option, value = m.groups()
        if _names_secret(option):
            return f"{option}={REDACTED}"
        if _names_user(option):
            return f"{option}={_without_password(value)}"
        return f"{option}={redact_arg(value)}"  # --from-literal=password=X, --header=Cookie: X
    if m := _INLINE_USER.fullmatch(arg):
        return m.group(1) + _without_password(m.group(2))
    if (m := _ASSIGNMENT.fullmatch(arg)) and _names_secret(m.group(1)):
        return f"{m.group(1)}={REDACTED}"  # the whole rest: a value may hold spaces
    if (m := _SCOPED_ASSIGNMENT.fullmatch(arg)) and _names_secret(m.group(2)):
        return f"{m.group(1)}{m.group(2)}={REDACTED}"
    if (m := _HEADER.fullmatch(arg)) and _names_secret(m.group(1)):
        return f"{m.group(1)}{m.group(2)}{REDACTED}"
    return _redact_text(arg)


def _redact_text(text: str) -> str:
    """Secrets anywhere inside an argument, whatever its overall shape."""
    text = _QUOTED_PAIR.sub(_redact_quoted_pair, text)
    text = _redact_pairs(text)
    text = _URL_USERINFO.sub(_redact_userinfo, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    return _TOKEN_SHAPES.sub(REDACTED, text)


def _redact_quoted_pair(m: re.Match[str]) -> str:
    """``"api_key": "X"`` -> ``"api_key": "<redacted>"``, quoted the same way, others kept."""
    quote, key, colon = m.group(1), m.group(2), m.group(3)
    if not _names_secret(key):
        return m.group(0)
    return f"{quote}{key}{quote}{colon}{quote}{REDACTED}{quote}"


def _redact_pairs(text: str) -> str:
    """``name=value`` pairs inside a conninfo string, a URL query, a ``--set a=1,b=2`` list.

    A secret value runs to its closing quote, or to where its list would start the next
    pair: ``&`` or ``#`` in a URL query (values there are percent-encoded), whitespace
    elsewhere, where a ``,`` or ``;`` might be part of the password.
    """
    parts: list[str] = []
    done = 0
    for m in _PAIR.finditer(text):
        if m.start() < done or not _names_secret(m.group(1)):
            continue
        in_query = text[m.start() - 1:m.start()] in ("?", "&", "#")
        value = (_QUERY_VALUE if in_query else _VALUE).match(text, m.end())
        assert value is not None  # both patterns match the empty string
        parts += [text[done:m.end()], REDACTED]
        done = value.end()
    return "".join(parts) + text[done:]


def _redact_userinfo(m: re.Match[str]) -> str:
    """``scheme://user:password@`` keeps the user; ``scheme://TOKEN@`` keeps only a plain name."""
    userinfo = m.group(2)
    if ":" in userinfo:
        kept = _without_password(userinfo)
    elif _is_plain_user(userinfo):
        kept = userinfo
    else:
        kept = REDACTED
    return f"{m.group(1)}{kept}@"


def _is_plain_user(text: str) -> bool:
    """``git``, ``me``, ``deploy-bot``: a name a person chose, not a token a machine drew."""
    return (bool(_PLAIN_USER.fullmatch(text)) and sum(c.isdigit() for c in text) <= 4
            and not _TOKEN_PREFIX.match(text))


def _without_password(value: str) -> str:
    """``user:password`` -> ``user:<redacted>``; a value without a colon is only a user."""
    user, colon, rest = value.partition(":")
    if not colon or rest.startswith("//"):  # redis-cli -u redis://:password@host is a URL
        return redact_arg(value)
    return f"{_redact_text(user)}:{REDACTED}"


# -- code on the command line --------------------------------------------------------------


class _Interpreter:
    """How one family of interpreters reads its options, as far as finding the code needs.

    A plain class, not a dataclass: ``dataclasses`` brings ``inspect`` into the watchdog,
    about 2 MiB of an idle watchdog's memory (docs/performance.md)."""

    __slots__ = ("code", "value", "inline", "code_is_operand", "ends")

    def __init__(self, *, code: frozenset[str], value: frozenset[str] = frozenset(),
                 inline: frozenset[str] = frozenset(), code_is_operand: bool = False,
                 ends: frozenset[str] = frozenset()) -> None:
        self.code = code  # options whose value is source code: "c" (short), "--eval" (long)
        self.value = value  # other options with a value: inline, or the next arg
        self.inline = inline  # options whose value can only be the rest of the cluster
        # Shells, node: ``-c`` is a switch, the code the next operand.
        self.code_is_operand = code_is_operand
        # Options after which the rest of argv is the program's. Only for an interpreter
        # whose every option is known (python): there the first operand (the script) ends
        # them too. For the others a misread unknown option must not end the scan before
        # the code.
        self.ends = ends


_SHELL = _Interpreter(code=frozenset({"c"}), code_is_operand=True,
                      value=frozenset({"o", "O", "--rcfile", "--init-file"}))
_INTERPRETERS = {
    **dict.fromkeys(("python", "pypy"), _Interpreter(
        code=frozenset({"c"}), value=frozenset({"m", "W", "X", "--check-hash-based-pycs"}),
        ends=frozenset({"c", "m"}))),
    "ipython": _Interpreter(code=frozenset({"c"}), value=frozenset({"m"})),
    **dict.fromkeys(("sh", "bash", "zsh", "dash", "ksh", "ash", "mksh"), _SHELL),
    "fish": _Interpreter(code=frozenset({"c", "C", "--command", "--init-command"}),
                         code_is_operand=True),
    **dict.fromkeys(("node", "nodejs", "bun"), _Interpreter(
        code=frozenset({"e", "p", "--eval", "--print"}), code_is_operand=True,
        value=frozenset({"r", "C", "--require", "--import", "--loader", "--experimental-loader",
                         "--conditions", "--title", "--input-type"}))),
    "perl": _Interpreter(code=frozenset({"e", "E"}),
                         inline=frozenset({"i", "I", "M", "m", "x", "C", "d", "D", "F", "V"})),
    "ruby": _Interpreter(code=frozenset({"e"}), value=frozenset({"I", "r", "C", "E"}),
                         inline=frozenset({"i", "x", "W", "K", "F"})),
    "php": _Interpreter(code=frozenset({"r", "B", "R", "E"}),
                        value=frozenset({"c", "d", "f", "z", "t", "S", "F"})),
}


def _program_name(word: str) -> str:
    """``/usr/bin/python3.11`` -> ``python``, ``pypy3`` -> ``pypy``, ``bash`` -> ``bash``."""
    return word.rsplit("/", 1)[-1].rstrip("0123456789.")


def _code_spans(argv: list[str]) -> dict[int, int]:
    """Where code is in argv: position -> offset of the code within that argument.

    Every argument naming an interpreter starts a scan, not only argv[0], so code run through
    a wrapper (``sudo bash -c``, ``env python -c``, ``docker exec c sh -c``) is found too.
    """
    spans: dict[int, int] = {}
    for position, word in enumerate(argv):
        interpreter = _INTERPRETERS.get(_program_name(word))
        if interpreter is not None and position not in spans:
            spans.update(_scan_options(interpreter, argv, position + 1))
    return spans


def _scan_options(interpreter: _Interpreter, argv: list[str], i: int) -> dict[int, int]:
    """The code among the options that follow one interpreter's name, from position ``i``."""
    spans: dict[int, int] = {}
    awaiting = False  # a shell's -c (node's -e) was seen: the next operand is the code
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not _is_option(interpreter, arg):
            if awaiting:
                spans[i + 1 if arg == "--" else i] = 0  # bash -c -- CODE, bash -c CODE
                break
            if arg == "--" or interpreter.ends:
                break  # python's script: the rest is its own argv
            i += 1  # elsewhere perhaps the value of an option not listed: read on
            continue
        used = ""  # the option that took a value, if any
        if arg.startswith("--"):
            used, equals, _ = arg.partition("=")
            if used in interpreter.code and equals:
                spans[i] = len(used) + 1  # --eval=CODE
            elif used in interpreter.code:
                i += 1
                spans[i] = 0  # --eval CODE
            elif used in interpreter.value and not equals:
                i += 1
        else:
            for j, letter in enumerate(arg[1:], start=1):
                rest = arg[j + 1:]
                if letter in interpreter.code and interpreter.code_is_operand:
                    awaiting = True
                    continue
                if letter in interpreter.code and rest:
                    spans[i] = j + 1  # -cCODE, -IScCODE
                elif letter in interpreter.code:
                    i += 1
                    spans[i] = 0
                elif letter in interpreter.value and not rest:
                    i += 1
                elif letter not in interpreter.value and letter not in interpreter.inline:
                    continue  # a switch: the cluster goes on (-IS, -lne)
                used = letter
                break
        if used in interpreter.ends:
            break
        i += 1
    return spans


def _is_option(interpreter: _Interpreter, arg: str) -> bool:
    """``-x``, ``--long``, and for shells ``+o``; ``-`` alone is an operand (stdin)."""
    return len(arg) > 1 and (arg[0] == "-" or (arg[0] == "+" and interpreter.code_is_operand))


# -- the command line ----------------------------------------------------------------------

# Short password flags, too common elsewhere to guess at, for the programs that define them:
# program -> (flag, a word that must come before it, whether the next argument can be its value).
# mysql's bare -p prompts, so only -pSECRET is a password there.
_PASSWORD_FLAGS: dict[str, tuple[str, str, bool]] = {
    **dict.fromkeys(("docker", "podman", "nerdctl", "buildah", "skopeo", "helm"),
                    ("-p", "login", True)),
    **dict.fromkeys(("mysql", "mariadb", "mysqldump", "mysqladmin", "mariadb-dump"),
                    ("-p", "", False)),
    "sshpass": ("-p", "", True),
    "twine": ("-p", "", True),  # twine upload -u USER -p PASSWORD
    "az": ("-p", "login", True),
    "redis-cli": ("-a", "", True),
    "curl": ("-b", "", True),  # --cookie
}
_FLAG = re.compile(r"--?[A-Za-z][\w.-]*")
_SECRET_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)+")

_Next = Callable[[str], str]


def _hide(_value: str) -> str:
    """The argument after ``--password``: all of it, whatever it looks like."""
    return REDACTED


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as it may appear in a dump: one entry per argument, secrets replaced."""
    code = _code_spans(argv)
    out: list[str] = []
    next_arg: _Next | None = None  # what the previous argument says the next one is
    named: set[str] = set()  # program names (and other words) seen so far
    for position, arg in enumerate(argv):
        if position in code:
            start = code[position]
            out.append(f"{arg[:start]}<code: {len(arg) - start} chars>")
            next_arg = None
        elif next_arg is not None:
            out.append(next_arg(arg))
            next_arg = None
        else:
            previous = argv[position - 1] if position else None
            redacted, next_arg = _redact_in_context(arg, previous, named)
            out.append(redacted)
        named.add(_program_name(arg))
    return _htpasswd_batch(argv, out)


def _htpasswd_batch(argv: list[str], out: list[str]) -> list[str]:
    """``htpasswd -b[c] FILE USER PASSWORD``: the password is the third operand."""
    if not argv or _program_name(argv[0]) != "htpasswd":
        return out
    flags = [a for a in argv[1:] if a.startswith("-")]
    if not any("b" in f[1:] for f in flags):
        return out
    operands = [i for i, a in enumerate(argv) if i and not a.startswith("-")]
    if len(operands) >= 3:
        out[operands[2]] = REDACTED
    return out


def _redact_in_context(arg: str, previous: str | None,
                       named: set[str]) -> tuple[str, _Next | None]:
    """One argument, and what it says about the next one (``--password`` hides it)."""
    for program in named.intersection(_PASSWORD_FLAGS):
        flag, after, separate = _PASSWORD_FLAGS[program]
        if after and after not in named:
            continue
        if arg == flag and separate:
            return arg, _hide
        if arg.startswith(flag) and len(arg) > len(flag):
            return f"{flag}{REDACTED}", None
    if _names_user(arg):
        return arg, _without_password
    if _FLAG.fullmatch(arg) and _names_secret(arg):
        return arg, _hide
    if (previous is not None and not _FLAG.fullmatch(previous)  # a positional, not a value
            and _SECRET_IDENTIFIER.fullmatch(arg) and _names_secret(arg)):
        return arg, _hide  # aws configure set aws_secret_access_key VALUE
    if previous == "login" and "vault" in named and not arg.startswith("-"):
        return REDACTED, None  # vault login TOKEN
    return redact_arg(arg), None
