"""makemigration against real databases: round trips over every field type, renames, drops, the CLI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import authoring_models as am
import pytest

from api.db import migrate_db, verify_schema
from api.db.cli import main
from api.db.exceptions import ConfigurationError
from api.db.migrate.makemigration import make_migration

ROOT = Path(__file__).resolve().parents[3]
RENAME = ("mk_item", "heading", "title")


def models_for(engine: Any) -> list[Any]:
    return am.PG_MODELS if engine.family == "postgres" else am.MODELS


def create_old_schema(db: Any) -> None:
    with db.bind_ctx(am.OLD_MODELS):
        db.create_tables(am.OLD_MODELS)
        am.OldOwner.create(id=1, name="ada")
        am.OldItem.create(owner_id=1, heading="kept across the rename", count=3, body="x", obsolete="gone")


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"generated_{Path(path).stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ruff(path: str) -> subprocess.CompletedProcess[str]:
    # Generated modules keep each call on one line: the project's line length does not apply to them.
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "ruff.toml"),
               "--extend-ignore", "E501", path]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("start", ["empty", "older"])
def test_round_trip(db: Any, engine: Any, tmp_path: Path, start: str) -> None:
    models = models_for(engine)
    if start == "older":
        create_old_schema(db)
    renames = [RENAME] if start == "older" else []
    result = make_migration(db, models, source_spec="authoring_models:MODELS", out=tmp_path / "gen.py",
                            renames=renames, allow_drop=True)
    assert result.written and result.path is not None
    checked = ruff(result.path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    module = load(result.path)
    assert [m.name for m in module.MIGRATIONS] == list(result.migrations)
    assert len(set(result.migrations)) == len(result.migrations)
    report = migrate_db(db, module.MIGRATIONS)
    assert not report.failed and len(report.applied) == len(result.migrations)
    assert [str(d) for d in verify_schema(db, models).differences] == []
    again = make_migration(db, models, source_spec="authoring_models:MODELS", out=tmp_path / "again.py")
    assert not again.written and not (tmp_path / "again.py").exists()
    if start == "older":
        assert "rename_column_mk_item_heading_title" in result.migrations
        with db.bind_ctx(models):
            assert am.Item.get().title == "kept across the rename"


def test_names_are_stable(db: Any, engine: Any, tmp_path: Path) -> None:
    create_old_schema(db)
    first = make_migration(db, am.MODELS, source_spec="m:M", out=tmp_path / "a.py", renames=[RENAME])
    second = make_migration(
        db, am.MODELS, source_spec="m:M", out=tmp_path / "b.py", renames=[RENAME], name="0002"
    )
    assert first.migrations and [f"0002.{n}" for n in first.migrations] == list(second.migrations)
    with pytest.raises(ConfigurationError, match="never overwritten"):
        make_migration(db, am.MODELS, source_spec="m:M", out=tmp_path / "a.py", renames=[RENAME])


def test_drops_need_allow_drop_and_renames_need_naming(db: Any, engine: Any, tmp_path: Path) -> None:
    create_old_schema(db)
    plain = make_migration(db, am.MODELS, source_spec="m:M", out=tmp_path / "plain.py")
    source = Path(str(plain.path)).read_text()
    assert "m.drop_column" not in source and "add_column_mk_item_title" in plain.migrations
    assert any(
        "mk_item.heading" in line and "--rename mk_item.heading:NEW" in line for line in plain.undecided
    )
    assert any("mk_item.obsolete" in line and "--allow-drop" in line for line in plain.undecided)
    assert "# - column mk_item.obsolete is not in the models" in source

    dropping = make_migration(db, am.MODELS, source_spec="m:M", out=tmp_path / "drop.py", renames=[RENAME],
                              allow_drop=True)
    assert "drop_column_mk_item_obsolete" in dropping.migrations
    assert "add_column_mk_item_title" not in dropping.migrations
    assert not any("heading" in line or "obsolete" in line for line in dropping.undecided)

    with pytest.raises(ConfigurationError, match="no column mk_item.nothere"):
        make_migration(db, am.MODELS, source_spec="m:M", renames=[("mk_item", "nothere", "title")])
    with pytest.raises(ConfigurationError, match="no new column mk_item.nothere"):
        make_migration(db, am.MODELS, source_spec="m:M", renames=[("mk_item", "heading", "nothere")])


@pytest.mark.engines("sqlite")
def test_cli(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["--database", db_url, "makemigration", "--models", "authoring_models:MODELS"]
    assert main([*base, "--name", "first", "--rename", "bad"]) == 2
    assert "expected table.old:new" in capsys.readouterr().err
    assert main([*base, "--name", "first"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 migration(s) to first.py" in out and "first.create_table_mk_owner" in out
    module = load(str(tmp_path / "first.py"))
    assert main(["--database", db_url, "--migrations", "first:MIGRATIONS", "migrate"]) == 0
    capsys.readouterr()
    assert len(module.MIGRATIONS) == 2
    assert main([*base, "--name", "second"]) == 0
    assert "no changes: the models match the database; nothing written" in capsys.readouterr().out
    assert not (tmp_path / "second.py").exists()
