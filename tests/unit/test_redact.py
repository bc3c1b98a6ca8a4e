"""argv redaction: what docs/diagnostics.md ("Privacy") says a dump keeps of the command line."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog_core._redact import REDACTED, redact_argv

R = REDACTED


def code(source: str) -> str:
    return f"<code: {len(source)} chars>"


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


# Real command lines. Every secret holds the marker "s3kr1t" (any case), distinct per row, so
# test_no_marker_survives can check the whole table at once.
PY = "import os; print('s3kr1t-py')"
SH = "curl -H 'Authorization: Bearer s3kr1t-sh' https://api"
JS = "fetch(url, {headers: {a: 's3kr1t-js'}})"
GHP = "ghp_S3KR1TgitTokenAAAAAAAAAAAAAAAAAAAAAAAAAA"
REAL_COMMAND_LINES = [
    # curl
    pytest.param(["curl", "-u", "alice:s3kr1t-curl-u", "https://api.example.com"],
                 ["curl", "-u", f"alice:{R}", "https://api.example.com"], id="curl -u"),
    pytest.param(["curl", "-ualice:s3kr1t-curl-inline", "https://api.example.com"],
                 ["curl", f"-ualice:{R}", "https://api.example.com"], id="curl -uUSER:PASS"),
    pytest.param(["curl", "--user", "alice:s3kr1t-curl-user", "https://x"],
                 ["curl", "--user", f"alice:{R}", "https://x"], id="curl --user"),
    pytest.param(["curl", "--user=alice:s3kr1t-curl-user-eq"], ["curl", f"--user=alice:{R}"],
                 id="curl --user="),
    pytest.param(["curl", "-H", "Authorization: Bearer s3kr1t-curl-bearer", "https://x"],
                 ["curl", "-H", f"Authorization: {R}", "https://x"], id="curl -H Authorization"),
    pytest.param(["curl", "-H", "X-Api-Key: s3kr1t-curl-xapikey", "https://x"],
                 ["curl", "-H", f"X-Api-Key: {R}", "https://x"], id="curl -H X-Api-Key"),
    pytest.param(["curl", "--header", "PRIVATE-TOKEN: s3kr1t-gitlab", "https://gitlab/api"],
                 ["curl", "--header", f"PRIVATE-TOKEN: {R}", "https://gitlab/api"],
                 id="curl --header PRIVATE-TOKEN"),
    pytest.param(["curl", "--header=Cookie: sid=s3kr1t-curl-cookie-header"],
                 ["curl", f"--header=Cookie: {R}"], id="curl --header=Cookie"),
    pytest.param(["curl", "-b", "sid=s3kr1t-curl-b", "https://x"], ["curl", "-b", R, "https://x"],
                 id="curl -b"),
    pytest.param(["curl", "--cookie", "sid=s3kr1t-curl-cookie"], ["curl", "--cookie", R],
                 id="curl --cookie"),
    pytest.param(["curl", "https://api.example.com/v1/items?token=s3kr1t-query&page=2"],
                 ["curl", f"https://api.example.com/v1/items?token={R}&page=2"], id="curl ?token="),
    pytest.param(["curl", "https://alice:s3kr1t-curl-url@example.com/x"],
                 ["curl", f"https://alice:{R}@example.com/x"], id="curl user:pass URL"),
    pytest.param(["curl", "-d", '{"username": "alice", "password": "s3kr1t-curl-json"}', "https://x"],
                 ["curl", "-d", f'{{"username": "alice", "password": "{R}"}}', "https://x"],
                 id="curl -d JSON"),
    pytest.param(["curl", "--data-urlencode", "client_secret=s3kr1t-oauth", "https://x/token"],
                 ["curl", "--data-urlencode", f"client_secret={R}", "https://x/token"],
                 id="curl client_secret="),
    # psql
    pytest.param(["psql", "postgresql://app:s3kr1t-pg-url@db.internal:5432/app"],
                 ["psql", f"postgresql://app:{R}@db.internal:5432/app"], id="psql URL"),
    pytest.param(["psql", "host=db user=app password=s3kr1t-pg-conninfo dbname=app"],
                 ["psql", f"host=db user=app password={R} dbname=app"], id="psql conninfo"),
    pytest.param(["psql", "host=db password='s3kr1t pg quoted' dbname=app"],
                 ["psql", f"host=db password={R} dbname=app"], id="psql conninfo quoted"),
    pytest.param(["psql", "postgresql://db/app?user=app&password=s3kr1t-pg-query&sslmode=require"],
                 ["psql", f"postgresql://db/app?user=app&password={R}&sslmode=require"],
                 id="psql URL ?password="),
    pytest.param(["env", "PGPASSWORD=s3kr1t-pgpassword", "psql", "-h", "db", "-U", "app"],
                 ["env", f"PGPASSWORD={R}", "psql", "-h", "db", "-U", "app"], id="PGPASSWORD="),
    # docker, podman, helm
    pytest.param(["docker", "login", "-u", "ci", "-p", "s3kr1t-docker-p", "registry.example.com"],
                 ["docker", "login", "-u", "ci", "-p", R, "registry.example.com"],
                 id="docker login -p"),
    pytest.param(["docker", "login", "--username", "ci", "--password", "s3kr1t-docker", "ghcr.io"],
                 ["docker", "login", "--username", "ci", "--password", R, "ghcr.io"],
                 id="docker login --password"),
    pytest.param(["podman", "login", "-ps3kr1t-podman", "quay.io"],
                 ["podman", "login", f"-p{R}", "quay.io"], id="podman login -pX"),
    pytest.param(["helm", "registry", "login", "r.example.com", "-u", "ci", "-p", "s3kr1t-helm"],
                 ["helm", "registry", "login", "r.example.com", "-u", "ci", "-p", R],
                 id="helm registry login -p"),
    pytest.param(["docker", "run", "-p", "8080:80", "-e", "DB_PASSWORD=s3kr1t-docker-env", "nginx"],
                 ["docker", "run", "-p", "8080:80", "-e", f"DB_PASSWORD={R}", "nginx"],
                 id="docker run -p is a port"),
    pytest.param(["helm", "install", "app", "chart", "--set", "image.tag=1.2,db.password=s3kr1t-h"],
                 ["helm", "install", "app", "chart", "--set", f"image.tag=1.2,db.password={R}"],
                 id="helm --set"),
    pytest.param(["kubectl", "create", "secret", "generic", "db",
                  "--from-literal=password=s3kr1t-kubectl"],
                 ["kubectl", "create", "secret", "generic", "db", f"--from-literal=password={R}"],
                 id="kubectl --from-literal"),
    # aws
    pytest.param(["aws", "configure", "set", "aws_secret_access_key", "s3kr1t-aws-configure"],
                 ["aws", "configure", "set", "aws_secret_access_key", R], id="aws configure set"),
    pytest.param(["aws", "s3", "cp", "f", "s3://b/f", "--sse-c-key", "s3kr1t-aws-ssec"],
                 ["aws", "s3", "cp", "f", "s3://b/f", "--sse-c-key", R], id="aws --sse-c-key"),
    pytest.param(["aws", "sts", "assume-role", "--serial-number", "arn:aws:iam::1:mfa/me",
                  "--token-code", "s3kr1t-mfa"],
                 ["aws", "sts", "assume-role", "--serial-number", "arn:aws:iam::1:mfa/me",
                  "--token-code", R], id="aws --token-code"),
    pytest.param(["env", "AWS_ACCESS_KEY_ID=AKIAS3KR1T0000000000",
                  "AWS_SECRET_ACCESS_KEY=s3kr1t-aws-env", "aws", "s3", "ls"],
                 ["env", f"AWS_ACCESS_KEY_ID={R}", f"AWS_SECRET_ACCESS_KEY={R}", "aws", "s3", "ls"],
                 id="aws env"),
    pytest.param(["run", "--note", "key AKIAS3KR1T0000000001 leaked"],
                 ["run", "--note", f"key {R} leaked"], id="AKIA shape"),
    # git
    pytest.param(["git", "clone", "https://alice:s3kr1t-git-pw@github.com/org/repo.git"],
                 ["git", "clone", f"https://alice:{R}@github.com/org/repo.git"],
                 id="git clone user:token@"),
    pytest.param(["git", "clone", f"https://{GHP}@github.com/org/repo.git"],
                 ["git", "clone", f"https://{R}@github.com/org/repo.git"], id="git clone ghp@"),
    pytest.param(["git", "clone", "https://S3KR1TbareToken@gitlab.example.com/g/r.git"],
                 ["git", "clone", f"https://{R}@gitlab.example.com/g/r.git"],
                 id="git clone TOKEN@"),
    pytest.param(["git", "clone", "https://ghp_s3kr1t@github.com/o/r"],
                 ["git", "clone", f"https://{R}@github.com/o/r"], id="git clone short ghp_@"),
    pytest.param(["git", "clone", "https://x-access-token:s3kr1t-gh-app@github.com/o/r"],
                 ["git", "clone", f"https://x-access-token:{R}@github.com/o/r"],
                 id="git clone x-access-token"),
    pytest.param(["git", "-c", "http.extraHeader=Authorization: Basic s3kr1t-git-basic", "fetch"],
                 ["git", "-c", f"http.extraHeader=Authorization: Basic {R}", "fetch"],
                 id="git -c extraHeader"),
    pytest.param(["pip", "install", "--index-url",
                  "https://__token__:s3kr1t-pypi@pypi.example.com/simple", "pkg"],
                 ["pip", "install", "--index-url",
                  f"https://__token__:{R}@pypi.example.com/simple", "pkg"], id="pip index URL"),
    pytest.param(["redis-cli", "-u", "redis://:s3kr1t-redis-url@cache:6379/0", "ping"],
                 ["redis-cli", "-u", f"redis://:{R}@cache:6379/0", "ping"], id="redis URL"),
    pytest.param(["redis-cli", "-a", "s3kr1t-redis-a", "ping"], ["redis-cli", "-a", R, "ping"],
                 id="redis-cli -a"),
    # mysql, sshpass, openssl
    pytest.param(["mysql", "-u", "root", "-ps3kr1t-mysql", "app"],
                 ["mysql", "-u", "root", f"-p{R}", "app"], id="mysql -pX"),
    pytest.param(["mysqldump", "-uroot", "--password=s3kr1t-mysqldump", "app"],
                 ["mysqldump", "-uroot", f"--password={R}", "app"], id="mysqldump --password="),
    pytest.param(["sshpass", "-p", "s3kr1t-sshpass", "ssh", "deploy@host"],
                 ["sshpass", "-p", R, "ssh", "deploy@host"], id="sshpass -p"),
    pytest.param(["openssl", "rsa", "-in", "k.pem", "-passin", "pass:s3kr1t-openssl"],
                 ["openssl", "rsa", "-in", "k.pem", "-passin", R], id="openssl -passin"),
    # python: the code of -c, however it is spelled, and never the program's own -c
    pytest.param(["python3", "-c", PY], ["python3", "-c", code(PY)], id="python -c"),
    pytest.param(["python3", "-Ic", PY], ["python3", "-Ic", code(PY)], id="python -Ic"),
    pytest.param(["/usr/bin/python3.11", "-Sc", PY, "arg"],
                 ["/usr/bin/python3.11", "-Sc", code(PY), "arg"], id="python -Sc"),
    pytest.param(["python", "-c" + PY], ["python", "-c" + code(PY)], id="python -cCODE"),
    pytest.param(["pypy3", "-ISc" + PY], ["pypy3", "-ISc" + code(PY)], id="pypy -IScCODE"),
    pytest.param(["python3.11", "-X", "dev", "-c", PY], ["python3.11", "-X", "dev", "-c", code(PY)],
                 id="python -X dev -c"),
    pytest.param(["python", "-W", "error", "-u", "-c", PY, "-c", "x"],
                 ["python", "-W", "error", "-u", "-c", code(PY), "-c", "x"],
                 id="python -W error -u -c"),
    pytest.param(["uv", "run", "python", "-c", PY], ["uv", "run", "python", "-c", code(PY)],
                 id="uv run python -c"),
    # shells, node, perl, ruby, php
    pytest.param(["bash", "-c", SH], ["bash", "-c", code(SH)], id="bash -c"),
    pytest.param(["/bin/sh", "-lc", SH], ["/bin/sh", "-lc", code(SH)], id="sh -lc"),
    pytest.param(["bash", "-o", "pipefail", "-ec", SH, "name", "arg1"],
                 ["bash", "-o", "pipefail", "-ec", code(SH), "name", "arg1"], id="bash -o -ec"),
    pytest.param(["sudo", "-u", "deploy", "zsh", "-xc", SH],
                 ["sudo", "-u", "deploy", "zsh", "-xc", code(SH)], id="sudo zsh -xc"),
    pytest.param(["node", "-e", JS], ["node", "-e", code(JS)], id="node -e"),
    pytest.param(["node", "--eval=" + JS], ["node", "--eval=" + code(JS)], id="node --eval="),
    pytest.param(["node", "-r", "dotenv/config", "-pe", JS],
                 ["node", "-r", "dotenv/config", "-pe", code(JS)], id="node -r -pe"),
    pytest.param(["perl", "-lne", "print 's3kr1t-perl'", "f.txt"],
                 ["perl", "-lne", code("print 's3kr1t-perl'"), "f.txt"], id="perl -lne"),
    pytest.param(["ruby", "-rjson", "-e", "p 's3kr1t-ruby'"],
                 ["ruby", "-rjson", "-e", code("p 's3kr1t-ruby'")], id="ruby -e"),
    pytest.param(["php", "-r", "echo 's3kr1t-php';"], ["php", "-r", code("echo 's3kr1t-php';")],
                 id="php -r"),
    # env-style assignments
    pytest.param(["env", "PASSWORD=s3kr1t-env-pw", "TOKEN=s3kr1t-env-token",
                  "SECRET=s3kr1t-env-secret", "HOME=/root", "agent"],
                 ["env", f"PASSWORD={R}", f"TOKEN={R}", f"SECRET={R}", "HOME=/root", "agent"],
                 id="env PASSWORD= TOKEN= SECRET="),
    pytest.param(["env", "OPENAI_API_KEY=sk-s3kr1tOpenAIKey000000", "HF_TOKEN=hf_s3kr1t",
                  "DB_PASS=s3kr1t pass with spaces", "agent"],
                 ["env", f"OPENAI_API_KEY={R}", f"HF_TOKEN={R}", f"DB_PASS={R}", "agent"],
                 id="env OPENAI_API_KEY="),
    pytest.param(["env", "DATABASE_URL=postgres://app:s3kr1t-dsn@db/app", "agent"],
                 ["env", f"DATABASE_URL=postgres://app:{R}@db/app", "agent"], id="env DSN"),
    # options named like secrets, however spelled
    pytest.param(["agent", "--pw", "s3kr1t-pw", "-pw", "s3kr1t-single-dash"],
                 ["agent", "--pw", R, "-pw", R], id="--pw and -pw"),
    pytest.param(["agent", "--apiKey", "s3kr1t-camel", "--client-secret=s3kr1t-client"],
                 ["agent", "--apiKey", R, f"--client-secret={R}"], id="camelCase and -secret="),
    pytest.param(["java", "-Djavax.net.ssl.keyStorePassword=s3kr1t-java", "-jar", "app.jar"],
                 ["java", f"-Djavax.net.ssl.keyStorePassword={R}", "-jar", "app.jar"],
                 id="java -D...Password="),
    pytest.param(["http", "--auth", "alice:s3kr1t-httpie", "GET", "https://x"],
                 ["http", "--auth", R, "GET", "https://x"], id="httpie --auth"),
    # JSON and Python-dict arguments
    pytest.param(["agent", '{"api_key": "s3kr1t-json", "model": "x"}'],
                 ["agent", f'{{"api_key": "{R}", "model": "x"}}'], id="JSON api_key"),
    pytest.param(["agent", "--config", "{'token': 's3kr1t-dict', 'turns': 3}"],
                 ["agent", "--config", f"{{'token': '{R}', 'turns': 3}}"], id="dict token"),
    pytest.param(["agent", '{"auth": {"password": "s3kr1t-nested"}, "apiKeys": ["s3kr1t-l"]}'],
                 ["agent", f'{{"auth": {{"password": "{R}"}}, "apiKeys": "{R}"}}'],
                 id="JSON nested and list"),
    pytest.param(["agent", '{"max_tokens": 512, "token": "s3kr1t-broken'],
                 ["agent", f'{{"max_tokens": 512, "token": "{R}"'], id="JSON invalid"),
    pytest.param(["agent", "--sentry-dsn", "https://0123abcd4567ef89s3kr1t@o1.ingest.sentry.io/4"],
                 ["agent", "--sentry-dsn", f"https://{R}@o1.ingest.sentry.io/4"], id="Sentry DSN"),
    # Found by review.
    pytest.param(["npm", "config", "set", "//registry.npmjs.org/:_authToken=s3kr1t-npm"],
                 ["npm", "config", "set", f"//registry.npmjs.org/:_authToken={R}"],
                 id="npm authToken"),
    pytest.param(["twine", "upload", "-u", "me", "-p", "s3kr1t-twine", "dist/*"],
                 ["twine", "upload", "-u", "me", "-p", R, "dist/*"], id="twine -p"),
    pytest.param(["az", "login", "-u", "me@x.io", "-p", "s3kr1t-az"],
                 ["az", "login", "-u", "me@x.io", "-p", R], id="az login -p"),
    pytest.param(["vault", "login", "hvs.s3kr1t-vault"], ["vault", "login", R], id="vault login"),
    pytest.param(["htpasswd", "-cb", "/etc/nginx/htpasswd", "me", "s3kr1t-htp"],
                 ["htpasswd", "-cb", "/etc/nginx/htpasswd", "me", R], id="htpasswd -b"),
    pytest.param(["curl", "-d", "{}", "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/"
                  "s3kr1tSLACKs3kr1tSLACKxx"],
                 ["curl", "-d", "{}", f"https://hooks.slack.com/services/{R}"],
                 id="Slack webhook"),
]


@pytest.mark.parametrize(("argv", "expected"), REAL_COMMAND_LINES)
def test_real_command_lines(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


HARMLESS = [
    pytest.param(["agent", "--model", "big", "--turns=3", "-v"], id="agent flags"),
    pytest.param(["agent", "--monkey", "george", "--keyboard", "us", "--turns", "3",
                  "--max-tokens", "512", "--tokenizer", "gpt2", "--author", "Ann"],
                 id="lookalikes"),
    pytest.param(["agent", "--password-file", "/run/secrets/db", "--token-file", "/run/t",
                  "--api-key-env", "OPENAI_API_KEY", "--key-size", "4096"], id="where, not what"),
    pytest.param(["agent", "--no-password", "--ask-pass", "--verbose"], id="switches"),
    pytest.param(["docker", "login", "--password-stdin", "-u", "ci", "ghcr.io"], id="stdin"),
    pytest.param(["env", "HOME=/root", "TOKENIZERS_PARALLELISM=false", "MAX_TOKENS=512",
                  "PASSWORD_FILE=/run/secrets/pw", "app"], id="harmless env"),
    pytest.param(["mysql", "-u", "root", "-p", "-h", "db", "-P", "3306", "app"], id="mysql -p"),
    pytest.param(["psql", "-h", "db", "-U", "app", "-d", "app"], id="psql"),
    pytest.param(["git", "clone", "git@github.com:org/repo.git"], id="git ssh"),
    pytest.param(["git", "clone", "https://git@example.com/r.git"], id="git plain user"),
    pytest.param(["ps", "-u", "root"], id="ps -u"),
    pytest.param(["sort", "-u", "words.txt"], id="sort -u"),
    pytest.param(["python", "-u", "train.py", "--epochs", "3"], id="python -u"),
    pytest.param(["python", "-m", "pytest", "-c", "pytest.ini", "-q"], id="python -m -c"),
    pytest.param(["python", "-mpytest", "-c", "pytest.ini"], id="python -mMOD -c"),
    pytest.param(["python", "tool.py", "-c", "config.toml"], id="python script -c"),
    pytest.param(["python", "-X", "importtime", "tool.py", "-c", "config.toml"], id="-X script -c"),
    pytest.param(["bash", "deploy.sh", "--verbose"], id="bash script"),
    pytest.param(["node", "server.js", "--port", "3000"], id="node script"),
    pytest.param(["curl", "-H", "Content-Type: application/json", "https://x?page=2"], id="curl"),
    pytest.param(["aws", "configure", "set", "region", "eu-west-1"], id="aws region"),
    pytest.param(["agent", '{"model": "x", "max_tokens": 100}'], id="JSON"),
    pytest.param(["watchdog-core", "run", "--", "python", "train.py", "--lr=3e-4"], id="run"),
]


@pytest.mark.parametrize("argv", HARMLESS)
def test_harmless_argv_is_kept_verbatim(argv: list[str]) -> None:
    assert redact_argv(argv) == argv


MARKER = re.compile("s3kr1t", re.IGNORECASE)


def test_no_marker_survives() -> None:
    """Whatever the exact shape of each row, none of its secrets reaches the output."""
    rows = [param.values for param in REAL_COMMAND_LINES]
    for argv, expected in rows:
        assert MARKER.search(" ".join(argv)), argv  # each row does carry a secret
        assert not MARKER.search(" ".join(expected)), expected  # and the table expects none
        assert not MARKER.search(" ".join(redact_argv(argv))), argv


@given(st.lists(st.text(max_size=60), max_size=12))
def test_any_argv_gives_one_string_per_argument(argv: list[str]) -> None:
    out = redact_argv(argv)
    assert len(out) == len(argv) and all(isinstance(arg, str) for arg in out)


def test_python_dash_c_source_is_replaced_by_its_length() -> None:
    code = "import os; print(os.environ['SECRET'])"
    assert redact_argv(["/usr/bin/python3", "-c", code, "arg"]) == [
        "/usr/bin/python3", "-c", f"<code: {len(code)} chars>", "arg"]
    assert redact_argv(["python3.11", "-X", "dev", "-c", "x=1"]) == [
        "python3.11", "-X", "dev", "-c", "<code: 3 chars>"]


def test_dash_c_of_a_script_is_the_scripts_own_option() -> None:
    assert redact_argv(["python", "tool.py", "-c", "config.toml"]) == [
        "python", "tool.py", "-c", "config.toml"]
