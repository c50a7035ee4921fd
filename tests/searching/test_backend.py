"""The per-trial protocol both backends share (`begin`, `conclude`) and what Ray adds to it."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from autoshrink.measuring import Measurement
from autoshrink.plan import Plan
from autoshrink.searching.backend import begin, conclude
from autoshrink.searching.recorder import OUTCOME, CandidateFailed
from autoshrink.searching.trial import TrialOutcome
from autoshrink.space import SearchSpace

SPACE = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(8,), distill_epochs=(0,))  # one plan: every draw repeats


class FakeRecorder:
    """Records like `Recorder` (the outcome as a user attribute), raises as it does, keeps no store."""

    early_stop_margin = None  # no distillation early-stop rule

    def __init__(self, bug_on: int | None = None) -> None:
        self.bug_on = bug_on
        self.started: list[int] = []

    def start(self, trial: optuna.Trial, plan: Plan) -> str:
        self.started.append(trial.number)
        return f"run-{trial.number}"

    def record(self, trial: optuna.Trial, run_id: str, outcome: TrialOutcome) -> tuple[float, float]:
        if trial.number == self.bug_on:
            raise KeyError("a bug while recording")
        trial.set_user_attr(OUTCOME, outcome.to_dict())
        if outcome.failed:
            raise CandidateFailed(outcome.error)
        assert outcome.measurement is not None
        return outcome.measurement.accuracy, outcome.measurement.latency_ms


def measured(plan: Plan, ms: float = 1.0) -> TrialOutcome:
    return TrialOutcome(plan, Measurement(0.9, ms, ms, 0.1, 100, 10, "torch", 1, 1, 150, 1.0, "-"), artifact_path="a.pt")


def new_study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(directions=["maximize", "minimize"])


def test_a_repeated_plan_reuses_the_measurement_and_a_failure_is_told_as_fail() -> None:
    study, recorder = new_study(), FakeRecorder()
    told: list[int] = []
    first = begin(study, SPACE, recorder)
    assert first.reused is None and first.name == "trial-000" and first.run_id == "run-0"
    conclude(study, recorder, first, measured(first.plan), [lambda s, t: told.append(t.number)])
    second = begin(study, SPACE, recorder)
    assert second.reused is not None and second.reused.duplicate_of == 0  # not rebuilt
    failed = conclude(study, recorder, second, TrialOutcome(second.plan, error="CompressionError: no"), [lambda s, t: told.append(t.number)])
    assert failed.state == optuna.trial.TrialState.FAIL
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"] and told == [0, 1]


def test_a_bug_while_recording_propagates_and_leaves_the_trial_running_for_resume() -> None:
    study, recorder = new_study(), FakeRecorder(bug_on=0)
    pending = begin(study, SPACE, recorder)
    with pytest.raises(KeyError, match="a bug while recording"):
        conclude(study, recorder, pending, measured(pending.plan))
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING


def test_a_bug_in_a_ray_worker_stops_the_search_with_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to be recorded as one more failed candidate, and the search went on."""
    pytest.importorskip("ray")
    from ray import tune

    from autoshrink.searching.ray import _trial
    from autoshrink.searching.ray_searcher import DriverSearch, WorkerBug

    reports: list[dict[str, Any]] = []
    monkeypatch.setattr(tune, "report", reports.append)

    def buggy_runner(plan: Plan, *, name: str, measure_with: Any = None, front: Any = None) -> TrialOutcome:
        raise KeyError("the runner lost its workload")  # not a candidate's error: those it records itself

    study, recorder = new_study(), FakeRecorder()
    search = DriverSearch(study, SPACE, recorder, artifacts_dir=None, callbacks=())  # type: ignore[arg-type]
    config = search.suggest("tune-1")
    assert config is not None
    _trial(config, buggy_runner, [None], measure_on=None, driver="here", send_artifacts=False)  # type: ignore[arg-type]
    assert "KeyError" in reports[0]["bug"] and "the runner lost its workload" in reports[0]["bug"]
    search.complete("tune-1", reports[0], error=False)
    assert isinstance(search.bug, WorkerBug) and "the runner lost its workload" in str(search.bug)
    assert search.suggest("tune-2") is None  # no more trials are asked for
    assert [t.state.name for t in study.trials] == ["RUNNING"]  # not a FAIL candidate; resume cleans it up
