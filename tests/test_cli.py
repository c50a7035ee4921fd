from __future__ import annotations

from typer.testing import CliRunner

from autoshrink.cli import app


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("search", "best", "ui", "bench"):
        assert f" {command} " in result.output, command


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


def test_search_shows_progress_without_a_terminal(tmp_path) -> None:
    # Redirected to a file, the search used to print nothing until the final table.
    from tests.tiny import write_files

    files = write_files(tmp_path)
    result = CliRunner().invoke(
        app,
        ["search", "--workload", f"{files['workload']}:tiny", "--latency-budget-ms", "1000", "--trials", "2",
         "--space", str(files["space"]), "--hardware", str(files["hardware"]),
         "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"loading workload '{files['workload']}:tiny'"
    assert any("measuring the uncompressed model" in line for line in lines)
    trial_lines = [line for line in lines if "done," in line]
    assert len(trial_lines) == 2 and "trial 0 " in trial_lines[0] and "2/2 done" in trial_lines[1]
    assert "best under budget" in result.output and "registered: models:/autoshrink-" in result.output


def test_search_reads_a_run_file_and_flags_override_it(tmp_path) -> None:
    from tests.tiny import write_files

    files = write_files(tmp_path)
    run = tmp_path / "run.yaml"
    run.write_text(
        f"workload: {{spec: '{files['workload']}:tiny', classes: 3}}\n"
        "budget: {latency_ms: 1000}\nspace: space.yaml\nhardware: hw.yaml\ntrials: 1\nexperiment: from-file\n"
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(app, ["search", "--config", str(run), "--trials", "2", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("from-file")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("autoshrink.role") == "search"][0]
    logged = client.download_artifacts(parent.info.run_id, "run.yaml", str(tmp_path / "dl"))
    import yaml

    effective = yaml.safe_load(open(logged))
    assert effective["trials"] == 2 and effective["workload"]["classes"] == 3  # flag over file; file options kept
    assert effective["space"]["bits"] == [32, 8]
