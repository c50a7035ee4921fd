"""The one path that records a trial: Optuna user attributes and constraints, MLflow run.

Only the process that owns the Optuna study records (workers compute, the driver writes), so
the same code serves every backend.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, NoReturn

from autoshrink.config import Budget
from autoshrink.measuring import Measurement
from autoshrink.plan import Plan
from autoshrink.searching import fidelity
from autoshrink.searching.trial import OBJECTIVES, TrialOutcome
from autoshrink.sessions import SessionOptions
from autoshrink.tracking import (
    ACCURACY_AWARE,
    DUPLICATE_OF,
    ENERGY_METHOD,
    ERROR,
    FEASIBLE,
    HOST,
    METRIC,
    PARETO,
    RUNTIME,
    SCREENED,
    SESSION,
    SKIPPED,
    STOPPED_EARLY,
    Tracker,
    trial_name,
)

if TYPE_CHECKING:
    import optuna

#: Optuna user attribute holding a trial's `TrialOutcome` (as a dict).
OUTCOME = "outcome"


class CandidateFailed(Exception):
    """Raised after a failed candidate has been recorded, so that Optuna marks it FAIL."""


class CandidateStopped(Exception):
    """Raised after a candidate stopped early (`fidelity`) has been recorded: Optuna marks it PRUNED."""


class Recorder:
    """Writes trials of one search to its Optuna study and its MLflow parent run."""

    def __init__(
        self, tracker: Tracker, parent_run_id: str, budget: Budget, objectives: tuple[str, ...] = OBJECTIVES,
        early_stop_margin: float | None = None,
    ) -> None:  # fmt: skip
        self.tracker = tracker
        self.early_stop_margin = early_stop_margin  # None: distillation is never stopped early (`fidelity`)
        self.parent_run_id = parent_run_id
        self.budget = budget
        self.objectives = objectives
        self.baseline: Measurement | None = None
        self._started: dict[int, float] = {}

    def start(self, trial: optuna.trial.BaseTrial, plan: Plan) -> str:
        """Open the trial's MLflow run (nested under the search) and note its plan."""
        t0 = time.perf_counter()
        run_id = self.tracker.start_trial(self.parent_run_id, trial.number, plan.label)
        trial.set_user_attr("run_id", run_id)
        trial.set_user_attr("plan", plan.to_dict())
        self.tracker.log_params(run_id, plan.to_dict())
        self._started[trial.number] = time.perf_counter() - t0
        return run_id

    def record(self, trial: optuna.trial.BaseTrial, run_id: str, outcome: TrialOutcome) -> tuple[float, ...]:
        """Record ``outcome`` everywhere; returns the objective values.

        A failed outcome is recorded (error on the trial and on its run, run FAILED) and then
        `CandidateFailed` is raised. Constraints are set last, as Optuna requires.
        """
        t0 = time.perf_counter()
        tags: dict[str, object] = {HOST: outcome.host or "-", PARETO: False}
        if outcome.duplicate_of is not None:
            tags[DUPLICATE_OF] = outcome.duplicate_of
        if outcome.skipped:
            tags[SKIPPED] = len(outcome.skipped)
            self.tracker.log_text(run_id, json.dumps(outcome.skipped, indent=2), "skipped_layers.json")
        if outcome.failed:
            error = outcome.error or "no measurement"
            trial.set_user_attr(OUTCOME, outcome.to_dict())
            trial.set_user_attr("error", error)
            self.tracker.set_tags(run_id, tags | {ERROR: error, FEASIBLE: False})
            self.tracker.finish(run_id, "FAILED")
            raise CandidateFailed(error)
        m = outcome.measurement
        assert m is not None  # not failed
        if outcome.stopped_epoch is not None:
            self._record_stopped(trial, run_id, outcome, tags)
        violations = self.budget.violations(m.metrics())
        metrics = m.metrics()
        if self.baseline is not None:
            metrics |= {
                "speedup": m.speedup_over(self.baseline),
                "size_ratio": self.baseline.size_bytes / m.size_bytes,
            }
        if outcome.duplicate_of is None:
            metrics |= {"compress_s": outcome.compress_s, "measure_s": outcome.measure_s}
            metrics |= {f"time_{name}_s": seconds for name, seconds in outcome.phases.items()}
        if outcome.screened:
            metrics.pop("accuracy")  # not measured: the candidate was over the budget before distillation
            tags[SCREENED] = "over the budget before distillation: not distilled, accuracy not measured"
        if outcome.extra_builds:  # accuracy-aware: the plan built keeps more layers higher than the one drawn
            trial.set_user_attr("plan", outcome.plan.to_dict())
            metrics["accuracy_aware_builds"] = outcome.extra_builds
            tags[ACCURACY_AWARE] = (f"{len(outcome.plan.layer_bits)} layer(s) kept at a higher precision, "
                                    f"{outcome.extra_builds} more build(s)")  # fmt: skip
            self.tracker.log_json(run_id, dict(outcome.plan.layer_bits), "layer_bits.json")
        if outcome.curve:  # distilled under the early-stop rule: its learning curve on the validation subset
            metrics["subset_score"] = outcome.curve[-1]
            self.tracker.log_json(run_id, list(outcome.curve), "curve.json")
        self.tracker.log_metrics(run_id, metrics)
        tags |= {FEASIBLE: Budget.met(violations), RUNTIME: m.runtime, ENERGY_METHOD: m.energy_method, METRIC: m.metric}
        if m.runtime != "torch":
            tags[SESSION] = SessionOptions.from_dict(m.session).describe()
        ran = outcome.plan.measured_in(m.runtime)
        if ran != outcome.plan or outcome.extra_builds:  # named after what was built and ran
            tags["mlflow.runName"] = f"{trial_name(trial.number)}-{ran.label}"
        self.tracker.set_tags(run_id, tags)
        self.tracker.finish(run_id)
        trial.set_user_attr(OUTCOME, outcome.to_dict())
        overhead = self._started.pop(trial.number, 0.0) + time.perf_counter() - t0
        trial.set_user_attr("overhead_s", overhead)
        for name, value in violations.items():
            trial.set_constraint(name, value)
        return outcome.values(self.objectives)

    def _record_stopped(
        self, trial: optuna.trial.BaseTrial, run_id: str, outcome: TrialOutcome, tags: dict[str, object]
    ) -> NoReturn:
        """Record a candidate stopped early (`fidelity`): its speed figures, the epoch
        and subset score it stopped at, its curve; then raise `CandidateStopped` (PRUNED)."""
        m, epoch = outcome.measurement, outcome.stopped_epoch
        assert m is not None and epoch is not None and outcome.curve
        if outcome.subset_bound is None:
            reason = (
                f"distillation stopped after epoch {epoch} of {outcome.plan.distill_epochs}: {outcome.curve[-1]:.4f} "
                f"on {fidelity.SUBSET} validation samples, it could no longer reach the Pareto front"
            )
        else:
            reason = (
                f"scored on {fidelity.SUBSET} validation samples first: {outcome.curve[-1]:.4f} (at most "
                f"{outcome.subset_bound:.4f} on the whole split), it could not reach the Pareto front; the rest was not scored"
            )
        metrics = {k: v for k, v in m.metrics().items() if k != "accuracy"}  # accuracy: not measured
        metrics |= {"stopped_epoch": float(epoch), "subset_score": outcome.curve[-1], "compress_s": outcome.compress_s}
        if outcome.subset_bound is not None:
            metrics["subset_bound"] = outcome.subset_bound
        metrics |= {f"time_{name}_s": seconds for name, seconds in outcome.phases.items()}
        self.tracker.log_metrics(run_id, metrics)
        self.tracker.log_json(run_id, list(outcome.curve), "curve.json")
        self.tracker.set_tags(run_id, tags | {STOPPED_EARLY: reason, RUNTIME: m.runtime})
        self.tracker.finish(run_id)
        trial.set_user_attr(OUTCOME, outcome.to_dict())
        trial.set_user_attr(STOPPED_EARLY, reason)
        self._started.pop(trial.number, None)
        raise CandidateStopped(reason)
