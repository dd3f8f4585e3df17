"""Property tests (hypothesis): parsers never echo credentials, never raise untyped errors, keep statements.

Each run is deterministic (``derandomize``) and sized to a few seconds; the URL test checks at
least 2,000 generated URLs and malformed variants.
"""

from __future__ import annotations

import contextlib
import io
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import api.db.redact as redact
from api.db import connect
from api.db.cli import main
from api.db.exceptions import ApiDbError, MigrationDeclarationError
from api.db.migrate.declarations import plan_migrations

try:  # the splitter's home at merge time: sqltext (SQL-text rules) or sqlfile
    from api.db.migrate.sqltext import SQLFileError, split_sql  # type: ignore[import-not-found,attr-defined]
except ImportError:
    from api.db.migrate.sqlfile import SQLFileError, split_sql

PACKAGE = Path(__file__).resolve().parents[2] / "api" / "db"
# Text that messages may legitimately contain: a password window found here is not an echo.
BOILERPLATE = "".join(
    (PACKAGE / name).read_text()
    for name in ("pool/connect.py", "pool/config.py", "redact.py", "exceptions.py")
)
FAST = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))

PASSWORD_CHARS = string.ascii_letters + string.digits + "@:/#?%[] '\"&=;!$+"
NAME_CHARS = string.ascii_lowercase + string.digits
SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite")
SPECIALS = "@:/#?%[] '\"\\"

seen = {"urls": 0, "leaks": 0}


@contextlib.contextmanager
def isolated_secrets() -> Iterator[None]:
    """Registered secrets of a generated case do not outlive it (they would mask other tests' text)."""
    saved = (set(redact._secrets), redact._forms)
    try:
        yield
    finally:
        redact._secrets.clear()
        redact._secrets.update(saved[0])
        redact._forms = saved[1]


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str]:
    """A database URL with a password (maybe percent-encoded), then maybe one malformation."""
    password = draw(st.text(PASSWORD_CHARS, min_size=6, max_size=18))
    user = draw(st.text(NAME_CHARS, min_size=1, max_size=8))
    host = draw(st.sampled_from(["127.0.0.1", "db.internal", "[::1]", "localhost"]))
    port = draw(st.sampled_from(["", ":5432", ":3306", ":0", ":99999", ":x1"]))
    written = quote(password, safe="") if draw(st.booleans()) else password
    scheme = draw(st.sampled_from(SCHEMES))
    url = f"{scheme}://{user}:{written}@{host}{port}/{draw(st.text(NAME_CHARS, max_size=6))}"
    mutation = draw(st.sampled_from(["none", "delete", "insert", "replace", "truncate", "slashes", "at"]))
    if mutation != "none" and url:
        i = draw(st.integers(0, len(url) - 1))
        j = draw(st.integers(i, min(len(url), i + 6)))
        url = {
            "delete": url[:i] + url[j:],
            "insert": url[:i] + draw(st.sampled_from(SPECIALS)) + url[i:],
            "replace": url[:i] + draw(st.sampled_from(SPECIALS)) + url[i + 1:],
            "truncate": url[:i],
            "slashes": url.replace("://", draw(st.sampled_from([":/", ":", "//", ":///"])), 1),
            "at": url.replace("@", draw(st.sampled_from(["", "@@", ":", "/"])), 1),
        }[mutation]
    return url, password


def _leaked(message: str, password: str) -> bool:
    windows = {password[k:k + 4] for k in range(len(password) - 3)}
    return any(w in message and w not in BOILERPLATE for w in windows)


@settings(FAST, max_examples=2500)
@given(urls())
def test_url_errors_never_echo_the_password(case: tuple[str, str]) -> None:
    url, password = case
    seen["urls"] += 1
    with isolated_secrets():
        try:
            database = connect(url, environ={})
        except ApiDbError as exc:
            message = str(exc)
            if _leaked(message, password):
                seen["leaks"] += 1
            assert not _leaked(message, password), f"{url!r} -> {message!r}"
        else:
            if hasattr(database, "close_all"):
                database.close_all()
            # A URL that parsed registered its password: any text holding it is masked. (A mutation may
            # have moved it into the user name, where it is no password: nothing to register then.)
            if _password_of(url) == password:
                text = f"failed statement: OPTIONS (password '{password}')"
                assert password not in redact.redact_text(text)


def _password_of(url: str) -> str | None:
    """The password the URL carries in its password position, decoded (None when it has none)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def test_the_url_run_was_large_enough() -> None:
    """Runs after the property test in file order: it saw >= 2,000 URLs and no leak."""
    if seen["urls"]:
        print(f"\nfuzzed URLs: {seen['urls']}, leaks: {seen['leaks']}")
        assert seen["urls"] >= 2000 and seen["leaks"] == 0


SQL_PIECES = ["SELECT 1", " ", "\n", ";", "'a;b'", "'it''s'", '"c;d"', "`e;f`", "-- n;o\n", "/* p; */",
              "$$ q; $$",
              "$t$ r; $t$", "'", '"', "`", "/*", "$$", "$t$", "--", "\\", "x", "$1", "a$b"]  # fmt: skip


@settings(FAST, max_examples=1500)
@given(st.lists(st.sampled_from(SQL_PIECES), max_size=30))
def test_split_sql_raises_only_its_typed_error(pieces: list[str]) -> None:
    try:
        split_sql("".join(pieces))
    except SQLFileError:
        pass


WHOLE = ["SELECT 1", "'a;b'", "'it''s'", '"c;d"', "`e;f`", "/* p; */", "$$ q; $$", "$t$ r; $t$", "x",
         "-- n;o\n"]


@st.composite
def statements(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(WHOLE + [" ", "\n"]), min_size=1, max_size=8))
    parts.append(draw(st.sampled_from(["SELECT 1", "x", "'a;b'"])))  # ends in code: a "--" would eat the ';'
    return " ".join(parts).strip()  # pieces side by side: '1$$' would not open a dollar quote


@settings(FAST, max_examples=1500)
@given(st.lists(statements(), min_size=1, max_size=6))
def test_split_then_join_keeps_every_statement(parts: list[str]) -> None:
    assert split_sql(";\n".join(parts)) == parts
    assert split_sql(";\n".join(split_sql(";\n".join(parts)))) == parts


NAMES = st.one_of(st.text(max_size=300), st.integers(), st.none(), st.binary(max_size=8), st.just("a"))


@settings(FAST, max_examples=800)
@given(st.lists(st.tuples(NAMES, st.sampled_from([lambda m: None, None, 42, lambda m, n: None])), max_size=6))
def test_plan_migrations_raises_only_declaration_errors(items: list[tuple[object, object]]) -> None:
    try:
        plan_migrations(items)  # type: ignore[arg-type]
    except MigrationDeclarationError:
        pass


SUBCOMMANDS = ["info", "preflight", "migrate", "status", "history", "validate", "repair", "plan", "verify",
               "bogus"]
FLAGS = ["--json", "--check", "--help", "-v", "--atomic", "each", "--lock-timeout", "0", "x",
         "--mark-applied",
         "--clear", "--models", "nosuch:MODELS", "--migrations", "nosuch_module:M", "api.db:nothing", "--",
         "",
         "--large-table-rows", "-1", "--on-unknown", "error", "\x00", "é"]  # fmt: skip


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    url = draw(
        st.sampled_from(["SCRATCH", "oracle://u:Zqsecret1@h/x", "postgresql:/app:Zqsecret1@h/app", "x"])
    )
    head = ["--database", url] if draw(st.booleans()) else []
    return head + draw(st.lists(st.sampled_from(SUBCOMMANDS + FLAGS), max_size=6))


@settings(FAST, max_examples=300)
@given(argvs())
def test_cli_never_gives_a_traceback(tmp_path_factory: pytest.TempPathFactory, argv: list[str]) -> None:
    scratch = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'scratch.db'}"
    argv = [scratch if a == "SCRATCH" else a for a in argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), isolated_secrets():
        code = main(argv)
    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in err.getvalue() + out.getvalue()
    assert "Zqsecret1" not in err.getvalue() + out.getvalue()
