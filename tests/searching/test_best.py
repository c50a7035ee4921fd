"""One rule for "best": the registered model, `load_best(budget=...)`, `autoshrink best` and the
best shown during the search name the same candidate.

The staged search has two plans: int8 is twice as fast as fp32 and half a point less accurate,
which is within the noise of a 128-sample validation split. The highest accuracy (what
`load_best(budget=...)` and the progress bar used to pick) is fp32; the rule picks int8.
"""

from __future__ import annotations

import json
import math
from functools import partial

import pytest

from autoshrink.config import Budget
from autoshrink.searching import best_run, load_best
from tests.searching.conftest import VAL_SAMPLES, Staged, client, staged_search, study

ACCURACY = {32: 0.99, 8: 0.985}
LATENCY = {32: 2.0, 8: 1.0}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    return staged_search(tmp_path_factory.mktemp("staged"), accuracy=ACCURACY, latency=LATENCY)


def test_the_registered_best_is_the_fastest_within_the_noise_not_the_most_accurate(staged: Staged) -> None:
    fp32, int8 = staged.by_bits(32), staged.by_bits(8)
    assert fp32.feasible and int8.feasible and fp32.measurement.accuracy > int8.measurement.accuracy
    assert staged.result.best == int8
    version = client(staged.tmp).get_model_version_by_alias(f"autoshrink-{staged.experiment}", "best")
    assert version.run_id == int8.run_id


def test_the_tolerance_is_a_number_on_the_parent_run(staged: Staged) -> None:
    parent = client(staged.tmp).get_run(staged.result.parent_run_id)
    one_standard_error = math.sqrt(0.99 * (1 - 0.99) / VAL_SAMPLES)  # at the top accuracy, 0.88 points
    assert parent.data.metrics["accuracy_tolerance"] == pytest.approx(one_standard_error)
    assert f"within {100 * one_standard_error:.2f} points" in parent.data.tags["selection_rule"]


def test_load_best_under_the_search_budget_is_the_registered_model(staged: Staged) -> None:
    def under(budget: Budget | None) -> str:
        return best_run(staged.experiment, tracking_uri=staged.uri, budget=budget).info.run_id

    assert under(staged.budget) == under(None) == staged.result.best.run_id  # None: the registered one
    assert under(Budget(latency_ms=1.5)) == staged.result.best.run_id  # a budget fp32 misses: same rule
    # Relative to the baseline that search measured (fp32, 2 ms): 1.5x is 1.33 ms, 3x is 0.67 ms.
    assert under(Budget(speedup=1.5)) == staged.result.best.run_id
    with pytest.raises(LookupError, match="meets"):
        under(Budget(speedup=3))
    assert load_best(staged.experiment, tracking_uri=staged.uri, budget=staged.budget).plan.bits == 8


def test_autoshrink_best_under_the_search_budget_names_the_registered_model(staged: Staged) -> None:
    from typer.testing import CliRunner

    from autoshrink.cli import app

    for budget in ([], ["--latency-budget-ms", str(staged.budget.latency_ms)], ["--speedup", "1.5"]):
        args = ["best", "--experiment", staged.experiment, "--tracking-uri", staged.uri, "--json", *budget]
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["trial"] == staged.result.best.trial, budget


def test_the_best_is_re_timed_before_it_is_registered(staged: Staged) -> None:
    best, baseline = staged.result.best, staged.result.baseline.artifact_path
    # the baseline is timed twice more first, where trials are timed, and its fastest timing kept
    assert baseline is not None and baseline.endswith("baseline.pt")
    assert staged.events == [("retime", baseline)] * 2 + [("retime", best.artifact_path)] * 3 + [("register", best.run_id)]
    run = client(staged.tmp).get_run(best.run_id)
    assert run.data.metrics["recheck_latency_ms"] == LATENCY[8]


def test_the_live_best_follows_the_rule_of_the_final_one(staged: Staged) -> None:
    from autoshrink.searching.finish import Selection
    from autoshrink.searching.study import snapshot

    st = study(staged.tmp, staged.experiment)
    live = snapshot(st, 4, "trial", "", 0.0, tolerance=partial(Selection().resolved_tolerance, VAL_SAMPLES))
    assert live.best is not None and live.best.startswith(f"trial {staged.result.best.trial}: ")


def test_the_best_shown_during_the_search_is_the_one_registered(staged: Staged) -> None:
    last = [p for p in staged.progress if p.stage == "trial"][-1]
    assert last.best is not None and last.best.startswith(f"trial {staged.result.best.trial}: ")


def test_a_best_that_fails_its_re_timing_gives_way_and_load_best_agrees(tmp_path) -> None:
    # int8 goes over the budget when re-timed before registration: fp32, next in order, is registered
    s = staged_search(tmp_path, accuracy=ACCURACY, latency=LATENCY, retimed={32: 2.0, 8: 500.0}, experiment="retimed")
    fp32, int8 = s.by_bits(32), s.by_bits(8)
    assert s.result.best == fp32 and s.result.closest is None
    retimed = [("retime", int8.artifact_path)] * 3 + [("retime", fp32.artifact_path)] * 3
    retimed = [("retime", s.result.baseline.artifact_path)] * 2 + retimed
    assert s.events == [*retimed, ("register", fp32.run_id)]
    assert best_run(s.experiment, tracking_uri=s.uri, budget=s.budget).info.run_id == fp32.run_id
    assert best_run(s.experiment, tracking_uri=s.uri).info.run_id == fp32.run_id
