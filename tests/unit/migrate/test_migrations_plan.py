"""Declarations, checksums, digests and grouping: everything decided before a database is touched."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
from peewee import CharField

from api.db.exceptions import ConfigurationError, MigrationDeclarationError
from api.db.migrate.checksums import definition_checksum
from api.db.migrate.declarations import Migration, _quick_names, migrations_digest, plan_migrations
from api.db.migrate.migrator import describe_operation
from api.db.migrate.runner import MigrationOutcome, MigrationReport, _check_settings, _groups


def test_tuples_and_records_are_planned_in_order() -> None:
    planned = plan_migrations(
        [("a", lambda m: None), Migration("b", lambda: None, atomic=False, description="x")]
    )
    assert [m.name for m in planned] == ["a", "b"]
    assert planned[1].atomic is False and planned[1].description == "x"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(MigrationDeclarationError) as caught:
        plan_migrations(
            [
                ("a", lambda m: None),
                ("a", lambda m: None),
                ("", lambda m: None),
                ("c", None),
                ("d" * 300, lambda m: None),
                ("e", lambda m, n: None),
                42,
            ]
        )
    text = str(caught.value)
    assert text.startswith("6 invalid")
    for fragment in ("duplicate name", "non-empty string", "must be callable", "holds 255", "only argument",
                     "#6"):
        assert fragment in text
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize("value", ["abc", {"a": lambda m: None}, None, 3])
def test_the_list_itself_must_be_a_list(value: object) -> None:
    with pytest.raises(MigrationDeclarationError):
        plan_migrations(value)  # type: ignore[arg-type]


def test_migration_is_immutable() -> None:
    migration = Migration("a", lambda m: None)
    with pytest.raises(AttributeError):
        migration.name = "b"  # type: ignore[misc]


def first(m: object) -> None:
    m.add_column("t", "c", CharField(max_length=10, null=True))  # type: ignore[attr-defined]


def first_reformatted(m: object) -> None:
    # a comment and other layout do not change what the migration does
    m.add_column(  # type: ignore[attr-defined]
        "t",
        "c",
        CharField(max_length=10, null=True),
    )


def first_changed(m: object) -> None:
    m.add_column("t", "c", CharField(max_length=20, null=True))  # type: ignore[attr-defined]


def test_checksum_follows_meaning_not_layout() -> None:
    assert definition_checksum(first) == definition_checksum(first)
    assert definition_checksum(first) != definition_checksum(first_changed)
    # first and first_reformatted differ in name, comments and layout only: their bodies hash alike.
    assert definition_checksum(first_reformatted) == definition_checksum(first)


def test_lambdas_on_one_line_have_their_own_checksums() -> None:
    a, b = (lambda m: m.sql("SELECT 1")), (lambda m: m.sql("SELECT 2"))  # noqa: E731
    assert definition_checksum(a) != definition_checksum(b)


def test_closures_and_partials_count() -> None:
    def make(size: int):  # type: ignore[no-untyped-def]
        return lambda m: m.add_column("t", "c", CharField(max_length=size))

    assert definition_checksum(make(10)) != definition_checksum(make(20))
    assert definition_checksum(functools.partial(first, 1)) != definition_checksum(
        functools.partial(first, 2)
    )


def test_digest_depends_on_names_and_order_only() -> None:
    a = [Migration("a", first), Migration("b", first_changed)]
    assert migrations_digest(a) == migrations_digest(list(a)) == migrations_digest(["a", "b"])
    assert migrations_digest(a) != migrations_digest(a[::-1])
    assert migrations_digest(a) != migrations_digest(a[:1])
    # Pending-ness depends on names only; a changed body is drift, found by checksums on the locked path.
    assert migrations_digest(a) == migrations_digest([Migration("a", first), Migration("b", first)])


def test_quick_check_agrees_with_the_full_plan() -> None:
    good = [("a", lambda m: None), Migration("b", lambda: None, atomic=False)]
    assert _quick_names(good) == ["a", "b"] == [m.name for m in plan_migrations(good)]
    for bad in (
        [("a", lambda m: None), ("a", lambda m: None)],
        [(" a", lambda m: None)],
        [("a", lambda m, n: None)],
        [("a", print)],  # a builtin: the full plan decides
        [Migration("a", lambda m: None, atomic=1)],  # type: ignore[arg-type]
    ):
        assert _quick_names(bad) is None


def test_groups_share_a_transaction_only_between_non_atomic_ones() -> None:
    a, b, c, d = (Migration(n, first, atomic=n != "c") for n in "abcd")
    assert [[m.name for m in g] for g in _groups([a, b, c, d], "all")] == [["a", "b"], ["c"], ["d"]]
    assert [[m.name for m in g] for g in _groups([a, b, c, d], "each")] == [["a"], ["b"], ["c"], ["d"]]


@pytest.mark.parametrize(
    "settings",
    [
        (0, "all", "warn"),
        (-1, "all", "warn"),
        (True, "all", "warn"),
        (1, "every", "warn"),
        (1, "all", "fail"),
    ],
)
def test_settings_are_checked(settings: tuple[object, str, str]) -> None:
    with pytest.raises(ConfigurationError):
        _check_settings(*settings)  # type: ignore[arg-type]


def test_describe_operation_hides_secrets_and_values() -> None:
    text = describe_operation("sql", ["CREATE USER x PASSWORD 'a' -- password=hunter2"])
    assert "hunter2" not in text
    assert describe_operation("add_column", ["t", "c", CharField()]) == "add_column('t', 'c', CharField)"


def test_report_summary_and_dict() -> None:
    report = MigrationReport(engine="postgres", declared=3, pending_before=["a", "b"])
    report.outcomes = [
        MigrationOutcome("a", "success", 1.5),
        MigrationOutcome("b", "skipped", 0.5, "adopted"),
    ]
    assert report.applied == ["a"] and report.skipped == ["b"] and report.failed == []
    assert "2 pending, 1 applied, 1 skipped, 0 failed" in report.summary()
    assert report.to_dict()["outcomes"][1]["reason"] == "adopted"


def _sized(size: int):  # type: ignore[no-untyped-def]
    return lambda m: m.add_column("t", "c", CharField(max_length=size))


PINNED_LAMBDA = lambda m: m.sql("SELECT 1")  # noqa: E731


def _without_source():  # type: ignore[no-untyped-def]
    namespace: dict[str, object] = {}
    exec(compile("def f(m, size=3):\n    return m.sql('SELECT 1')\n", "<no source>", "exec"), namespace)
    return namespace["f"]


PINNED_CHECKSUMS = {
    "function": "54891f5a6c6692d23fea46659aa763f1b102e2fef45e409ae6c66bba64145496",
    "lambda": "bf0c2a936d17a249e177e8ebf9102bf987ff53d54cebe9a266d98d4aee0ad88b",
    "closure": "8ad42daa1cbebc43e3b18a9cad058816129274ea1726b490c885a7f39950b601",
    "partial": "eb76989de92045cb9e00c1d672bf36a00dac61c7801bfb159e81c2b2e30e59b7",
    "sql_file": "da737ccfe35034ec2c2d69cac209c8218aa046719662390abee414fea0527f52",
    "bytecode": "47e7bc8516265b8b9577c8c8f29a7084ccec4c239379465d1b3d86642a35fc8e",
    "builtin": "6b5d6bf9285f212fceedeedc18edfc75f8aa95b0676fd98e91a72149cac59343",
}


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="ast.dump and bytecode differ by Python version")
def test_checksums_of_existing_migrations_do_not_change(tmp_path: Path) -> None:
    # Stored in migration_history: a change here reports drift for every applied migration.
    path = tmp_path / "001.sql"
    path.write_text("CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n", encoding="utf-8")
    functions = {
        "function": first,
        "lambda": PINNED_LAMBDA,
        "closure": _sized(10),
        "partial": functools.partial(first, 1),
        "sql_file": Migration.from_sql_file("001", path).fn,
        "bytecode": _without_source(),
        "builtin": print,
    }
    assert {name: definition_checksum(fn) for name, fn in functions.items()} == PINNED_CHECKSUMS
    assert Migration("a", first).checksum == PINNED_CHECKSUMS["function"]
