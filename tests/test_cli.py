from __future__ import annotations

from typer.testing import CliRunner

from autoshrink.cli import app


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "bench" in result.output


def test_bench_help() -> None:
    result = CliRunner().invoke(app, ["bench", "compression", "--help"])
    assert result.exit_code == 0 and "--threads" in result.output
