"""What `search()` refuses up front, and how a user's broken pieces are reported: one clear line,
or a failed trial with its error recorded, never a traceback for a user mistake."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from autoshrink.config import ConfigError
from autoshrink.plan import Plan
from autoshrink.workloads import Workload
from tests.searching.conftest import completed, runs, tiny_search
from tests.tiny import tiny_workload

# -- wrong arguments: one clear error before anything runs -----------------------------------------


def test_search_of_something_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes an autoshrink Workload or a torch.nn.Module, got str"):
        tiny_search(tmp_path, "resnet18")


def test_search_of_a_model_without_its_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="also needs eval_data, example_input, test_data"):
        tiny_search(tmp_path, torch.nn.Linear(2, 2), train_data=(torch.randn(4, 2),))


def test_workload_and_loose_data_together(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    with pytest.raises(ConfigError, match="either a Workload or a model with data"):
        tiny_search(tmp_path, wl, eval_data=wl.val)


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
        tiny_search(tmp_path, tiny_workload(tmp_path), budget={"latency_ms": 1.0})


@pytest.mark.parametrize("trials", [0, -3, 2.5, True])
def test_trials_not_a_positive_integer(tmp_path: Path, trials: Any) -> None:
    with pytest.raises(ConfigError, match="trials must be an integer >= 1"):
        tiny_search(tmp_path, tiny_workload(tmp_path), trials=trials)


def test_experiment_name_that_cannot_be_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment name 'my exp/1' must be"):
        tiny_search(tmp_path, tiny_workload(tmp_path), experiment="my exp/1")


def test_unknown_sampler(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sampler must be one of \('tpe', 'tpe-multivariate', 'nsga2', 'random'\)"):
        tiny_search(tmp_path, tiny_workload(tmp_path), sampler="cmaes")


def test_space_and_hardware_of_the_wrong_type(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    with pytest.raises(ConfigError, match="space must be an autoshrink.SearchSpace"):
        tiny_search(tmp_path, wl, space={"bits": [8]})
    with pytest.raises(ConfigError, match="hardware must be an autoshrink.HardwareProfile"):
        tiny_search(tmp_path, wl, hardware="fast")


def test_model_whose_weights_were_never_loaded(tmp_path: Path) -> None:
    from autoshrink.pipeline import compress

    with torch.device("meta"):
        model = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="parameters on meta .weights not loaded."):
        compress(model, Plan(), train_data=(torch.randn(4, 4),), example_input=torch.randn(1, 4))


# -- the workload itself is wrong: the baseline says so, once ---------------------------------------


def test_unlabelled_validation_data_is_scored_by_agreement_with_the_original(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    unlabelled = Workload("u", wl.model, wl.train, (wl.val[0],), wl.test, wl.example_input)
    result = tiny_search(tmp_path, unlabelled)
    assert result.baseline.measurement.metric == "agreement"
    assert result.baseline.measurement.accuracy == 1.0  # the original agrees with itself
    assert all(c.measurement.metric == "agreement" for c in result.pareto)


def test_validation_data_the_model_cannot_take(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    labels_as_inputs = Workload("u", wl.model, wl.train, (wl.val[1].view(-1, 1, 1, 1).repeat(1, 3, 8, 8),), wl.test, wl.example_input)
    with pytest.raises(ConfigError, match="could not be measured.*evaluate function 'agreement' raised RuntimeError"):
        tiny_search(tmp_path, labels_as_inputs)


def test_example_input_of_the_wrong_shape(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    wrong = Workload("w", wl.model, wl.train, wl.val, wl.test, torch.randn(1, 5, 8, 8))
    with pytest.raises(ConfigError, match="could not be measured"):
        tiny_search(tmp_path, wrong)


def test_evaluate_that_fails_on_the_uncompressed_model(tmp_path: Path) -> None:
    def broken(artifact, data):
        raise KeyError("label_column")

    with pytest.raises(ConfigError, match="could not be measured.*evaluate function 'broken' raised KeyError"):
        tiny_search(tmp_path, tiny_workload(tmp_path, evaluate=broken))


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

    result = tiny_search(tmp_path, tiny_workload(tmp_path, evaluate=flaky), trials=4)
    assert result.n_failed >= 1 and result.n_complete >= 1 and result.n_failed + result.n_complete == 4
    assert all(message in e for e in result.failures.values())
    failed_runs = [r for r in runs(tmp_path, "e") if r.info.status == "FAILED"]
    assert len(failed_runs) == result.n_failed and all(message in r.data.tags["error"] for r in failed_runs)


def test_a_model_in_train_mode_is_searched_and_left_in_train_mode(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    wl.model.train()
    result = tiny_search(tmp_path, wl, trials=2)
    assert result.n_complete == 2 and wl.model.training


# -- the same experiment, another workload: refused, the finished trials kept -----------------------


def test_changed_workload_under_the_same_experiment_is_refused(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    tiny_search(tmp_path, wl, trials=1)
    other = Workload("other", wl.model, wl.train, wl.val, wl.test, wl.example_input)
    with pytest.raises(ConfigError, match="already exists with a different workload"):
        tiny_search(tmp_path, other, trials=1)
    assert len(completed(tmp_path)) == 1


# -- relative budgets: fixed from the baseline measured here, once per study -----------------------


def test_a_speedup_budget_is_the_baseline_latency_over_x_and_a_resume_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from autoshrink.config import Budget
    from autoshrink.searching import driver
    from tests.searching.conftest import client

    said: list[str] = []
    wl = tiny_workload(tmp_path)
    first = tiny_search(tmp_path, wl, trials=1, budget=Budget(speedup=2, size_ratio=1.5), progress=lambda p: said.append(p.last))
    base = first.baseline.measurement
    assert first.budget is not None
    assert first.budget.latency_ms == round(base.latency_ms / 2, 12)
    assert first.budget.size_mb == round(base.size_bytes / 1e6 / 1.5, 12)
    assert first.baseline.violations["latency_ms"] > 0  # the baseline itself is judged by it: too slow
    logged = client(tmp_path).get_run(first.parent_run_id).data.metrics
    assert logged["budget_latency_ms_resolved"] == first.budget.latency_ms
    assert any(line.startswith(f"budget: latency <= {first.budget.latency_ms:.3f} ms (2x faster") for line in said)

    # A resumed search measures its baseline again (here: ten times slower); the limits its
    # finished trials were judged by stay.
    measure = driver._baseline

    def slower(*args: Any) -> Any:
        candidate, host = measure(*args)
        m = candidate.measurement
        return replace(candidate, measurement=replace(m, latency_ms=10 * m.latency_ms)), host

    monkeypatch.setattr(driver, "_baseline", slower)
    said.clear()
    second = tiny_search(tmp_path, wl, trials=2, budget=Budget(speedup=2, size_ratio=1.5), progress=lambda p: said.append(p.last))
    assert second.budget == first.budget
    assert any("kept from the study's first run" in line for line in said)
    assert len(completed(tmp_path, "e")) == 2


def test_a_resume_with_another_speedup_is_refused(tmp_path: Path) -> None:
    from autoshrink.config import Budget

    wl = tiny_workload(tmp_path)
    tiny_search(tmp_path, wl, trials=1, budget=Budget(speedup=2))
    with pytest.raises(ConfigError, match=r"different budget \(was {'speedup': 2}, now {'speedup': 3}\)"):
        tiny_search(tmp_path, wl, trials=2, budget=Budget(speedup=3))


# -- a wall-clock budget: no trial starts after it, the best so far is registered ------------------


def test_a_time_budget_stops_starting_trials_and_registers_the_best_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    wl = tiny_workload(tmp_path)
    real = time.monotonic

    def progress(p: Any) -> None:
        if p.stage == "trial":  # the hour is up once the first trial has finished
            monkeypatch.setattr(time, "monotonic", lambda: real() + 7200)

    result = tiny_search(tmp_path, wl, trials=None, time_budget_s=3600, progress=progress)
    assert result.n_complete == 1 and len(completed(tmp_path, "e")) == 1
    assert result.stopped is not None and result.stopped.startswith("time budget of 1h00m reached after")
    assert result.registered_model is not None and result.best is not None
    assert result.message.endswith(f"({result.stopped})")
    from tests.searching.conftest import client

    assert client(tmp_path).get_run(result.parent_run_id).data.tags["stopped"] == result.stopped


def test_a_time_budget_shorter_than_the_baseline_runs_no_trial_and_says_so(tmp_path: Path) -> None:
    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=5, time_budget_s=0.001)
    assert result.n_complete == 0 and result.best is None and result.registered_model is None
    assert result.message.startswith("NO candidate met the budget (0 measured)")
    assert "time budget of 0s reached" in result.message


def test_no_trial_count_needs_a_time_budget(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trials is required without a time budget"):
        tiny_search(tmp_path, tiny_workload(tmp_path), trials=None)


def test_the_ray_searcher_asks_for_no_trial_after_the_deadline() -> None:
    from autoshrink.searching.ray_searcher import DriverSearch

    search = DriverSearch(None, None, None, Path("."), (), deadline=0.0)  # type: ignore[arg-type]
    assert search.suggest("t1") is None and not search.pending  # nothing begun, nothing asked of the study


# -- peak memory: measured for every candidate, and a limit like the others ------------------------


def test_a_memory_budget_between_two_runtimes_marks_the_bigger_candidates_infeasible(tmp_path: Path) -> None:
    from autoshrink.config import Budget
    from autoshrink.measuring.memory import runtime_footprint_mb

    torch_mb, ort_mb = runtime_footprint_mb("torch"), runtime_footprint_mb("onnxruntime")
    assert torch_mb > ort_mb + 100  # importing torch alone costs more than the whole ONNX Runtime process
    limit = (torch_mb + ort_mb) / 2
    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=4, budget=Budget(latency_ms=1000.0, memory_mb=limit))
    measured = [result.baseline, *result.pareto]
    assert all(c.measurement.peak_memory_mb > 0 for c in measured)
    assert result.baseline.measurement.runtime == "torch" and result.baseline.violations["memory_mb"] > 0
    assert result.best is not None and result.best.measurement.runtime == "onnxruntime"
    assert result.best.measurement.peak_memory_mb < limit
    trial_runs = [r for r in runs(tmp_path, "e") if r.data.tags.get("autoshrink.role") == "trial"]
    assert len(trial_runs) == 4 and all(r.data.metrics["peak_memory_mb"] > 0 for r in trial_runs)


def test_peak_memory_is_an_objective_where_asked_for(tmp_path: Path) -> None:
    import optuna

    from tests.searching.conftest import study

    tiny_search(tmp_path, tiny_workload(tmp_path), trials=3, memory_objective=True)
    found = study(tmp_path, "e")
    assert len(found.directions) == 3 and found.directions[2] == optuna.study.StudyDirection.MINIMIZE
    done = [t for t in found.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.values[2] == t.user_attrs["outcome"]["measurement"]["peak_memory_mb"] > 0 for t in done)


def test_peak_memory_cannot_be_an_objective_where_it_cannot_be_measured(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.config import ConfigError
    from autoshrink.measuring import memory

    monkeypatch.setattr(memory, "memory_status", lambda: None)
    with pytest.raises(ConfigError, match="peak memory cannot be measured on this system"):
        tiny_search(tmp_path, tiny_workload(tmp_path), trials=1, memory_objective=True)
