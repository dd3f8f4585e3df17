"""Deploy subcommands end to end: migrate --to, rollback, sql, mark-applied, repair, status --check."""

from __future__ import annotations

import json

import pytest

from api.db.cli import main

SPEC = "rollback_app:MIGRATIONS"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_deploy_control_commands(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--database", db_url, "--migrations", SPEC)
    code, out, _ = run(capsys, *base, "migrate", "--to", "create_book")
    assert code == 0 and "2 applied" in out
    code, out, _ = run(capsys, *base, "status", "--check")
    assert code == 1 and out.count("pending") == 4
    code, out, _ = run(capsys, *base, "sql", "age_and_index")
    assert code == 0 and "age" in out and "CREATE" in out.upper()
    code, out, _ = run(capsys, *base, "migrate")
    assert code == 0 and "4 applied" in out
    code, out, _ = run(capsys, *base, "sql", "age_and_index", "--down")
    assert code == 0 and "DROP" in out.upper() and "tag" in out

    code, out, _ = run(capsys, *base, "rollback", "--steps", "2", "--dry-run")
    assert code == 0 and "editor_and_rename" in out and "retype_title" in out and "nothing changed" in out
    code, out, _ = run(capsys, *base, "rollback", "--to", "age_and_index", "--json")
    assert code == 0 and json.loads(out)["rolled_back"] == ["editor_and_rename", "retype_title",
                                                            "rename_and_relax"]
    code, out, _ = run(capsys, *base, "status", "--check")
    assert code == 1 and out.count("rolled_back") == 3

    code, out, _ = run(capsys, *base, "mark-applied", "rename_and_relax", "--reason", "done by hand")
    assert code == 0 and "done by hand" in out
    code, _, err = run(capsys, *base, "mark-applied", "rename_and_relax")
    assert code == 2 and err.count("\n") == 1 and "only records pending" in err
    code, _, err = run(capsys, *base, "rollback", "--steps", "1")
    assert code == 2 and "cannot be rolled back" in err and err.count("\n") == 1

    edited = ("--database", db_url, "--migrations", "rollback_app:EDITED")
    code, out, _ = run(capsys, *edited, "status", "--check")
    assert code == 1 and "CHANGED" in out
    code, out, _ = run(capsys, *edited, "repair", "create_author", "--accept-checksum")
    assert code == 0 and "no longer reported" in out


@pytest.mark.parametrize("argv", [("rollback", "--to", "nope"), ("sql", "nope"), ("mark-applied", "nope"),
                                  ("migrate", "--to", "nope"), ("repair", "nope", "--accept-checksum")])
def test_an_unknown_name_is_one_line(
    db_url: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, _, err = run(capsys, "--database", db_url, "--migrations", SPEC, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "nope" in err
