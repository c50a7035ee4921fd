"""What a search returns and reports: `Candidate`, `SearchResult`, `Progress`, and `ordered`,
the one definition of "best"."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from autoshrink.config import Budget
from autoshrink.measuring import Measurement
from autoshrink.plan import Plan

T = TypeVar("T")

#: What the order of "best" reads off a candidate: validation accuracy, latency (ms), size (bytes).
Figures = tuple[float, float, float]


#: Latencies within this fraction of the fastest equally good candidate's are a tie (timing noise:
#: the same artifact timed 10 times varied by a CV of 1.4-3.3%, `results/noise.md`).
LATENCY_TIE = 0.02


def ordered(candidates: Iterable[T], tolerance: float, figures: Callable[[Any], Figures] | None = None) -> list[T]:
    """``candidates`` (the feasible ones), best first: the one definition of "best".

    Validation accuracies within ``tolerance`` of the highest are equally good (the difference
    is noise): those candidates come first, the fastest first. Latencies within `LATENCY_TIE`
    of the fastest of them are a tie too (timing noise): those are ordered by the smaller
    artifact, then the more accurate. The others follow by accuracy (ties: the faster). ``figures``
    reads ``(accuracy, latency_ms, size_bytes)`` off a candidate: by default a `Candidate`'s
    measurement; the search's progress orders Optuna trials and `load_best` MLflow runs with it.

    Example:
        >>> runs = [(0.99, 1.9, 100), (0.985, 0.5, 100), (0.9, 0.1, 100)]  # accuracy, ms, bytes
        >>> ordered(runs, 0.01, figures=lambda r: r)
        [(0.985, 0.5, 100), (0.99, 1.9, 100), (0.9, 0.1, 100)]
        >>> ordered(runs, 0.0, figures=lambda r: r)[0]  # no tolerance: the highest accuracy
        (0.99, 1.9, 100)
        >>> ordered([(0.989, 0.2140, 222_000), (0.992, 0.2144, 87_000)], 0.005, figures=lambda r: r)[0]
        (0.992, 0.2144, 87000)
    """
    read: Callable[[Any], Figures] = figures or candidate_figures
    items = list(candidates)
    top = max((read(c)[0] for c in items), default=0.0)
    good = [read(c) for c in items if read(c)[0] >= top - tolerance - 1e-12]
    tied = min((f[1] for f in good), default=0.0) * (1 + LATENCY_TIE)

    def key(c: T) -> tuple[int, float, float, float]:
        accuracy, latency_ms, size = read(c)
        if accuracy >= top - tolerance - 1e-12:
            return (0, 0.0 if latency_ms <= tied else latency_ms, size, -accuracy)
        return (1, -accuracy, latency_ms, size)

    return sorted(items, key=key)


def candidate_figures(c: Candidate) -> Figures:
    m = c.measurement
    return m.accuracy, m.latency_ms, m.size_bytes


@dataclass(frozen=True)
class Candidate:
    """One measured candidate.

    ``measurement.accuracy`` is the validation score used for selection; ``test_accuracy``
    is measured once on the test split for Pareto-optimal candidates (and the baseline).
    ``violations`` holds the budget's constraint values (<= 0 means met).
    """

    trial: int | None
    plan: Plan
    measurement: Measurement
    violations: dict[str, float]
    test_accuracy: float | None = None
    run_id: str | None = None
    artifact_path: str | None = None

    @property
    def feasible(self) -> bool:
        return Budget.met(self.violations)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan"] = self.plan.to_dict()
        data["label"] = self.plan.label
        data["feasible"] = self.feasible
        return data


@dataclass(frozen=True)
class Progress:
    """Sent to the ``progress`` callback as the search moves on.

    ``stage`` is ``"start"`` (the store is being opened, or the search resumes), ``"baseline"``
    (the uncompressed model is being measured), ``"sensitivity"`` (each layer is quantized
    alone, once per search, to rank the layers mixed precision keeps), ``"trial"`` (one more trial finished; ``last``
    describes it) or ``"finish"`` (the Pareto set is being scored on the test split, logged
    and the best registered).
    """

    stage: str
    done: int
    total: int | None  # None: as many trials as the time budget allows
    feasible: int
    failed: int
    last: str
    best: str | None
    elapsed_s: float


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search.

    Attributes:
        experiment: the MLflow experiment (and Optuna study) name.
        baseline: the uncompressed model, measured in the same run.
        pareto: Pareto-optimal candidates (feasible ones if any met the budget, else all).
        best: the registered candidate, or None: the first in `ordered` (the fastest feasible
            Pareto candidate within the selection's accuracy tolerance of the best validation
            accuracy) that still meets the latency budget when timed again (`finish.Recheck`).
        closest: when nothing met the budget, the candidate with the smallest relative
            violation (or the feasible one that went over the latency budget when re-timed
            before registration); otherwise None.
        met_budget: whether any candidate met every limit.
        registered_model: ``"name@best"`` in the MLflow Model Registry, or None.
        n_complete / n_failed: trials measured / trials that failed (with their errors).
        n_early_stopped: trials stopped early (in distillation, or scored on the subset only), as they could no longer
            reach the Pareto front (`autoshrink.searching.fidelity`; PRUNED in the study).
        budget: the limits candidates were judged by, relative ones resolved against the
            baseline (`Budget.describe` says both).
        stopped: why the search ran fewer trials than asked (its time budget ran out), or None.
    """

    experiment: str
    tracking_uri: str
    parent_run_id: str
    baseline: Candidate
    pareto: list[Candidate]
    best: Candidate | None
    closest: Candidate | None
    met_budget: bool
    registered_model: str | None
    n_complete: int
    n_failed: int
    failures: dict[int, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    budget: Budget | None = None
    stopped: str | None = None
    n_early_stopped: int = 0

    @property
    def message(self) -> str:
        """One sentence on the outcome, for people (and why the search stopped early, if it did)."""
        return self._outcome() + (f" ({self.stopped})" if self.stopped else "")

    def _outcome(self) -> str:
        if self.best is not None:
            m = self.best.measurement
            speedup = m.speedup_over(self.baseline.measurement)
            return (
                f"best under budget: trial {self.best.trial} {self.best.plan.label}: "
                f"val {m.accuracy:.4f}, {m.latency_ms:.3f} ms ({speedup:.1f}x faster), "
                f"{m.size_bytes / 1e3:.1f} kB"
            )
        closest = self.closest
        detail = ""
        if closest is not None:
            over = ", ".join(f"{k} over by {v:.3g}" for k, v in closest.violations.items() if v > 0)
            why = over or "met it in the search but went over the latency budget when re-timed"
            detail = f"; closest: trial {closest.trial} {closest.plan.label} ({why})"
        return f"NO candidate met the budget ({self.n_complete} measured){detail}"
