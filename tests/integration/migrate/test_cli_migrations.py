"""The migration subcommands of ``python -m api.db`` against real databases."""

from __future__ import annotations

import json

import pytest

from api.db.cli import main

SPEC = "boot_child:MIGRATIONS"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_migrate_history_validate(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--database", db_url, "--migrations", SPEC)
    code, out, _ = run(capsys, *base, "status", "--check")
    assert code == 1 and out.count("pending") == 4
    code, out, _ = run(capsys, *base, "status", "--json")
    assert code == 0 and [line["status"] for line in json.loads(out)] == ["pending"] * 4

    code, out, _ = run(capsys, *base, "migrate")
    assert code == 0 and "4 applied" in out and "add_size_and_label" in out
    code, out, _ = run(capsys, *base, "migrate", "--json")
    assert code == 0 and json.loads(out)["fast_path"] is True

    code, out, _ = run(capsys, *base, "status", "--check")
    assert code == 0 and out.count("success") == 4
    header = out.splitlines()[0].split()
    assert header == ["name", "status", "applied_at", "duration", "drift"]

    code, out, _ = run(capsys, "--database", db_url, "history", "--json")
    rows = json.loads(out)
    assert (
        code == 0 and [r["status"] for r in rows] == ["success"] * 4 and all(r["installed_by"] for r in rows)
    )

    code, out, _ = run(capsys, *base, "validate")
    assert code == 0 and "none changed" in out


def test_repair_and_errors(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--database", db_url, "--migrations", SPEC, "repair", "create_item", "--clear")
    assert code == 2 and "no history row" in err
    code, _, err = run(capsys, "--database", db_url, "status")
    assert code == 2 and "--migrations" in err
    code, _, err = run(capsys, "--database", db_url, "--migrations", "boot_child:NOPE", "status")
    assert code == 2 and "no attribute NOPE" in err
