"""The Pareto table: one formatting for the log, the terminal and the MLflow artifact."""

from __future__ import annotations

import pytest

from autoshrink.measuring import Measurement
from autoshrink.plan import Plan
from autoshrink.searching.report import markdown_table, pareto_markdown
from autoshrink.searching.result import Candidate, SearchResult


def result_scored_by(metric: str) -> SearchResult:
    def candidate(trial: int | None, plan: Plan, score: float, ms: float) -> Candidate:
        m = Measurement(score, ms, ms * 1.1, 1.0, 1000, 10, "onnxruntime", 1, 1, 150, 1.1, "estimate", metric)
        return Candidate(trial, plan, m, {"latency_ms": ms - 1.0}, test_accuracy=score)

    base = candidate(None, Plan(), 1.0, 3.0)
    best = candidate(0, Plan(bits=8), 0.99, 0.5)
    return SearchResult("e", "sqlite:///x", "run", base, [best], best, None, True, None, 1, 0)


@pytest.mark.parametrize(("metric", "shown"), [("top1", "acc"), ("fidelity", "fidelity"), ("RSquared", "RSquared")])
def test_score_columns_are_named_after_the_metric(metric: str, shown: str) -> None:
    header = markdown_table(result_scored_by(metric))[0]
    assert f"| val {shown} | test {shown} |" in header
    assert f"`test {shown}` is measured once on the test split" in pareto_markdown(result_scored_by(metric))


def test_every_row_has_a_cell_per_column() -> None:
    lines = markdown_table(result_scored_by("top1"))
    assert len(lines) == 4  # header, rule, baseline, one Pareto candidate
    assert {line.count("|") for line in lines} == {lines[0].count("|")}
    assert lines[2].startswith("| baseline | fp32 |") and "| 6.0x |" in lines[3]


@pytest.mark.parametrize(("metric", "shown"), [("top1", "acc"), ("fidelity", "fidelity")])
def test_progress_lines_name_the_score(metric: str, shown: str) -> None:
    from autoshrink.config import Budget
    from autoshrink.searching.study import describe, snapshot
    from autoshrink.searching.trial import TrialOutcome
    from tests.searching.conftest import recorded_study

    m = Measurement(0.99, 0.5, 0.55, 1.0, 1000, 10, "onnxruntime", 1, 1, 150, 1.1, "estimate", metric)
    st = recorded_study([TrialOutcome(Plan(bits=8), m)], Budget(latency_ms=1.0))
    line = describe(st.trials[0])
    assert line == f"trial 0 int8: val {shown} 0.9900, 0.500 ms, 1.0 kB, meets budget"
    progress = snapshot(st, 3, "trial", line, 1.0)
    assert (progress.done, progress.feasible, progress.last) == (1, 1, line)
    assert progress.best == f"trial 0: {shown} 0.9900, 0.500 ms"


def test_speed_ups_in_the_table_and_the_message_are_the_same_figure() -> None:
    result = result_scored_by("top1")
    speedup = result.best.measurement.speedup_over(result.baseline.measurement)
    assert speedup == 6.0
    assert f"| {speedup:.1f}x |" in markdown_table(result)[3] and f"({speedup:.1f}x faster)" in result.message
