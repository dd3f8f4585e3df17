"""The CLI: help lists subcommands, package errors are one line on stderr with exit code 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.db.cli import build_parser, main


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.db", "--help"], capture_output=True, text=True, check=True
    )
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


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--database", "sqlite:///x.db", "--migrations", "m:M", "status"],
        ["status", "--json", "--database", "sqlite:///x.db", "--migrations", "m:M"],
        ["--database", "sqlite:///x.db", "status", "--migrations", "m:M", "--json"],
    ],
    ids=["before", "after", "mixed"],
)
def test_global_options_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.json, args.database, args.migrations, args.command) == (
        True, "sqlite:///x.db", "m:M", "status"
    )


def test_global_option_after_the_subcommand_does_not_reset_one_before() -> None:
    args = build_parser().parse_args(["--database", "sqlite:///a.db", "--json", "info"])
    assert args.database == "sqlite:///a.db" and args.json is True
    assert build_parser().parse_args(["info"]).json is False


def test_unreachable_host_with_no_retry_fails_fast_in_one_line() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "api.db", "--database", "postgresql://u:secret@127.0.0.1:1/x", "info",
         "--no-retry", "--connect-timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert elapsed < 2.0, f"took {elapsed:.1f}s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect"), result.stderr
    assert "slow query" not in result.stderr and "secret" not in result.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pipe.db"
    shell = (
        f"{sys.executable} -m api.db --database {url} info --json | head -c 1 >/dev/null; "
        "echo ${PIPESTATUS[0]}"
    )
    for _ in range(5):  # the race depends on timing: try a few times
        result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "0" and "Broken pipe" not in result.stderr, result.stderr


def test_broken_pipe_returns_0_without_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from api.db import cli

    def closed_pipe(database: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "server_info", closed_pipe)
    assert main(["--database", f"sqlite:///{tmp_path}/p.db", "info", "--json"]) == 0
    assert capsys.readouterr().err == ""
