from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autoshrink.cli import app
from tests.tiny import write_files


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("search", "best", "ui"):
        assert f" {command} " in result.output, command
    for gone in ("bench", "export-digits"):  # repository tools: python -m benchmarks, examples/export_digits.py
        assert f" {gone} " not in result.output, gone


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


def search_tiny(tmp_path: Path, *flags: str) -> tuple[dict[str, Path], Any]:
    """``autoshrink search`` of the tiny workload file on its small space and fast profile, with ``flags``."""
    files = write_files(tmp_path)
    result = CliRunner().invoke(
        app,
        ["search", "--workload", f"{files['workload']}:tiny", "--latency-budget-ms", "1000", *flags,
         "--space", str(files["space"]), "--hardware", str(files["hardware"]),
         "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return files, result


def test_search_shows_progress_without_a_terminal(tmp_path) -> None:
    # Redirected to a file, the search used to print nothing until the final table.
    files, result = search_tiny(tmp_path, "--trials", "2")
    lines = result.output.splitlines()
    assert lines[0] == f"loading workload '{files['workload']}:tiny'"
    assert any("measuring the uncompressed model" in line for line in lines)
    trial_lines = [line for line in lines if "done," in line]
    assert len(trial_lines) == 2 and "trial 0 " in trial_lines[0] and "2/2 done" in trial_lines[1]
    assert "best under budget" in result.output and "registered: models:/autoshrink-" in result.output


def test_a_time_budget_without_a_trial_count_runs_as_many_as_fit(tmp_path) -> None:
    _, result = search_tiny(tmp_path, "--time-budget", "0.01s")
    assert "searching trials for at most 0s of 'tiny'" in result.output
    assert "NO candidate met the budget (0 measured) (time budget of 0s reached after" in result.output


def test_search_reads_a_run_file_and_flags_override_it(tmp_path) -> None:
    from tests.tiny import write_files

    files = write_files(tmp_path)
    run = tmp_path / "run.yaml"
    run.write_text(
        f"workload: {{spec: '{files['workload']}:tiny', classes: 3}}\n"
        "budget: {latency_ms: 1000}\nspace: space.yaml\nhardware: hw.yaml\ntrials: 1\nexperiment: from-file\n"
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(
        app, ["search", "--config", str(run), "--trials", "2", "--tracking-uri", uri, "--speedup", "1.01"]
    )
    assert result.exit_code == 0, result.output
    # Both limits hold: the file's milliseconds and the flag's speed-up, resolved and shown.
    assert "budget: latency <= " in result.output and "(1.01x faster than the baseline)" in result.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("from-file")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("autoshrink.role") == "search"][0]
    logged = client.download_artifacts(parent.info.run_id, "run.yaml", str(tmp_path / "dl"))
    import yaml

    effective = yaml.safe_load(open(logged))
    assert effective["trials"] == 2 and effective["workload"]["classes"] == 3  # flag over file; file options kept
    assert effective["budget"] == {"latency_ms": 1000, "speedup": 1.01}
    assert effective["space"]["bits"] == [32, 8]


def test_flags_override_the_run_file_and_the_search_gets_it_whole(tmp_path, monkeypatch) -> None:
    import autoshrink.searching
    from autoshrink.config import ConfigError
    from autoshrink.runfile import RunConfig
    from tests.tiny import write_files

    files = write_files(tmp_path)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        f"workload: {{spec: '{files['workload']}:tiny', classes: 3}}\n"
        "budget: {latency_ms: 1000, size_mb: 4}\nspace: space.yaml\nhardware: hw.yaml\n"
        "trials: 1\nexperiment: from-file\nsampler: random\nseed: 5\npareto_floor: 0.2\n"
    )
    seen = []

    def fake_search(wl, run, *, backend=None, progress=None):
        seen.append((run, backend))
        raise ConfigError("stopped here")

    monkeypatch.setattr(autoshrink.searching, "search", fake_search)
    result = CliRunner().invoke(
        app,
        ["search", "--config", str(run_file), "--trials", "3", "--sampler", "tpe", "--latency-budget-ms", "7",
         "--no-warm-start", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
    )  # fmt: skip
    assert result.exit_code == 2 and "stopped here" in result.output, result.output
    (run, backend), = seen
    assert isinstance(run, RunConfig) and repr(backend) == "LocalBackend()"
    assert (run.trials, run.sampler, run.warm_start, run.budget.latency_ms) == (3, "tpe", False, 7)  # the flags
    assert (run.seed, run.pareto_floor, run.experiment, run.budget.size_mb) == (5, 0.2, "from-file", 4)  # the file
    assert run.workload_options == {"classes": 3} and run.space is not None and run.space.bits == (32, 8)
    assert run.accuracy_tolerance is RunConfig.default("accuracy_tolerance")  # neither: the field's default


def test_unknown_run_file_keys_are_one_line_before_anything_loads(tmp_path) -> None:
    run_file = tmp_path / "run.yaml"
    for body, message in (
        ("budget: {latency_ms: 5}\ntrails: 3\n", "unknown key(s) ['trails']"),
        ("budget: {latency_ms: 5}\nbackend: {kind: ray, max_trials: 2}\n", "backend: unknown key(s) ['max_trials']"),
    ):
        run_file.write_text(body)
        result = CliRunner().invoke(app, ["search", "--config", str(run_file)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "loading workload" not in result.output and "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), errors


def test_help_states_run_config_defaults() -> None:
    import typer

    from autoshrink.cli import TRACKING_URI_HELP
    from autoshrink.runfile import RunConfig

    helps = {p.name: p.help for p in typer.main.get_command(app).commands["search"].params}  # type: ignore[attr-defined]
    for setting in ("trials", "sampler", "seed", "pareto_floor", "workload"):
        assert f"(default: {RunConfig.default(setting)})" in helps[setting], setting
    assert helps["tracking_uri"] == TRACKING_URI_HELP


def _printed_result(tracking_uri: str, capsys) -> str:
    from types import SimpleNamespace

    from autoshrink._console import print_result

    result = SimpleNamespace(
        experiment="e", n_complete=1, n_failed=0, n_early_stopped=0, met_budget=True, message="best under budget", failures={},
        baseline=SimpleNamespace(measurement=SimpleNamespace(energy_method="none")), registered_model=None,
        tracking_uri=tracking_uri, budget=None, timings={},
    )  # fmt: skip
    print_result(result)  # type: ignore[arg-type]
    return capsys.readouterr().out


def test_the_result_names_a_store_only_when_it_is_not_the_default(tmp_path, monkeypatch, capsys) -> None:
    import autoshrink.searching.report as report
    from autoshrink.store import resolve_tracking_uri

    monkeypatch.setattr(report, "markdown_table", lambda result: [])  # no table: only the lines after it matter
    monkeypatch.setenv("AUTOSHRINK_HOME", str(tmp_path / "home"))
    out = _printed_result(resolve_tracking_uri(None), capsys)
    assert "inspect:    autoshrink ui\n" in out and "tracking_uri=" not in out
    other = f"sqlite:///{tmp_path}/elsewhere/.autoshrink/mlflow.db"  # ends like the default, is not it
    out = _printed_result(other, capsys)
    assert f"autoshrink ui --tracking-uri {other}" in out and f"tracking_uri={other!r}" in out


# -- what a hurried user types wrong: one line, exit code 2, no traceback --------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Any, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "imagenet-please"], "unknown workload 'imagenet-please'; a workload is one of"),
        (["--workload", "torchvision:resnet99", "--data", "digits"], "torchvision has no classification model 'resnet99'"),
        (["--workload", "torchvision:resnet18"], "torchvision:resnet18 needs data"),
        (["--workload", "torchvision:resnet18", "--data", "imagefolder:/nope"], "image folder /nope does not exist"),
        (["--workload", "torchvision:resnet18", "--data", "digits", "--weights", "IMAGENET1K_V1"],
         "are not in the local torch cache, and autoshrink never downloads at run time: put resnet18-"),
        (["--workload", "torchvision:resnet18", "--data", "digits", "--weights", "/nope/w.pt"], "weights file /nope/w.pt does not exist"),
        (["--workload", "digits", "--weights", "x"], "workload 'digits' does not take the option(s) ['weights']"),
        (["--workload", "no_such_pkg.models:make"], "cannot import module 'no_such_pkg.models'"),
        (["--trials", "0"], "trials must be an integer >= 1"),
        (["--experiment", "a b"], "experiment name 'a b' must be"),
        (["--sampler", "grid"], "sampler must be one of"),
        (["--speedup", "1"], "Budget.speedup must be a number > 1"),
        (["--size-ratio", "-2"], "Budget.size_ratio must be a number > 1"),
        (["--speedup", "fast"], "Invalid value for '--speedup'"),
        (["--time-budget", "soon"], "a time budget is seconds or a number with s, m or h (90s, 30m, 1.5h), got 'soon'"),
        (["--time-budget", "0m"], "the time budget must be positive"),
        (["--workload-arg", "oops"], "--workload-arg takes key=value"),
    ],
)
def test_cli_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert_one_line_error(invoke("search", "--latency-budget-ms", "5", "--tracking-uri", uri, *args), message)


def test_cli_without_a_budget(tmp_path: Path) -> None:
    assert_one_line_error(invoke("search", "--trials", "1"), "a latency budget is required")


def test_cli_workload_function_returning_the_wrong_type(tmp_path: Path) -> None:
    files = write_files(tmp_path)
    result = invoke("search", "--latency-budget-ms", "5", "--workload", f"{files['workload']}:not_a_workload")
    assert_one_line_error(result, "returned a dict, not an autoshrink.workloads.Workload")


def test_cli_bad_hardware_and_run_files(tmp_path: Path) -> None:
    hw = tmp_path / "hw.yaml"
    hw.write_text("threads: two\n")
    assert_one_line_error(invoke("search", "--latency-budget-ms", "5", "--hardware", str(hw)), "HardwareProfile.threads must be an integer")
    run = tmp_path / "run.yaml"
    run.write_text("budget: {latency_ms: 5}\ntrails: 3\n")
    assert_one_line_error(invoke("search", "--config", str(run)), "unknown key(s) ['trails']")
    run.write_text("workload: digits\n")
    assert_one_line_error(invoke("search", "--config", str(run)), "budget must be a mapping")


def test_early_stop_margin_takes_a_number_or_off(tmp_path) -> None:
    from autoshrink.cli import _margin
    from autoshrink.config import ConfigError

    assert _margin("0.02") == 0.02 and _margin("off") is None and _margin(None) is None
    with pytest.raises(ConfigError, match="--early-stop-margin takes a number or 'off'"):
        _margin("soon")
    files = write_files(tmp_path)
    result = CliRunner().invoke(app, ["search", "--workload", f"{files['workload']}:tiny", "--latency-budget-ms", "1000",
                                      "--trials", "1", "--early-stop-margin", "2"])  # fmt: skip
    assert result.exit_code == 2 and "early_stop_margin must be a number in [0, 1)" in result.output
