"""MLflow tracking: explicit tracking URI, client and run ids; no hidden global state.

Layout of one search in an MLflow experiment:

* a parent run (tag ``autoshrink.role=search``) with the budget, space and hardware as params,
  the baseline's measurements as metrics, and the Pareto table and plot as artifacts;
* one nested run per trial (``autoshrink.role=trial``) with the plan as params, the
  measurements as metrics and tags ``feasible``, ``pareto`` and (on failure) ``error``;
* the Pareto-optimal models logged on their trial runs, and the best one under the budget
  registered as ``autoshrink-<experiment>`` with the alias ``best``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from autoshrink._quiet import quiet_mlflow, stderr_to_debug
from autoshrink.artifact import Artifact, load_artifact
from autoshrink.runtimes import Flavor, get
from autoshrink.store import artifact_root, sqlite_path

ROLE = "autoshrink.role"
STUDY = "autoshrink.study"
TRIAL = "autoshrink.trial"
MODEL_URI = "autoshrink.model_uri"
# Tags on trial runs.
FEASIBLE = "feasible"
PARETO = "pareto"
ERROR = "error"
DUPLICATE_OF = "duplicate_of"
RUNTIME = "runtime"
ENERGY_METHOD = "energy_method"
HOST = "host"
METRIC = "metric"  # what "accuracy" means for this workload: top1, fidelity, ...
SKIPPED = "layers_skipped"
ACCURACY_AWARE = "accuracy_aware"
SCREENED = "screened"
SESSION = "session"  # the session options the artifact was measured and saved with, in words
STOPPED_EARLY = "stopped_early"  # stopped (distillation, or scoring after its subset): it could not reach the Pareto front
MODEL_FILE_DIR = "artifact"
MODEL_NAME = "model"
# The experiment's kind, as MLflow 3's experiment-kind selector writes it: model training. (Which
# view the UI opens is not the tag's: MLflow 3.17 opens its GenAI view unless the address says
# ``workflowType=machine_learning``, which is the address `autoshrink ui` gives; checked in Chromium.)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


#: How long a call waits, in all, while another process holds the sqlite store's write lock
#: (MLflow gives up after about 20 s, measured; on a loaded machine another writer held it longer
#: and a Ctrl-C'd Ray search ended in "database is locked" instead of marking its run killed).
LOCK_WAIT_S = 120.0


class PatientClient:
    """An `MlflowClient` whose calls are tried again while a sqlite store is locked by another
    writer (a locked statement was rolled back, so trying it again is safe), for up to
    `LOCK_WAIT_S`; any other error is raised at once.

    Example:
        >>> from mlflow.exceptions import MlflowException
        >>> class Busy:
        ...     calls = 0
        ...     def get_run(self, run_id):
        ...         Busy.calls += 1
        ...         if Busy.calls < 3:
        ...             raise MlflowException("(sqlite3.OperationalError) database is locked")
        ...         return run_id
        >>> PatientClient(Busy(), first_wait_s=0.001).get_run("abc"), Busy.calls
        ('abc', 3)
    """

    def __init__(self, client: Any, wait_s: float = LOCK_WAIT_S, first_wait_s: float = 0.05) -> None:
        self._client, self._wait_s, self._first_wait_s = client, wait_s, first_wait_s

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            from mlflow.exceptions import MlflowException

            deadline, pause = time.monotonic() + self._wait_s, self._first_wait_s
            while True:
                try:
                    return attr(*args, **kwargs)
                except MlflowException as exc:
                    if "database is locked" not in str(exc) or time.monotonic() + pause > deadline:
                        raise
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

        return call


def trial_name(number: int) -> str:
    """Trial ``number``'s name: its artifact's file name, and the start of its MLflow run's name.

    Example:
        >>> trial_name(7)
        'trial-007'
    """
    return f"trial-{number:03d}"


def registered_name(experiment: str) -> str:
    return f"autoshrink-{experiment}"


class Tracker:
    """MLflow bookkeeping for one search, through an explicit `MlflowClient`."""

    def __init__(self, tracking_uri: str, experiment: str, *, create: bool = True) -> None:
        """Open ``experiment`` in the store; with ``create=False`` a missing store or
        experiment raises `LookupError` instead of being created (for read-only callers)."""
        quiet_mlflow()
        from mlflow.tracking import MlflowClient

        db = sqlite_path(tracking_uri)
        if not create and db is not None:
            if not db.is_file():
                raise LookupError(f"no MLflow store at {tracking_uri}: has a search run there?")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client = PatientClient(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri))
        found = self.client.get_experiment_by_name(experiment)
        if not create and (found is None or found.lifecycle_stage == "deleted"):
            names = sorted(e.name for e in self.client.search_experiments() if e.name != "Default")
            there = f"; experiments there: {', '.join(names)}" if names else "; it holds no experiment yet"
            raise LookupError(f"no experiment {experiment!r} in {tracking_uri}{there}")
        if found is not None and found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        self.experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(
                experiment, artifact_location=artifact_root(tracking_uri), tags=dict([EXPERIMENT_KIND])
            )
        )
        if create and found is not None and EXPERIMENT_KIND[0] not in found.tags:  # made by an older autoshrink
            self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)

    # runs -----------------------------------------------------------------------------
    def start_parent(self, existing_run_id: str | None, tags: dict[str, str]) -> str:
        """Reopen the search's parent run when resuming, else create it."""
        from mlflow.exceptions import MlflowException

        if existing_run_id:
            try:
                run = self.client.get_run(existing_run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None  # deleted for good by hand: start a new parent
            if run is not None and run.info.lifecycle_stage == "active":
                self.client.update_run(existing_run_id, status="RUNNING")
                return existing_run_id
        run = self.client.create_run(
            self.experiment_id, run_name=f"search-{self.experiment}", tags={ROLE: "search", **tags}
        )
        return run.info.run_id

    def start_trial(self, parent_run_id: str, number: int, name: str) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{trial_name(number)}-{name}",
            tags={"mlflow.parentRunId": parent_run_id, ROLE: "trial", TRIAL: str(number)},
        )
        return run.info.run_id

    def trial_runs(self, parent_run_id: str) -> dict[int, Any]:
        """Trial number -> run, for the trials of this search that are not deleted."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=10_000,
        )
        return {int(r.data.tags[TRIAL]): r for r in runs if TRIAL in r.data.tags}

    def discard(self, run_id: str) -> None:
        """Delete a run left behind by an interrupted trial (it is re-run, not duplicated)."""
        self.client.delete_run(run_id)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, file_name: str) -> None:
        self.client.log_text(run_id, text, file_name)

    def log_json(self, run_id: str, data: Any, file_name: str) -> None:
        self.client.log_text(run_id, json.dumps(data, indent=2, default=str), file_name)

    # models ---------------------------------------------------------------------------
    def log_model(self, run_id: str, artifact: Artifact, example: Any) -> str:
        """Log ``artifact`` on ``run_id`` in the flavor its runtime needs; return the model URI.

        The deployable file itself is also stored under ``artifact/`` so that `load_best`
        gets back exactly the bytes that were measured. ``example`` (the model's inputs, batch
        >= 2) becomes the input example: named arrays for ONNX models with several inputs.
        """
        runtime = get(artifact.runtime)
        flavor = runtime.mlflow_flavor
        if flavor == "onnx" and artifact.plan.layer_bits:
            # layers kept at a higher precision: MLflow's ONNX flavour would open the session with
            # ONNX Runtime's defaults, which quantize them again (`sessions.DISABLED_ORT_REWRITES`)
            flavor = "pyfunc"
        with tempfile.TemporaryDirectory() as tmp:
            path = artifact.save(Path(tmp) / f"{MODEL_NAME}{artifact.suffix}")
            self.log_file(run_id, path, MODEL_FILE_DIR)
            with _active_run(self.tracking_uri, run_id):
                info = _LOG_MODEL[flavor](artifact, path, example, runtime.pip_requirements())
        return str(info.model_uri)

    def register_best(self, model_uri: str, run_id: str) -> tuple[str, str]:
        """Register ``model_uri`` and point the alias ``best`` at it; returns (name, version).

        Idempotent: if ``best`` already points at a version from ``run_id`` it is kept.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        name = registered_name(self.experiment)
        try:
            current = self.client.get_model_version_by_alias(name, "best")
            if current.run_id == run_id:
                return name, str(current.version)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        # The registry resolves ``models:/m-...`` URIs through the global tracking URI.
        with _fluent(self.tracking_uri), stderr_to_debug():
            version = mlflow.register_model(model_uri, name, tags={"mlflow.source.run_id": run_id})
        self.client.set_registered_model_alias(name, "best", version.version)
        return name, str(version.version)

    def download_artifact(self, run_id: str) -> Artifact:
        """The deployable artifact stored on a trial run."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, MODEL_FILE_DIR, tmp)
            files = sorted(Path(local).iterdir())
            if not files:
                raise FileNotFoundError(f"run {run_id} has no stored artifact")
            return load_artifact(files[0])


def _log_onnx(artifact: Artifact, path: Path, example: Any, pins: list[str]) -> Any:
    import mlflow.onnx

    named = artifact.feed(example)
    return mlflow.onnx.log_model(
        artifact.onnx_model,
        name=MODEL_NAME,
        input_example=next(iter(named.values())) if len(named) == 1 else named,
        pip_requirements=pins,
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
    )


def _log_pyfunc(artifact: Artifact, path: Path, example: Any, pins: list[str]) -> Any:
    """Through autoshrink's own wrapper (`autoshrink.serving`), for runtimes MLflow has no flavour for."""
    import mlflow

    # MLflow warns that a python_model is pickled (so is every torch model: load stores
    # you trust) and that an ndarray hint gives no signature (on purpose: see serving);
    # importing mlflow.pyfunc warns about Any hints in MLflow's own agent types.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from autoshrink.serving import ArtifactModel

        return mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=ArtifactModel(), artifacts={"artifact": str(path)}, pip_requirements=pins
        )


def _log_pytorch(artifact: Artifact, path: Path, example: Any, pins: list[str]) -> Any:
    import mlflow.pytorch

    # MLflow warns that pickled models run code when loaded: true of every torch
    # module; the README says to load stores you trust. Not for each Pareto model.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    return mlflow.pytorch.log_model(
        artifact.torch_module,
        name=MODEL_NAME,
        input_example=example.numpy() if hasattr(example, "numpy") else None,  # pyfunc: one array in
        serialization_format="pickle",
        pip_requirements=pins,
    )


#: How a model is logged, by the MLflow flavour of its runtime (`autoshrink.runtimes.Runtime`).
_LOG_MODEL: dict[Flavor, Callable[[Artifact, Path, Any, list[str]], Any]] = {
    "onnx": _log_onnx,
    "pyfunc": _log_pyfunc,
    "pytorch": _log_pytorch,
}


@contextlib.contextmanager
def _fluent(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's global (fluent) tracking and registry URIs at our store, then restore."""
    import mlflow

    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@contextlib.contextmanager
def _active_run(tracking_uri: str, run_id: str) -> Iterator[None]:
    """MLflow's model-logging functions only use the fluent API: scope it tightly."""
    import mlflow

    with _fluent(tracking_uri), mlflow.start_run(run_id=run_id):
        yield
