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


def test_bad_budget_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["search", "--latency-budget-ms", "-1", "--trials", "1"])
    assert result.exit_code == 2
    assert "Budget.latency_ms must be a positive number" in result.output
    assert "Traceback" not in result.output


def test_bad_space_file_is_one_clear_line(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("bits: [32, 3]\n")
    result = CliRunner().invoke(app, ["search", "--latency-budget-ms", "1", "--space", str(space)])
    assert result.exit_code == 2
    assert "space.bits values must be in (32, 8, 4)" in result.output
    assert "Traceback" not in result.output


def test_best_of_unknown_experiment(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(app, ["best", "--experiment", "nope", "--tracking-uri", uri])
    assert result.exit_code == 2 and "no MLflow store" in result.output
    assert not (tmp_path / "mlflow.db").exists()  # looking did not create a store


def test_best_of_unknown_experiment_in_a_real_store(tmp_path) -> None:
    from autoshrink.tracking import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exists")
    result = CliRunner().invoke(app, ["best", "--experiment", "nope", "--tracking-uri", uri])
    assert result.exit_code == 2 and "no experiment 'nope'" in result.output
    assert tracker.client.get_experiment_by_name("nope") is None
    result = CliRunner().invoke(app, ["best", "--experiment", "exists", "--tracking-uri", uri])
    assert result.exit_code == 2 and "no model registered" in result.output
