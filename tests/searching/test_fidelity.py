"""Distillation as a fidelity: the early-stop rule, a stopped candidate, and how a search records it."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.config import Budget
from autoshrink.measuring import Measurement
from autoshrink.plan import Plan
from autoshrink.searching import fidelity
from autoshrink.searching.fidelity import Curve, Front, Point, front_of
from autoshrink.searching.trial import TrialOutcome, TrialRunner
from autoshrink.space import SearchSpace
from tests.searching.conftest import client, study, tiny_search
from tests.tiny import HW, tiny_workload


def _m(acc: float, ms: float, mb: float = 50.0) -> Measurement:
    return Measurement(acc, ms, ms, 0.1, 1000, 10, "onnxruntime", 1, 1, 150, 1.0, "-", peak_memory_mb=mb)


def test_nothing_is_stopped_before_enough_curves_or_anything_as_cheap() -> None:
    one_curve = Front(points=(Point((1.0,), 0.9),), curves=(Curve(2, (0.5, 0.8), 0.9),))
    assert one_curve.gain(1, 2) is None and one_curve.reachable(1, 2, 0.0, (2.0,))  # one curve: no rule yet
    front = Front(points=(Point((1.0,), 0.9),), curves=(Curve(2, (0.5, 0.8), 0.9), Curve(4, (0.4, 0.7, 0.8, 0.9), 0.91)))
    assert front.gain(1, 2) == pytest.approx(0.51)  # the 4-epoch curve gained more: optimistic
    assert front.gain(1, 4) is None  # only one curve of >= 4 epochs
    assert front.reachable(1, 2, 0.0, (0.9,))  # nothing finished is as fast: it may be the front
    assert not front.reachable(1, 2, 0.38, (2.0,)) and front.reachable(1, 2, 0.40, (2.0,))


def test_every_cost_objective_must_be_as_cheap_to_count() -> None:
    front = Front(points=(Point((1.0, 100.0), 0.95),), curves=(Curve(1, (0.5,), 0.6), Curve(1, (0.5,), 0.6)),
                  costs=("latency_ms", "peak_memory_mb"))  # fmt: skip
    assert not front.reachable(1, 1, 0.2, (2.0, 200.0))  # slower and bigger than a better one
    assert front.reachable(1, 1, 0.2, (2.0, 50.0))  # less memory: nothing dominates it yet


def test_the_front_round_trips_as_a_ray_config_sends_it() -> None:
    front = Front((Point((1.0,), 0.9),), (Curve(2, (0.5, 0.8), 0.9),), 0.02, ("latency_ms",))
    import json

    assert Front.from_dict(json.loads(json.dumps(front.to_dict()))) == front


def test_the_front_of_a_search_counts_only_finished_feasible_candidates() -> None:
    budget = Budget(latency_ms=2.0)
    outcomes = {
        0: TrialOutcome(Plan(bits=8), _m(0.9, 1.0)),
        1: TrialOutcome(Plan(prune=0.3, distill_epochs=2), _m(0.95, 0.5), curve=(0.7, 0.9)),
        2: TrialOutcome(Plan(bits=32), _m(0.99, 3.0)),  # over the latency budget: no point
        3: TrialOutcome(Plan(prune=0.6, distill_epochs=2), _m(0.0, 0.3), curve=(0.1,), stopped_epoch=1),
        4: TrialOutcome(Plan(prune=0.3, distill_epochs=4), _m(0.0, 5.0), screened=True),
        5: TrialOutcome(Plan(rank=0.5), error="CompressionError: x"),
    }
    front = front_of(outcomes, budget, ("accuracy", "latency_ms"), 0.01)
    assert set(front.points) == {Point((0.5,), 0.95), Point((1.0,), 0.9)}
    assert front.curves == (Curve(2, (0.7, 0.9), 0.95),) and front.margin == 0.01 and front.costs == ("latency_ms",)


def test_a_hopeless_distillation_is_stopped_after_its_first_epoch(tmp_path: Path, monkeypatch) -> None:
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "artifacts", budget=Budget(latency_ms=1000.0))
    monkeypatch.setattr(TrialRunner, "epoch_score", lambda self, student, plan: 0.25)
    front = Front((Point((0.0,), 1.0),), (Curve(3, (0.9, 0.95, 1.0), 1.0), Curve(3, (0.9, 0.95, 1.0), 1.0)), 0.01)
    outcome = runner(Plan(prune=0.3, distill_epochs=3), name="t", front=front)
    assert outcome.stopped_epoch == 1 and outcome.curve == (0.25,) and not outcome.failed
    assert outcome.artifact_path is None and not (tmp_path / "artifacts" / "t.pt").exists()
    assert outcome.measurement.latency_ms > 0  # its architecture was timed: the cost the rule compared
    assert TrialOutcome.from_dict(outcome.to_dict()) == outcome
    kept = runner(Plan(prune=0.3, distill_epochs=2), name="u", front=Front())  # an empty front stops nothing
    assert kept.stopped_epoch is None and len(kept.curve) == 2 and kept.artifact_path


def test_the_subset_score_is_the_students_on_validation_samples_drawn_from_the_whole_split(tmp_path: Path, monkeypatch) -> None:
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "artifacts", budget=Budget(latency_ms=1000.0))
    monkeypatch.setattr(fidelity, "SUBSET", 10)
    outcome = runner(Plan(distill_epochs=1), name="t", front=Front())
    assert len(outcome.curve) == 1 and outcome.curve[0] * 10 == pytest.approx(round(outcome.curve[0] * 10))
    subset = runner.cache["fidelity_subset"]
    assert len(subset) == 10 and max(subset.indices) >= 10  # not the first ten (class-sorted data)


def test_a_stopped_candidate_is_pruned_recorded_and_kept_on_resume(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Front, "reachable", lambda self, *args: False)  # every distillation stops at once
    space = SearchSpace(prune=(0.0, 0.3, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0, 2))
    lines: list[str] = []
    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=6, space=space, warm_start=False,
                         progress=lambda p: lines.append(p.last), early_stop_margin=0.01)  # fmt: skip
    trials = study(tmp_path, "e").trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and result.n_early_stopped == len(pruned)
    assert all(t.user_attrs["outcome"]["stopped_epoch"] == 1 and "after epoch 1 of 2" in t.user_attrs["stopped_early"]
               for t in pruned)  # fmt: skip
    assert any("distillation stopped after epoch 1 of 2" in line for line in lines)  # the progress line says so
    stopped = {t.number for t in pruned}
    assert all(c.trial not in stopped for c in result.pareto)
    c = client(tmp_path)
    runs = c.search_runs([c.get_experiment_by_name("e").experiment_id])
    tagged = [r for r in runs if "stopped_early" in r.data.tags]
    assert len(tagged) == len(pruned) and all(
        r.data.metrics["stopped_epoch"] == 1 and "subset_score" in r.data.metrics and "accuracy" not in r.data.metrics
        for r in tagged
    )
    again = tiny_search(tmp_path, tiny_workload(tmp_path), trials=6, space=space, warm_start=False,
                        early_stop_margin=0.01)  # resumed: nothing left to run
    assert again.n_early_stopped == len(pruned) and len(study(tmp_path, "e").trials) == len(trials)


def test_the_rule_can_be_turned_off(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Front, "reachable", lambda self, *args: False)
    space = SearchSpace(prune=(0.3, 0.3, 0.3), rank=("off",), bits=(8,), distill_epochs=(1,))
    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=2, space=space, early_stop_margin=None)
    assert result.n_early_stopped == 0 and all(t.state.name == "COMPLETE" for t in study(tmp_path, "e").trials)


def test_the_bound_on_the_whole_score_grows_with_the_chunks_spread_and_never_is_the_subset_score() -> None:
    steady, steady_bound = fidelity.upper_bound([(0.5, 32)] * 8)
    noisy, noisy_bound = fidelity.upper_bound([(0.3, 32), (0.7, 32)] * 4)
    assert steady == noisy == pytest.approx(0.5)
    assert steady_bound == pytest.approx(0.5 + 3 / 256)  # no spread: the rule of three still allows 3 in 256
    assert noisy_bound > steady_bound + 0.1  # t-margin of the chunk means: 3.0 * 0.2138 / sqrt(8)
    front = Front((Point((1.0,), 0.8),), margin=0.01)
    assert not front.worth_scoring(0.78, (2.0,)) and front.worth_scoring(0.80, (2.0,))
    assert front.worth_scoring(0.0, (0.5,))  # nothing as cheap has finished


def _count_scored(monkeypatch) -> list[int]:
    from autoshrink.data import dataset_size
    from autoshrink.searching import trial

    sizes: list[int] = []
    real = trial.score
    monkeypatch.setattr(trial, "score", lambda art, data, evaluate: sizes.append(dataset_size(data)) or real(art, data, evaluate))
    return sizes


def test_a_candidate_that_cannot_reach_the_front_is_scored_on_the_subset_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fidelity, "SUBSET", 10)  # the tiny workload's 48 validation samples are >= 4 x 10
    sizes = _count_scored(monkeypatch)
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "artifacts")
    unbeatable = Front((Point((0.0,), 2.0),))  # as cheap as anything, and a score no candidate reaches
    outcome = runner(Plan(bits=32), name="t", front=unbeatable)
    assert outcome.stopped_epoch == 0 and outcome.subset_bound is not None and outcome.curve[0] <= outcome.subset_bound < 2.0
    assert sum(sizes) == 10 and 48 not in sizes  # the subset, in chunks; never the whole split
    assert outcome.artifact_path is None and outcome.measurement.latency_ms > 0
    assert TrialOutcome.from_dict(outcome.to_dict()) == outcome
    sizes.clear()
    passed = runner(Plan(bits=32), name="u", front=Front((Point((0.0,), 0.0),)))
    assert passed.stopped_epoch is None and passed.subset_bound is None and sizes[-1] == 48 and sum(sizes[:-1]) == 10
    plain = runner(Plan(bits=32), name="v")  # no front: the whole split at once, the same score
    assert passed.measurement.accuracy == plain.measurement.accuracy and passed.artifact_path


def test_a_split_not_much_larger_than_the_subset_is_scored_whole(tmp_path: Path, monkeypatch) -> None:
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "artifacts")
    assert not runner.subset_first(Front())  # 48 samples < 4 x 256
    monkeypatch.setattr(fidelity, "SUBSET", 10)
    assert runner.subset_first(Front()) and not runner.subset_first(None)  # the rule turned off


def test_a_search_records_a_candidate_stopped_on_its_subset_score(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fidelity, "SUBSET", 10)
    monkeypatch.setattr(Front, "to_beat", lambda self, costs: 1.5)  # every candidate has a better one as cheap
    lines: list[str] = []
    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=3, warm_start=False,
                         progress=lambda p: lines.append(p.last), early_stop_margin=0.01)  # fmt: skip
    pruned = [t for t in study(tmp_path, "e").trials if t.state.name == "PRUNED"]
    assert len(pruned) == 3 and result.n_early_stopped == 3 and not result.pareto
    assert all(t.user_attrs["outcome"]["stopped_epoch"] == 0 and "scored on 10 validation samples first"
               in t.user_attrs["stopped_early"] for t in pruned)  # fmt: skip
    assert any("the rest was not scored" in line for line in lines)
    c = client(tmp_path)
    runs = [r for r in c.search_runs([c.get_experiment_by_name("e").experiment_id]) if "stopped_early" in r.data.tags]
    assert len(runs) == 3 and all("subset_bound" in r.data.metrics and "accuracy" not in r.data.metrics for r in runs)
