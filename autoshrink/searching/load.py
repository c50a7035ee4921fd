"""`load_best`: the best model of a finished search, from MLflow, in any process."""

from __future__ import annotations

from typing import Any

from autoshrink.artifact import Artifact
from autoshrink.config import Budget
from autoshrink.searching.finish import RECHECK_LATENCY, TOLERANCE
from autoshrink.searching.result import Figures, ordered
from autoshrink.store import resolve_tracking_uri
from autoshrink.tracking import MODEL_URI, PARETO, ROLE, Tracker, registered_name


def best_run(experiment: str, *, tracking_uri: str | None = None, budget: Budget | None = None) -> Any:
    """The MLflow run holding the best model.

    Without ``budget``: the run behind the registered model's ``best`` alias. With
    ``budget``: the first, in the search's own order (`ordered`, with the accuracy tolerance
    the search logged on its parent run), of the latest search's logged Pareto models that
    meet ``budget``; a model re-timed before registration must meet it with that slowest
    timing too. With the search's own budget that is the registered model. Relative limits
    (``Budget(speedup=4)``) are taken against the baseline that search measured.
    """
    return _best_run(_open(experiment, tracking_uri), budget)


def _open(experiment: str, tracking_uri: str | None) -> Tracker:
    return Tracker(resolve_tracking_uri(tracking_uri), experiment, create=False)


def _best_run(tracker: Tracker, budget: Budget | None) -> Any:
    from mlflow.exceptions import MlflowException

    client, experiment = tracker.client, tracker.experiment
    if budget is None:
        try:
            version = client.get_model_version_by_alias(registered_name(experiment), "best")
        except MlflowException:
            raise LookupError(
                f"no model registered as {registered_name(experiment)}@best in {tracker.tracking_uri}: "
                + _why_none(tracker)
            ) from None
        if not version.run_id:
            raise LookupError(f"{registered_name(experiment)}@best is not linked to a run")
        return client.get_run(version.run_id)
    parent = _latest_search(tracker)
    if parent is None:
        raise LookupError(f"experiment {experiment!r} has no search in {tracker.tracking_uri}")
    runs = client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.{PARETO} = '{True}'",
        max_results=10_000,
    )
    budget = _resolved(budget, parent.data.metrics)
    ok = []
    for run in runs:
        metrics = run.data.metrics
        if MODEL_URI not in run.data.tags or not {"accuracy", "latency_ms"} <= metrics.keys():
            continue
        slowest = max(metrics["latency_ms"], metrics.get(RECHECK_LATENCY, 0.0))
        if budget.met(budget.violations(metrics | {"latency_ms": slowest})):
            ok.append(run)
    if not ok:
        raise LookupError(f"no logged Pareto model of {experiment!r} meets {budget}")
    tolerance = parent.data.metrics.get(TOLERANCE, 0.0)  # 0 for searches logged before it was
    return ordered(ok, tolerance, _figures)[0]


def _latest_search(tracker: Tracker) -> Any:
    """The parent run of the experiment's latest search, or None."""
    parents = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`{ROLE}` = 'search'", order_by=["start_time DESC"], max_results=1
    )
    return parents[0] if parents else None


def _why_none(tracker: Tracker) -> str:
    """Why a search registered nothing: what its latest search said, where it met no budget, and
    how to load one of its logged Pareto models all the same."""
    parent = _latest_search(tracker)
    tags = parent.data.tags if parent is not None else {}
    if tags.get("met_budget") != "False":
        return "did the search finish, and did any candidate meet its budget?"
    said = tags.get("outcome", "").strip().splitlines()
    return (f"its latest search met no budget ({said[0] if said else 'no candidate met it'}); load a logged "
            "Pareto model under a budget of your own with load_best(..., budget=Budget(...))")  # fmt: skip


def _resolved(budget: Budget, parent: dict[str, float]) -> Budget:
    """``budget`` with its relative limits resolved against the baseline the search measured
    (logged on its parent run as ``baseline_latency_ms``, ...)."""
    if not budget.relative:
        return budget
    try:
        return budget.resolved({k: parent[f"baseline_{k}"] for k in ("latency_ms", "size_bytes", "accuracy")})
    except KeyError as missing:
        raise LookupError(f"the search logged no baseline figure {missing} to resolve {budget}") from None


def _figures(run: Any) -> Figures:
    metrics = run.data.metrics
    return metrics["accuracy"], metrics["latency_ms"], metrics.get("size_bytes", 0.0)


def load_best(experiment: str, *, tracking_uri: str | None = None, budget: Budget | None = None) -> Artifact:
    """Load the best model of ``experiment`` as a callable `Artifact`.

    The exact file that was measured during the search is downloaded from MLflow, so this
    works in a new process, long after the search. ``artifact.torch_module`` or
    ``artifact.onnx_model`` gives the model behind it.

    Example:
        >>> import autoshrink  # doctest: +SKIP
        >>> model = autoshrink.load_best("digits-demo")  # doctest: +SKIP
        >>> logits = model(batch)  # doctest: +SKIP
    """
    tracker = _open(experiment, tracking_uri)
    return tracker.download_artifact(_best_run(tracker, budget).info.run_id)
