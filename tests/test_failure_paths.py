"""What a hurried user does wrong, and what autoshrink answers: one clear line, or a failed trial
with its error recorded, never a traceback for a user mistake and never a lost finished trial."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from autoshrink.cli import app
from autoshrink.config import Budget, ConfigError, HardwareProfile
from autoshrink.plan import Plan
from autoshrink.searching import load_best, search
from autoshrink.store import StoreError
from autoshrink.workloads import Workload
from tests.searching.conftest import runs, study
from tests.tiny import HW, SPACE, tiny_workload, write_files

BUDGET = Budget(latency_ms=1000.0)


def _search(tmp: Path, wl: Any, trials: int = 2, experiment: str = "e", **kwargs: Any):
    options: dict[str, Any] = {"space": SPACE, "hardware": HW, "budget": BUDGET} | kwargs
    return search(wl, trials=trials, experiment=experiment, tracking_uri=f"sqlite:///{tmp}/mlflow.db", **options)


def _complete(tmp: Path, experiment: str = "e") -> dict[int, Any]:
    return {t.number: t.values for t in study(tmp, experiment).trials if t.state.name == "COMPLETE"}


def _assert_clean_store(tmp: Path, experiment: str, n: int) -> None:
    """Exactly ``n`` finished trials, one MLflow run each, nothing left RUNNING."""
    assert len(_complete(tmp, experiment)) == n
    all_runs = runs(tmp, experiment)
    trials = sorted(int(r.data.tags["autoshrink.trial"]) for r in all_runs if "autoshrink.trial" in r.data.tags)
    assert trials == sorted(_complete(tmp, experiment))
    assert all(r.info.status in ("FINISHED", "FAILED") for r in all_runs), [r.info.status for r in all_runs]


# -- wrong arguments: one clear error before anything runs -----------------------------------------


def test_search_of_something_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes an autoshrink Workload or a torch.nn.Module, got str"):
        _search(tmp_path, "resnet18")


def test_search_of_a_model_without_its_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="also needs eval_data, example_input, test_data"):
        _search(tmp_path, torch.nn.Linear(2, 2), train_data=(torch.randn(4, 2),))


def test_workload_and_loose_data_together(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    with pytest.raises(ConfigError, match="either a Workload or a model with data"):
        _search(tmp_path, wl, eval_data=wl.val)


def test_empty_validation_split(tmp_path: Path) -> None:
    x = torch.randn(8, 3)
    with pytest.raises(ConfigError, match="the val split is empty"):
        Workload("w", torch.nn.Linear(3, 2), (x, x[:, 0].long()), (x[:0], x[:0, 0].long()), (x,), x[:1])


def test_data_of_the_wrong_type(tmp_path: Path) -> None:
    x = torch.randn(8, 3)
    with pytest.raises(ConfigError, match="train data must be a torch Dataset, a DataLoader or a tuple"):
        Workload("w", torch.nn.Linear(3, 2), 42, (x,), (x,), x[:1])  # type: ignore[arg-type]


def test_example_input_that_is_not_a_tensor(tmp_path: Path) -> None:
    x = torch.randn(8, 3)
    with pytest.raises(ConfigError, match="example_input must be one batch .* a tensor, a tuple of tensors or a dict"):
        Workload("w", torch.nn.Linear(3, 2), (x,), (x,), (x,), [1.0, 2.0, 3.0])  # type: ignore[arg-type]


def test_budget_given_as_a_dict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"budget must be an autoshrink.Budget"):
        _search(tmp_path, tiny_workload(tmp_path), budget={"latency_ms": 1.0})


@pytest.mark.parametrize("trials", [0, -3, 2.5, True])
def test_trials_not_a_positive_integer(tmp_path: Path, trials: Any) -> None:
    with pytest.raises(ConfigError, match="trials must be an integer >= 1"):
        _search(tmp_path, tiny_workload(tmp_path), trials=trials)


def test_experiment_name_that_cannot_be_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment name 'my exp/1' must be"):
        _search(tmp_path, tiny_workload(tmp_path), experiment="my exp/1")


def test_unknown_sampler(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sampler must be one of \('tpe', 'tpe-multivariate', 'nsga2', 'random'\)"):
        _search(tmp_path, tiny_workload(tmp_path), sampler="cmaes")


def test_space_and_hardware_of_the_wrong_type(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    with pytest.raises(ConfigError, match="space must be an autoshrink.SearchSpace"):
        _search(tmp_path, wl, space={"bits": [8]})
    with pytest.raises(ConfigError, match="hardware must be an autoshrink.HardwareProfile"):
        _search(tmp_path, wl, hardware="fast")


def test_plan_with_a_wrongly_typed_field() -> None:
    with pytest.raises(ValueError, match="Plan.prune must be a number in"):
        Plan(prune="0.5")  # type: ignore[arg-type]


def test_hardware_profile_for_a_device_autoshrink_does_not_measure() -> None:
    with pytest.raises(ConfigError, match="HardwareProfile.device must be 'cpu'"):
        HardwareProfile(device="cuda")


def test_model_whose_weights_were_never_loaded(tmp_path: Path) -> None:
    from autoshrink.pipeline import compress

    with torch.device("meta"):
        model = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="parameters on meta .weights not loaded."):
        compress(model, Plan(), train_data=(torch.randn(4, 4),), example_input=torch.randn(1, 4))


# -- the workload itself is wrong: the baseline says so, once ---------------------------------------


def test_unlabelled_validation_data_without_evaluate(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    unlabelled = Workload("u", wl.model, wl.train, (wl.val[1][0].unsqueeze(0).repeat(8, 1, 1, 1),), wl.test, wl.example_input)
    with pytest.raises(ConfigError, match="could not be measured.*accuracy needs labelled data"):
        _search(tmp_path, unlabelled)


def test_example_input_of_the_wrong_shape(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    wrong = Workload("w", wl.model, wl.train, wl.val, wl.test, torch.randn(1, 5, 8, 8))
    with pytest.raises(ConfigError, match="could not be measured"):
        _search(tmp_path, wrong)


def test_evaluate_that_fails_on_the_uncompressed_model(tmp_path: Path) -> None:
    def broken(artifact, data):
        raise KeyError("label_column")

    with pytest.raises(ConfigError, match="could not be measured.*evaluate function 'broken' raised KeyError"):
        _search(tmp_path, tiny_workload(tmp_path, evaluate=broken))


# -- a candidate goes wrong: recorded as failed, the search goes on ---------------------------------


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        (ZeroDivisionError("division by zero"), "evaluate function 'flaky' raised ZeroDivisionError: division by zero"),
        (math.nan, "evaluate function 'flaky' returned nan"),
        ("high", "evaluate function 'flaky' must return a number"),
    ],
    ids=["raises", "nan", "not-a-number"],
)
def test_evaluate_that_breaks_on_some_candidates(tmp_path: Path, returns: Any, message: str) -> None:
    def flaky(artifact, data):
        if artifact.plan.bits == 8:
            if isinstance(returns, Exception):
                raise returns
            return returns
        return 0.5

    result = _search(tmp_path, tiny_workload(tmp_path, evaluate=flaky), trials=4)
    assert result.n_failed >= 1 and result.n_complete >= 1 and result.n_failed + result.n_complete == 4
    assert all(message in e for e in result.failures.values())
    failed_runs = [r for r in runs(tmp_path, "e") if r.info.status == "FAILED"]
    assert len(failed_runs) == result.n_failed and all(message in r.data.tags["error"] for r in failed_runs)


def test_a_model_in_train_mode_is_searched_and_left_in_train_mode(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    wl.model.train()
    result = _search(tmp_path, wl, trials=2)
    assert result.n_complete == 2 and wl.model.training


# -- the store: read-only, shared, full ------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_store(tmp_path: Path) -> None:
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StoreError, match="cannot write to the store folder"):
            search(tiny_workload(tmp_path), budget=BUDGET, space=SPACE, hardware=HW, trials=1,
                   tracking_uri=f"sqlite:///{store}/mlflow.db")  # fmt: skip
    finally:
        store.chmod(stat.S_IRWXU)


def test_store_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write to the store folder"):
        search(tiny_workload(tmp_path), budget=BUDGET, space=SPACE, hardware=HW, trials=1,
               tracking_uri=f"sqlite:///{blocker}/sub/mlflow.db")  # fmt: skip


def test_the_same_experiment_searched_twice_at_once_is_refused(tmp_path: Path) -> None:
    from autoshrink.store import experiment_lock

    with experiment_lock(tmp_path, "e"), pytest.raises(StoreError, match=r"'e' is being searched right now by pid \d+"):
        _search(tmp_path, tiny_workload(tmp_path))


def test_disk_full_while_saving_a_candidate_stops_cleanly_and_resumes(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.artifact import Artifact

    real_save = Artifact.save
    saved: list[str] = []

    def save(self, path):
        saved.append(str(path))
        if len(saved) == 3:  # baseline, trial 0, then the disk is full
            raise OSError(28, "No space left on device")
        return real_save(self, path)

    monkeypatch.setattr(Artifact, "save", save)
    wl = tiny_workload(tmp_path)
    with pytest.raises(StoreError, match="cannot save the candidate's artifact.*No space left on device"):
        _search(tmp_path, wl, trials=3)
    assert len(_complete(tmp_path)) == 1
    monkeypatch.setattr(Artifact, "save", real_save)
    result = _search(tmp_path, wl, trials=3)
    assert result.n_complete == 3
    _assert_clean_store(tmp_path, "e", 3)


# -- interrupted at every stage: nothing finished is lost, re-running resumes ----------------------


def _interrupt_once(monkeypatch, owner: Any, name: str, after: int = 0) -> list[int]:
    """Make ``owner.name`` raise KeyboardInterrupt on its call number ``after`` (once)."""
    real = getattr(owner, name)
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == after + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


@pytest.mark.parametrize(
    ("where", "owner", "name", "after"),
    [
        ("baseline", "autoshrink.searching.trial.TrialRunner", "build", 0),
        ("compression", "autoshrink.searching.trial.TrialRunner", "build", 2),
        ("measurement", "autoshrink.searching.trial.TrialRunner", "measure", 2),
        ("recording", "autoshrink.searching.recorder.Recorder", "record", 1),
        ("model logging", "autoshrink.tracking.Tracker", "log_model", 0),
        ("registration", "autoshrink.tracking.Tracker", "register_best", 0),
    ],
)
def test_ctrl_c_at_every_stage_then_resume(tmp_path: Path, monkeypatch, where, owner, name, after) -> None:
    import importlib

    module_name, _, cls_name = owner.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    wl = tiny_workload(tmp_path)
    _interrupt_once(monkeypatch, cls, name, after)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, wl, trials=3)
    before = _complete(tmp_path) if (tmp_path / "optuna.db").exists() else {}
    monkeypatch.undo()
    result = _search(tmp_path, wl, trials=3)
    after_ = _complete(tmp_path)
    assert all(after_[n] == v for n, v in before.items()), f"{where}: a finished trial changed or was lost"
    assert result.n_complete == 3 and result.registered_model == "autoshrink-e@best"
    _assert_clean_store(tmp_path, "e", 3)
    pareto_runs = [r for r in runs(tmp_path, "e") if r.data.tags.get("pareto") == "True"]
    assert pareto_runs and all("autoshrink.model_uri" in r.data.tags for r in pareto_runs)
    parents = [r for r in runs(tmp_path, "e") if r.data.tags.get("autoshrink.role") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_an_interrupted_search_marks_its_run_killed(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.searching.trial import TrialRunner

    _interrupt_once(monkeypatch, TrialRunner, "measure", 1)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, tiny_workload(tmp_path), trials=3)
    parent = [r for r in runs(tmp_path, "e") if r.data.tags.get("autoshrink.role") == "search"][0]
    assert parent.info.status == "KILLED"


def test_a_bug_outside_build_and_measure_stops_the_search_and_resume_cleans_up(tmp_path: Path, monkeypatch) -> None:
    # A ValueError raised while sampling or recording used to become an unrecorded FAIL that the
    # search skipped silently (one trial fewer) and that left its MLflow run RUNNING.
    from autoshrink.searching.recorder import Recorder

    real = Recorder.record
    calls: list[int] = []

    def record(self, trial, run_id, outcome):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("bug in recording")
        return real(self, trial, run_id, outcome)

    monkeypatch.setattr(Recorder, "record", record)
    wl = tiny_workload(tmp_path)
    with pytest.raises(ValueError, match="bug in recording"):
        _search(tmp_path, wl, trials=3)
    monkeypatch.undo()
    result = _search(tmp_path, wl, trials=3)
    assert result.n_complete == 3 and result.n_failed == 0
    _assert_clean_store(tmp_path, "e", 3)


def test_changed_workload_under_the_same_experiment_is_refused(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    _search(tmp_path, wl, trials=1)
    other = Workload("other", wl.model, wl.train, wl.val, wl.test, wl.example_input)
    with pytest.raises(ConfigError, match="already exists with a different workload"):
        _search(tmp_path, other, trials=1)
    assert len(_complete(tmp_path)) == 1


def test_load_best_under_a_budget_nothing_meets(tmp_path: Path) -> None:
    _search(tmp_path, tiny_workload(tmp_path), trials=2)
    with pytest.raises(LookupError, match="no logged Pareto model of 'e' meets"):
        load_best("e", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", budget=Budget(latency_ms=1e-9))


# -- the command line ------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_line_error(result: Any, message: str) -> None:
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
        (["--workload-arg", "oops"], "--workload-arg takes key=value"),
    ],
)
def test_cli_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _one_line_error(_cli("search", "--latency-budget-ms", "5", "--tracking-uri", uri, *args), message)


def test_cli_without_a_budget(tmp_path: Path) -> None:
    _one_line_error(_cli("search", "--trials", "1"), "a latency budget is required")


def test_cli_workload_function_returning_the_wrong_type(tmp_path: Path) -> None:
    files = write_files(tmp_path)
    result = _cli("search", "--latency-budget-ms", "5", "--workload", f"{files['workload']}:not_a_workload")
    _one_line_error(result, "returned a dict, not an autoshrink.workloads.Workload")


def test_cli_bad_hardware_and_run_files(tmp_path: Path) -> None:
    hw = tmp_path / "hw.yaml"
    hw.write_text("threads: two\n")
    _one_line_error(_cli("search", "--latency-budget-ms", "5", "--hardware", str(hw)), "HardwareProfile.threads must be an integer")
    run = tmp_path / "run.yaml"
    run.write_text("budget: {latency_ms: 5}\ntrails: 3\n")
    _one_line_error(_cli("search", "--config", str(run)), "unknown key(s) ['trails']")
    run.write_text("workload: digits\n")
    _one_line_error(_cli("search", "--config", str(run)), "budget must be a mapping")


def test_ui_without_a_store(tmp_path: Path) -> None:
    _one_line_error(_cli("ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"), "no MLflow store at")
    assert not (tmp_path / "none.db").exists()


def test_ui_on_a_port_in_use(tmp_path: Path) -> None:
    import socket

    from autoshrink.tracking import Tracker

    Tracker(f"sqlite:///{tmp_path}/mlflow.db", "x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = _cli("ui", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--port", str(port))
    _one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
