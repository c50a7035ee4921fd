"""After the trials: the Pareto set, its test scores and logged models, the best, the registry."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from autoshrink.artifact import Artifact, load_artifact
from autoshrink.config import Budget, ConfigError, HardwareProfile
from autoshrink.data import dataset_size
from autoshrink.inputs import Inputs
from autoshrink.measuring.accuracy import EvaluationError, score
from autoshrink.measuring.latency import worst_of
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.result import LATENCY_TIE, Candidate, SearchResult, ordered
from autoshrink.searching.study import complete, early_stopped, failures, outcome, pareto_trials
from autoshrink.tracking import MODEL_URI, PARETO, Tracker
from autoshrink.workloads.base import Workload

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from autoshrink.searching.backend import Backend

#: Parent-run metric: the accuracy tolerance the search's best was chosen with (`ordered`).
TOLERANCE = "accuracy_tolerance"
#: Trial-run metric: the slowest of the timings of a candidate re-checked before registration.
RECHECK_LATENCY = "recheck_latency_ms"

log = logging.getLogger("autoshrink")


def candidate(trial: FrozenTrial, budget: Budget) -> Candidate:
    o = outcome(trial)
    assert o.measurement is not None
    return Candidate(
        trial=trial.number,
        plan=o.plan.measured_in(o.measurement.runtime),
        measurement=o.measurement,
        violations=budget.violations(o.measurement.metrics()),
        run_id=trial.user_attrs.get("run_id"),
        artifact_path=o.artifact_path,
    )


def accuracy_tolerance(samples: int, accuracy: float) -> float:
    """Differences in validation accuracy smaller than this are noise: one standard error of
    an accuracy measured on ``samples`` examples, at least one example's worth, at most 1 point.

    Example:
        >>> round(accuracy_tolerance(359, 0.99), 4)   # the digits validation split: 0.53 points
        0.0053
        >>> accuracy_tolerance(10_000, 1.0)           # never below one example
        0.0001
    """
    if samples <= 0:
        return 0.0
    se = math.sqrt(max(accuracy * (1 - accuracy), 0.0) / samples)
    return min(0.01, max(1.0 / samples, se))


def select(
    feasible: Sequence[Candidate], recheck: Callable[[Candidate], bool], tolerance: float = 0.0
) -> tuple[Candidate | None, Candidate | None]:
    """(best, closest) among feasible candidates.

    The best is the first candidate in `ordered` (the fastest within ``tolerance`` of the best
    validation accuracy) that passes ``recheck`` (it is timed again); if none passes, there is
    no best and the first one is the closest.

    Example:
        >>> from autoshrink.measuring import Measurement
        >>> from autoshrink.plan import Plan
        >>> def c(n, acc, ms):
        ...     m = Measurement(acc, ms, ms, 0.1, 100, 10, "torch", 1, 1, 150, 1.0, "-")
        ...     return Candidate(n, Plan(), m, {"latency_ms": ms - 2})
        >>> select([c(1, 0.99, 1.9), c(2, 0.98, 0.5)], lambda x: True)[0].trial
        1
        >>> select([c(1, 0.99, 1.9), c(2, 0.98, 0.5)], lambda x: True, tolerance=0.011)[0].trial
        2
        >>> best, closest = select([c(1, 0.99, 1.9), c(2, 0.98, 0.5)], lambda x: x.trial != 1)
        >>> best.trial, closest
        (2, None)
        >>> select([c(1, 0.99, 1.9)], lambda x: False)[1].trial
        1
    """
    order = ordered(feasible, tolerance)
    if not order:
        return None, None
    best = next((c for c in order if recheck(c)), None)
    return best, (order[0] if best is None else None)


@dataclass(frozen=True)
class Recheck:
    """The re-timing policy: time the artifact again where trials are measured, `worst_of` its
    timings (the slowest) must still meet the latency budget. The figure is logged on the
    trial's run (`RECHECK_LATENCY`)."""

    backend: Backend
    budget: Budget
    hardware: HardwareProfile
    batch: Inputs
    tracker: Tracker

    def __call__(self, c: Candidate) -> bool:
        if not c.artifact_path or not Path(c.artifact_path).is_file():
            return True  # nothing to re-time locally (store moved): keep the search's figure
        path = c.artifact_path
        worst = worst_of(lambda: self.backend.retime(path, self.batch, self.hardware), key=lambda t: t.median_ms).median_ms
        if c.run_id:
            self.tracker.log_metrics(c.run_id, {RECHECK_LATENCY: worst})
        limit = self.budget.latency_ms
        assert limit is not None  # a relative limit is resolved before any trial runs
        ok = worst <= limit
        if not ok:
            log.warning(
                "trial %s: %.3f ms on re-timing (%.3f ms in the search) is over the %.3f ms budget; "
                "trying the next candidate", c.trial, worst, c.measurement.latency_ms, limit,
            )  # fmt: skip
        return ok


def _artifact(c: Candidate, tracker: Tracker) -> Artifact | None:
    if c.artifact_path and Path(c.artifact_path).is_file():
        return load_artifact(c.artifact_path)
    if c.run_id:
        try:
            return tracker.download_artifact(c.run_id)
        except (OSError, LookupError):
            return None
    return None


def score_and_log_front(
    front: Sequence[FrozenTrial], recorder: Recorder, workload: Workload, example: Inputs
) -> tuple[list[Candidate], dict[int, str]]:
    """Test accuracy (measured once) and a logged MLflow model for each Pareto trial.

    Work already done by an earlier, interrupted finish (a logged model, a test score) is
    reused, so re-running a search that was stopped here only does what is missing.
    """
    tracker, budget = recorder.tracker, recorder.budget
    runs = tracker.trial_runs(recorder.parent_run_id)
    pareto: list[Candidate] = []
    model_uris: dict[int, str] = {}
    for trial in sorted(front, key=lambda t: t.values[1]):
        cand = candidate(trial, budget)
        artifact = _artifact(cand, tracker)
        if artifact is None:
            log.warning("trial %d: artifact missing, left out of the Pareto set", trial.number)
            continue
        run = runs.get(trial.number)
        test_acc = run.data.metrics.get("test_accuracy") if run is not None else None
        if test_acc is None:
            try:
                test_acc = score(artifact, workload.test, workload.evaluate)
            except EvaluationError as exc:
                log.warning("trial %d: scoring on the test split failed: %s", trial.number, exc)
                test_acc = float("nan")
        cand = replace(cand, test_accuracy=test_acc)
        if run is not None:
            uri = run.data.tags.get(MODEL_URI)
            if uri is None:
                uri = tracker.log_model(run.info.run_id, artifact, example)
                tracker.log_metrics(run.info.run_id, {"test_accuracy": test_acc})
                tracker.set_tags(run.info.run_id, {MODEL_URI: uri})
            model_uris[trial.number] = uri
        pareto.append(cand)
    front_numbers = {c.trial for c in pareto}
    for number, run in runs.items():
        tracker.set_tags(run.info.run_id, {PARETO: number in front_numbers})
    return pareto, model_uris


@dataclass(frozen=True)
class Selection:
    """What "best" and "Pareto-optimal" mean for a search.

    Attributes:
        tolerance: validation-accuracy differences up to this are noise: among the feasible
            candidates that close to the best accuracy the fastest is chosen. ``None`` derives
            it from the validation set's size (`accuracy_tolerance`); ``0`` picks the highest
            accuracy.
        pareto_floor: candidates more than this below the baseline's validation accuracy are
            kept in the runs but not in the Pareto set; where none is that close, those more than
            this below the best candidate (``0`` keeps every non-dominated one).
    """

    tolerance: float | None = None
    pareto_floor: float = 0.05

    def __post_init__(self) -> None:
        if self.tolerance is not None and not 0 <= self.tolerance <= 1:
            raise ConfigError(f"accuracy tolerance must be in [0, 1], got {self.tolerance}")
        if not 0 <= self.pareto_floor <= 1:
            raise ConfigError(f"pareto_floor must be in [0, 1], got {self.pareto_floor}")

    def resolved_tolerance(self, samples: int, accuracy: float) -> float:
        return self.tolerance if self.tolerance is not None else accuracy_tolerance(samples, accuracy)

    def describe(self, tolerance: float, samples: int) -> str:
        source = "set" if self.tolerance is not None else f"1 standard error on {samples} validation samples"
        return (
            f"fastest feasible candidate within {100 * tolerance:.2f} points of the best validation accuracy "
            f"({source}; latencies within {100 * LATENCY_TIE:g}% of the fastest tie: the smaller wins); Pareto set: candidates within {100 * self.pareto_floor:g} points of the baseline (where none is, of the best)"
        )


def above_floor(front: list[FrozenTrial], baseline: Candidate, floor: float) -> list[FrozenTrial]:
    """The front without candidates more than ``floor`` below the baseline; where none is that
    close, without those more than ``floor`` below the front's best, which is always kept (a
    search of a pretrained EfficientNet-Lite1, whose best int8 plan lost 7 points of agreement,
    listed a pruned plan at 0.000 agreement as Pareto-optimal for being smaller)."""
    if floor <= 0 or not front:
        return front
    kept = [t for t in front if t.values[0] >= baseline.measurement.accuracy - floor]
    best = max(t.values[0] for t in front)
    return kept or [t for t in front if t.values[0] >= best - floor]


def finish(
    study: optuna.Study,
    recorder: Recorder,
    baseline: Candidate,
    workload: Workload,
    recheck: Callable[[Candidate], bool],
    example: Inputs,
    selection: Selection = Selection(),
    stopped: str | None = None,
) -> SearchResult:
    """Everything after the trials; safe to run again after an interruption. ``stopped`` says
    why the search ran fewer trials than asked (`SearchResult.stopped`)."""
    tracker, budget = recorder.tracker, recorder.budget
    front, _ = pareto_trials(study)
    front = [t for t in front if outcome(t).duplicate_of is None]
    front = above_floor(front, baseline, selection.pareto_floor)
    pareto, model_uris = score_and_log_front(front, recorder, workload, example)
    samples = dataset_size(workload.val)
    feasible = [c for c in pareto if c.feasible]
    top = max((c.measurement.accuracy for c in feasible), default=0.0)
    tolerance = selection.resolved_tolerance(samples, top)
    tracker.set_tags(recorder.parent_run_id, {"selection_rule": selection.describe(tolerance, samples)})
    tracker.log_metrics(recorder.parent_run_id, {TOLERANCE: tolerance})
    best, closest = select(feasible, recheck, tolerance)
    measured = [candidate(t, budget) for t in complete(study)]
    if best is None and closest is None:
        closest = min(measured, key=lambda c: budget.relative_violation(c.violations), default=None)

    registered = None
    if best is not None and best.trial in model_uris and best.run_id:
        name, version = tracker.register_best(model_uris[best.trial], best.run_id)
        registered = f"{name}@best"
        tracker.set_tags(recorder.parent_run_id, {"registered_model": f"{name} v{version}", "best_trial": best.trial})

    failed = failures(study)
    result = SearchResult(
        experiment=tracker.experiment,
        tracking_uri=tracker.tracking_uri,
        parent_run_id=recorder.parent_run_id,
        baseline=baseline,
        pareto=pareto,
        best=best,
        closest=closest,
        met_budget=best is not None,
        registered_model=registered,
        n_complete=len(measured),
        n_failed=len(failed),
        n_early_stopped=len(early_stopped(study)),
        failures=failed,
        budget=budget,
        stopped=stopped,
    )
    log_summary(tracker, recorder.parent_run_id, result, measured)
    return result


def log_summary(tracker: Tracker, parent: str, result: SearchResult, measured: list[Candidate]) -> None:
    from autoshrink.searching.report import pareto_markdown, pareto_plot

    tracker.log_text(parent, pareto_markdown(result), "pareto.md")
    tracker.log_json(parent, [c.to_dict() for c in result.pareto], "pareto.json")
    tracker.log_json(parent, result.baseline.to_dict(), "baseline.json")
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_file(parent, pareto_plot(result, measured, Path(tmp) / "pareto.png"))
    tracker.log_metrics(
        parent,
        {
            "n_complete": result.n_complete,
            "n_failed": result.n_failed,
            "n_early_stopped": result.n_early_stopped,
            "n_feasible": sum(1 for c in measured if c.feasible),
            "n_pareto": len(result.pareto),
        },
    )
    tracker.set_tags(parent, {"met_budget": result.met_budget, "outcome": result.message[:5000]}
                     | ({"stopped": result.stopped} if result.stopped else {}))  # fmt: skip
