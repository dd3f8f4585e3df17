"""Preflight inputs without a server: vector detection, workers x pool headroom, WEB_CONCURRENCY;
plan's missing table."""

from __future__ import annotations

from pathlib import Path

import pytest
from peewee import CharField, IntegerField, Model, TextField

from api.db import Migration, connect, preview_migration
from api.db.exceptions import ConfigurationError
from api.db.health.preflight import (
    ExtendedPreflightReport,
    _connection_headroom,
    _web_concurrency,
    declares_vectors,
)
from examples.app_migrations import MIGRATIONS


class Plain(Model):
    name = CharField()


class Embedded(Model):
    body = TextField()
    embedding = IntegerField()

    class Meta:
        table_name = "embedded"


Embedded._meta.fields["embedding"].field_type = "VECTOR"  # as a pgvector field declares it


def test_vectors_are_found_in_models_and_in_migration_definitions(tmp_path: Path) -> None:
    assert not declares_vectors(MIGRATIONS, [Plain])
    assert declares_vectors([], [Embedded])
    sql = tmp_path / "001.sql"
    sql.write_text("CREATE EXTENSION IF NOT EXISTS vector;\nCREATE TABLE item (id serial, v vector(3));\n")
    assert declares_vectors([Migration.from_sql_file("items", sql)])
    assert declares_vectors(
        [Migration("halfvec_col", lambda m: m.sql("ALTER TABLE t ADD COLUMN h halfvec(8)"))]
    )


def test_headroom_counts_every_worker_pool() -> None:
    report = ExtendedPreflightReport(
        connection_pool_size=100, server_max_connections=100, current_connections=5
    )
    _connection_headroom(report, None, False)  # type: ignore[arg-type]
    assert report.checks[-1].level.value == "warn"  # 100 > 95 free
    report = ExtendedPreflightReport(
        connection_pool_size=20, server_max_connections=100, current_connections=5
    )
    report.workers = 4
    _connection_headroom(report, None, False)  # type: ignore[arg-type]
    assert report.checks[-1].level.value == "pass"
    report.workers = 5
    _connection_headroom(report, None, False)  # type: ignore[arg-type]
    assert "5 workers x POOL_MAX_CONNECTIONS 20 = 100" in report.checks[-1].detail


def test_web_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert _web_concurrency() == 1
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert _web_concurrency() == 4
    monkeypatch.setenv("WEB_CONCURRENCY", "four")
    with pytest.raises(ConfigurationError, match="WEB_CONCURRENCY"):
        _web_concurrency()


def test_plan_warns_on_a_table_that_does_not_exist(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path}/plan.db")
    try:
        missing = [
            Migration("add_to_missing", lambda m: m.add_column("nosuch", "x", IntegerField(default=0)))
        ]
        codes = [w.code for w in preview_migration(db, missing).warnings]
        assert "missing_table" in codes
        fine = [w.code for w in preview_migration(db, MIGRATIONS).warnings]  # creates its tables first
        assert "missing_table" not in fine
    finally:
        db.close()
