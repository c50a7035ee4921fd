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


def test_unlabelled_validation_data_without_evaluate(tmp_path: Path) -> None:
    wl = tiny_workload(tmp_path)
    unlabelled = Workload("u", wl.model, wl.train, (wl.val[1][0].unsqueeze(0).repeat(8, 1, 1, 1),), wl.test, wl.example_input)
    with pytest.raises(ConfigError, match="could not be measured.*accuracy needs labelled data"):
        tiny_search(tmp_path, unlabelled)


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
