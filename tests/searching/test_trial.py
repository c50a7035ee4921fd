"""One candidate: architecture first, outcomes, duplicates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from autoshrink.config import Budget
from autoshrink.measuring import NOT_MEASURED
from autoshrink.plan import Plan
from autoshrink.searching.trial import TrialOutcome, TrialRunner, find_twin
from tests.tiny import HW, tiny_workload


def _runner(tmp: Path, budget: Budget | None) -> TrialRunner:
    return TrialRunner(tiny_workload(tmp), HW, tmp / "artifacts", budget=budget)


def test_a_plan_over_budget_before_distillation_is_not_distilled(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.techniques import distill

    calls = []
    monkeypatch.setattr(distill, "_run_teacher", lambda ctx: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    runner = _runner(tmp_path, Budget(latency_ms=1e-6))
    outcome = runner(Plan(prune=0.3, distill_epochs=2), name="t")
    assert outcome.screened and not outcome.failed and not calls  # no distillation ran
    assert outcome.measurement.metric == NOT_MEASURED and outcome.artifact_path is None
    assert outcome.measurement.latency_ms > 1e-6


def test_a_plan_within_budget_is_distilled_and_its_architecture_timed_once(tmp_path: Path, monkeypatch) -> None:
    runner = _runner(tmp_path, Budget(latency_ms=1000.0))
    builds = []
    real = TrialRunner.build
    monkeypatch.setattr(TrialRunner, "build", lambda self, plan, *a: builds.append(plan) or real(self, plan, *a))
    first = runner(Plan(prune=0.3, bits=8, distill_epochs=1), name="a")
    second = runner(Plan(prune=0.3, bits=8, distill_epochs=2), name="b")
    assert not first.screened and first.measurement.metric == "top1" and first.artifact_path
    # the architecture (prune 0.3, int8) was lowered and timed once, for both plans
    assert [p.distill_epochs for p in builds] == [0, 1, 2]
    assert second.measurement.latency_ms == first.measurement.latency_ms


def test_without_a_budget_nothing_is_screened(tmp_path: Path) -> None:
    outcome = _runner(tmp_path, None)(Plan(prune=0.3, distill_epochs=1), name="t")
    assert not outcome.screened and outcome.measurement.metric == "top1"


def test_outcomes_round_trip_and_twins_are_found() -> None:
    plan = Plan(bits=8)
    from tests.searching.conftest import make_candidate

    measured = make_candidate(5, 0.9, 1.0).measurement
    done = {3: TrialOutcome(plan, error="x"), 5: TrialOutcome(Plan(), measured)}
    assert find_twin(done, plan) is None  # a failed twin is not reused
    assert find_twin(done, Plan())[0] == 5
    old = TrialOutcome(plan).to_dict()
    old.pop("screened")  # outcomes stored before the field existed still load
    assert TrialOutcome.from_dict(old).screened is False


def test_a_latency_near_the_budget_is_timed_three_times_and_the_slowest_kept(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.measuring import latency as latency_module
    from autoshrink.measuring.latency import Latency

    runner = _runner(tmp_path, None)
    first = runner(Plan(bits=8), name="probe").measurement
    near = TrialRunner(runner.workload, HW, tmp_path / "a", budget=Budget(latency_ms=first.latency_ms))
    calls = []

    def fake(artifact, batch, hardware):
        calls.append(1)
        return Latency(first.latency_ms * (1 + 0.05 * len(calls)), first.latency_ms * 2, 10, 1, 1, 1.0)

    monkeypatch.setattr(latency_module, "measure_latency", fake)
    m = near(Plan(bits=8), name="near").measurement
    assert len(calls) == 3  # the measurement itself and two more
    assert m.latency_ms == max(first.latency_ms * 1.05, first.latency_ms * 1.15)


def test_a_latency_near_the_budget_is_timed_again_with_the_session_options_it_was_timed_with(
    tmp_path: Path, monkeypatch
) -> None:
    from autoshrink.measuring import latency as latency_module
    from autoshrink.measuring.latency import Latency
    from autoshrink.sessions import SessionOptions

    fixed = replace(HW, session={"memory_arena": False})
    first = TrialRunner(tiny_workload(tmp_path), fixed, tmp_path / "p")(Plan(bits=8), name="probe").measurement
    near = TrialRunner(tiny_workload(tmp_path), fixed, tmp_path / "a", budget=Budget(latency_ms=first.latency_ms))
    seen = []

    def at_the_budget(artifact, batch, hardware):  # a real timing may land outside the "near" band
        seen.append(artifact.options)
        return Latency(first.latency_ms, first.latency_ms, 10, 1, 1, 1.0)

    monkeypatch.setattr(latency_module, "measure_latency", at_the_budget)
    near(Plan(bits=8), name="near")
    assert len(seen) == 3 and set(seen) == {SessionOptions(memory_arena=False)}  # not the defaults for the re-timings


def test_an_auto_trial_is_named_after_the_runtime_it_ran_in(tmp_path) -> None:
    import optuna

    from autoshrink.config import Budget
    from autoshrink.measuring import Measurement
    from autoshrink.plan import Plan
    from autoshrink.searching.recorder import Recorder
    from autoshrink.searching.study import describe
    from autoshrink.searching.trial import OBJECTIVES, TrialOutcome
    from autoshrink.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "names")
    recorder = Recorder(tracker, tracker.start_parent(None, {}), Budget(latency_ms=1.0), OBJECTIVES)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    asked = Plan(prune=0.3, bits=8, distill_epochs=4)  # runtime "auto": settled by measurement
    run_id = recorder.start(trial, asked)
    m = Measurement(0.99, 0.2, 0.2, 0.1, 100, 10, "openvino", 1, 1, 150, 1.0, "-")
    values = recorder.record(trial, run_id, TrialOutcome(asked, m))
    frozen = study.tell(trial, list(values))
    assert tracker.client.get_run(run_id).info.run_name == "trial-000-prune0.3-int8-ov-kd4"
    assert describe(frozen).startswith("trial 0 prune0.3-int8-ov-kd4: ")


BOUNDARY = Budget(latency_ms=1.0, size_mb=0.05, energy_mj=1.0)


@pytest.mark.parametrize(
    ("figures", "feasible"),
    [
        ({"latency_ms": 1.0}, True),  # exactly at each limit: met
        ({"size_bytes": 50_000}, True),
        ({"energy_mj": 1.0}, True),
        ({"latency_ms": 1.0 + 1e-9}, False),  # just over one
        ({"size_bytes": 50_001}, False),
    ],
    ids=["latency=limit", "size=limit", "energy=limit", "latency>limit", "size>limit"],
)
def test_screening_and_the_study_agree_on_feasibility(tmp_path: Path, figures: dict, feasible: bool) -> None:
    from autoshrink.measuring import Measurement
    from autoshrink.searching.study import is_feasible
    from tests.searching.conftest import recorded_study

    m = replace(Measurement(0.5, 0.5, 0.5, 0.5, 10_000, 10, "torch", 1, 1, 150, 1.0, "-"), **figures)
    screened_out = _runner(tmp_path, BOUNDARY)._over_budget(replace(m, accuracy=0.0, metric=NOT_MEASURED))
    trial = recorded_study([TrialOutcome(Plan(), m)], BOUNDARY).trials[0]
    assert is_feasible(trial) is feasible and screened_out is (not feasible)


def test_screening_ignores_the_accuracy_it_has_not_measured_and_nothing_else(tmp_path: Path) -> None:
    from autoshrink.measuring import Measurement

    runner = _runner(tmp_path, Budget(latency_ms=1.0, energy_mj=1.0, min_accuracy=0.9))
    unscored = Measurement(0.0, 0.5, 0.5, 0.5, 10_000, 10, "torch", 1, 1, 150, 1.0, "-", NOT_MEASURED)
    assert not runner._over_budget(unscored)  # accuracy 0.0 is not a measurement
    # an energy reading that failed (NaN) meets no limit: Budget.met says so, and so does screening
    assert runner._over_budget(replace(unscored, energy_mj=float("nan")))
