"""`RunConfig`: the one list of a search's settings, their defaults, and the two ways to pass them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from autoshrink.config import Budget, ConfigError, HardwareProfile
from autoshrink.runfile import RunConfig
from autoshrink.space import SearchSpace
from tests.tiny import HW, SPACE, tiny_workload

BUDGET = Budget(latency_ms=1000.0)


def test_a_run_config_round_trips_through_its_dict_and_yaml(tmp_path: Path) -> None:
    import yaml

    run = RunConfig(
        budget=Budget(latency_ms=2.0, size_mb=1.0), workload="torchvision:resnet18", workload_options={"data": "digits"},
        space=SearchSpace(bits=(32, 8)), hardware=HardwareProfile(threads=2), trials=7, experiment="rt", sampler="random",
        seed=3, backend={"kind": "ray", "max_concurrent_trials": 2}, accuracy_tolerance=0.01, pareto_floor=0.1,
        warm_start=False, energy_objective=False,
    )  # fmt: skip
    assert RunConfig.from_dict(run.to_dict()) == run
    assert RunConfig.from_dict(yaml.safe_load(run.to_yaml())) == run
    assert set(run.to_dict()) == {f.name for f in fields(RunConfig)} - {"workload_options"}


def test_defaults_are_written_once_on_the_fields() -> None:
    run = RunConfig(budget=BUDGET)
    for f in fields(RunConfig):
        if f.name != "budget":
            assert RunConfig.default(f.name) == getattr(run, f.name), f.name
    with pytest.raises(KeyError):
        RunConfig.default("budget")


def test_an_unknown_run_file_key_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("budget: {latency_ms: 5}\ntrails: 3\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "unknown key(s) ['trails']" in message


def test_wrong_setting_types_are_refused_by_the_record() -> None:
    with pytest.raises(ConfigError, match="budget must be an autoshrink.Budget"):
        RunConfig(budget={"latency_ms": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backend kind must be one of"):
        RunConfig(budget=BUDGET, backend={"kind": "k8s"})


def test_backend_options_are_the_backends_own_parameters() -> None:
    import inspect

    from autoshrink.searching.call import backend_for
    from autoshrink.searching.ray import RayBackend

    with pytest.raises(ConfigError, match=r"backend: unknown key\(s\) \['max_trials'\]") as info:
        backend_for({"kind": "ray", "max_trials": 2})
    assert all(name in str(info.value) for name in inspect.signature(RayBackend).parameters)
    with pytest.raises(ConfigError, match="the local backend takes no options"):
        backend_for({"kind": "local", "trial_cpus": 2})


def test_search_refuses_a_run_config_mixed_with_keywords(tmp_path: Path) -> None:
    from autoshrink.searching import search

    wl = tiny_workload(tmp_path)
    with pytest.raises(ConfigError, match="as a RunConfig or as keywords, not both"):
        search(wl, RunConfig(budget=BUDGET), trials=3)
    with pytest.raises(ConfigError, match="must be an autoshrink.RunConfig, got Budget"):
        search(wl, BUDGET)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['trails'\]"):
        search(wl, budget=BUDGET, trails=3)


def test_the_keyword_form_and_a_run_config_are_the_same_search(tmp_path: Path) -> None:
    """The keyword form resumes the study a RunConfig opened: a different sampler, seed or
    warm start (a default written twice, and differently) would be refused as another study."""
    from autoshrink.searching import search
    from tests.searching.conftest import client, study

    wl = tiny_workload(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = RunConfig(budget=BUDGET, space=SPACE, hardware=HW, trials=1, experiment="same", tracking_uri=uri)
    first = search(wl, run)
    stored = study(tmp_path, "same").user_attrs["config"]
    assert (stored["sampler"], stored["seed"], stored["warm_start"]) == (
        RunConfig.default("sampler"), RunConfig.default("seed"), RunConfig.default("warm_start"),
    )  # fmt: skip
    again = search(wl, budget=BUDGET, space=SPACE, hardware=HW, trials=1, experiment="same", tracking_uri=uri)
    assert again.parent_run_id == first.parent_run_id and again.n_complete == first.n_complete == 1
    logged = {a.path for a in client(tmp_path).list_artifacts(first.parent_run_id)}
    assert "run.yaml" in logged  # a RunConfig passed whole is the run file of the search


def test_a_run_file_takes_a_time_budget_as_a_duration_and_then_needs_no_trial_count() -> None:
    rc = RunConfig.from_dict({"budget": {"speedup": 3}, "time_budget_s": "30m", "trials": None})
    assert rc.time_budget_s == 1800.0 and rc.trials is None and rc.budget.speedup == 3
    assert RunConfig.from_dict(rc.to_dict()) == rc
    with pytest.raises(ConfigError, match="trials is required without a time budget"):
        RunConfig.from_dict({"budget": {"speedup": 3}, "trials": None})
    with pytest.raises(ConfigError, match="a time budget is seconds or a number with s, m or h"):
        RunConfig.from_dict({"budget": {"speedup": 3}, "time_budget_s": "half an hour"})


def test_memory_objective_must_be_true_or_false() -> None:
    from autoshrink.config import ConfigError

    with pytest.raises(ConfigError, match="memory_objective must be true or false, got 'yes'"):
        RunConfig.from_dict({"budget": {"latency_ms": 1.0}, "memory_objective": "yes"})
