"""The selection rules, without a study: what "best" and "Pareto-optimal" mean."""

from __future__ import annotations

import pytest

from autoshrink.config import ConfigError
from autoshrink.measuring import Measurement
from autoshrink.measuring.latency import Latency
from autoshrink.plan import Plan
from autoshrink.searching.finish import Selection, accuracy_tolerance, select
from tests.searching.conftest import make_candidate


def test_noise_sized_differences_go_to_the_faster_candidate() -> None:
    # The README search used to register a 7x plan when an 11x plan one image behind was there.
    slow_top, fast_close = make_candidate(1, 0.9916, 0.9), make_candidate(2, 0.9889, 0.4)
    fast_far = make_candidate(3, 0.97, 0.2)
    tol = accuracy_tolerance(359, 0.9916)
    best, _ = select([slow_top, fast_close, fast_far], lambda c: True, tol)
    assert best is fast_close
    best, _ = select([slow_top, fast_close, fast_far], lambda c: True, 0.0)
    assert best is slow_top


def test_ties_in_speed_go_to_the_smaller_artifact() -> None:
    a, b = make_candidate(1, 0.99, 0.5, size=300), make_candidate(2, 0.99, 0.5, size=100)
    assert select([a, b], lambda c: True, 0.01)[0] is b


def test_a_candidate_failing_its_re_timing_gives_way_to_the_next() -> None:
    first, second = make_candidate(1, 0.99, 0.4), make_candidate(2, 0.99, 0.6)
    best, closest = select([first, second], lambda c: c is not first, 0.01)
    assert best is second and closest is None
    best, closest = select([first, second], lambda c: False, 0.01)
    assert best is None and closest is first


@pytest.mark.parametrize(("samples", "accuracy", "expected"), [(359, 0.99, 0.0053), (50, 1.0, 0.02), (100, 0.5, 0.01)])
def test_tolerance_follows_the_size_of_the_validation_set(samples: int, accuracy: float, expected: float) -> None:
    assert accuracy_tolerance(samples, accuracy) == pytest.approx(min(expected, 0.01), abs=1e-4)


def test_selection_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="pareto_floor must be in"):
        Selection(pareto_floor=-1)
    assert Selection(tolerance=0.002).resolved_tolerance(10, 0.5) == 0.002


def test_the_pareto_set_leaves_out_candidates_far_below_the_baseline() -> None:
    import optuna

    from autoshrink.searching.finish import above_floor

    def trial(acc: float, ms: float):
        return optuna.trial.create_trial(values=[acc, ms, 0.1])

    baseline = make_candidate(0, 0.99, 5.0)
    useful, useless = trial(0.985, 0.5), trial(0.09, 0.2)  # 0.09: chance, however fast
    assert above_floor([useful, useless], baseline, 0.05) == [useful]
    assert above_floor([useful, useless], baseline, 0.0) == [useful, useless]  # 0 turns it off
    assert above_floor([useless], baseline, 0.05) == [useless]  # never empty-handed
    # nothing near the baseline (a pretrained CNN whose int8 loses 7 points): the front's best
    # and what is near it stay, a 0.000 plan kept for being smaller does not
    int8, mixed, junk = trial(0.83, 5.4), trial(0.93, 5.6), trial(0.0, 3.4)
    assert above_floor([int8, mixed, junk], make_candidate(0, 1.0, 40.0), 0.05) == [mixed]
    assert above_floor([int8, mixed, junk], make_candidate(0, 1.0, 40.0), 0.2) == [int8, mixed]


@pytest.mark.parametrize(("measured", "label"), [("openvino", "prune0.3-int8-ov-kd4"), ("onnxruntime", "prune0.3-int8-kd4")])
def test_a_candidate_names_the_runtime_an_auto_plan_was_measured_in(measured: str, label: str) -> None:
    import optuna

    from autoshrink.config import Budget
    from autoshrink.searching.finish import candidate
    from autoshrink.searching.study import OUTCOME
    from autoshrink.searching.trial import TrialOutcome

    m = Measurement(0.99, 0.2, 0.2, 0.1, 100, 10, measured, 1, 1, 150, 1.0, "-")
    asked = Plan(prune=0.3, bits=8, distill_epochs=4)  # runtime "auto", settled by measurement
    trial = optuna.trial.create_trial(values=[0.99, 0.2, 0.1], user_attrs={OUTCOME: TrialOutcome(asked, m).to_dict()})
    c = candidate(trial, Budget(latency_ms=1.0))
    assert c.plan.label == label and c.plan.resolved_runtime == measured


def test_one_order_for_candidates_and_for_any_record_of_their_figures() -> None:
    from autoshrink.searching.result import ordered

    top, close, far = make_candidate(1, 0.99, 1.9), make_candidate(2, 0.985, 0.5), make_candidate(3, 0.95, 0.1)
    assert ordered([top, close, far], 0.01) == [close, top, far]  # within 1 point: the faster first
    assert ordered([top, close, far], 0.0) == [top, close, far]  # no tolerance: by accuracy
    assert select([top, close, far], lambda c: True, 0.01)[0] is ordered([top, close, far], 0.01)[0]
    rows = [(0.99, 1.9, 10), (0.985, 0.5, 10)]  # (accuracy, latency, size) of runs, trials, ...
    assert ordered(rows, 0.01, figures=lambda r: r) == [rows[1], rows[0]]
    assert ordered([], 0.01) == []


def test_a_latency_tie_within_timing_noise_goes_to_the_smaller_artifact() -> None:
    from autoshrink.searching.result import LATENCY_TIE, ordered

    # the README search on a fresh clone: two plans both timed 0.214 ms, one 2.5x smaller and more accurate
    big, small = (0.9889, 0.2140, 221_700), (0.9916, 0.2143, 86_900)
    assert ordered([big, small], 0.0053, figures=lambda r: r)[0] == small
    slower = (0.9916, 0.2140 * (1 + 2 * LATENCY_TIE), 86_900)  # outside the tie: the faster one
    assert ordered([big, slower], 0.0053, figures=lambda r: r)[0] == big
    worse = (0.9777, 0.2140, 50_000)  # outside the accuracy tolerance: after both, whatever its size
    assert ordered([worse, big, small], 0.0053, figures=lambda r: r) == [small, big, worse]


def test_the_best_is_re_timed_and_the_slowest_timing_decides(tmp_path) -> None:
    from dataclasses import replace

    from autoshrink.config import Budget
    from autoshrink.searching.finish import Recheck
    from tests.searching.conftest import HW

    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    timings, logged = iter([1.0, 3.0, 2.0]), {}

    class Backend:
        def retime(self, *args):
            return Latency(next(timings), 0.0, 1, 1, 1, 1.0)

    class Tracker:
        def log_metrics(self, run_id, metrics):
            logged.update(metrics)

    best = replace(make_candidate(1, 0.99, 1.0), artifact_path=str(path), run_id="r")
    assert not Recheck(Backend(), Budget(latency_ms=2.5), HW, None, Tracker())(best)  # 3.0 > 2.5
    assert logged == {"recheck_latency_ms": 3.0}
