"""The CLI: help lists subcommands, package errors are one line on stderr with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from api.db.cli import build_parser, main


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run([sys.executable, "-m", "api.db", "--help"], capture_output=True, text=True, check=True)
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    names = list(subparsers.choices)  # type: ignore[union-attr]
    assert "info" in names
    for name in names:
        assert name in result.stdout


def test_package_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--database", "oracle://scott:hunter2@db/orcl", "info"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unsupported scheme")
    assert "hunter2" not in captured.err


def test_missing_database_url(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["info"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err
