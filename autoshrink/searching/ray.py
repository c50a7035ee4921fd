"""`RayBackend`: the same search with trials on a Ray cluster, and latency measured on the target.

Only what is Ray's lives here. The Optuna study, the recording, the Pareto set and the
registry are the local ones: a Ray Tune searcher asks the driver's study for each plan, and
records each result through the driver's `Recorder` (constraints included, and failures as FAIL
trials, which Ray's own ``OptunaSearch`` would drop or record as PRUNED). Tune pickles its
searcher, so the searcher holds only a key to those driver-side objects (`autoshrink.searching.ray_searcher`).
Workers only compute: build, measure, and report the outcome (with the artifact's bytes when
the worker is on another machine than the driver).

Measurement: every measurement on a machine holds that machine's measurement lock, so two never
overlap. With ``measure_on="edge"``, latency and energy (trials, the baseline and the
re-timing before registration) are measured by a task that needs the custom resource ``edge``,
i.e. on the nodes started with ``ray start --resources '{"edge": 1}'``; compression and
distillation run wherever Ray places the trial. Start the measurement node with
``--num-cpus 0`` so that no trial is placed there to disturb its timings.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink._quiet import quiet_ray
from autoshrink.artifact import Artifact, load_artifact
from autoshrink.config import ConfigError, HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.measuring import Measurement
from autoshrink.plan import Plan
from autoshrink.searching.backend import Backend
from autoshrink.searching.fidelity import Front
from autoshrink.searching.ray_searcher import DriverSearch, registered, study_searcher
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.trial import Measurer, TrialOutcome, TrialRunner
from autoshrink.space import SearchSpace

if TYPE_CHECKING:
    import optuna

    from autoshrink.measuring.latency import Latency
    from autoshrink.searching.backend import StudyCallback

log = logging.getLogger("autoshrink")


class RayBackend(Backend):
    """Trials as Ray Tune trials, on this machine or a cluster.

    Args:
        address: ``None`` starts a local Ray with this machine's CPUs (quietly: no dashboard,
            no usage stats, temporary files under the system temp folder); ``"auto"`` or
            ``"host:port"`` joins a running cluster (Ray 2.60 authenticates with a token by
            default: set ``RAY_AUTH_MODE=token`` and the token as ``ray start`` printed it, or
            join from a node of the cluster with ``"auto"``).
        max_concurrent_trials: trials run at the same time.
        trial_cpus, trial_gpus: resources each trial reserves.
        measure_on: a custom resource; latency and energy are measured only on nodes that have it.
        send_artifacts: send each artifact's bytes back to the driver (automatic when the
            worker's host differs from the driver's; force it for a cluster without a shared disk).

    Example:
        >>> RayBackend(max_concurrent_trials=2)
        RayBackend(address=None, max_concurrent_trials=2, trial_cpus=1, trial_gpus=0, measure_on=None)
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_concurrent_trials: int = 1,
        trial_cpus: float = 1,
        trial_gpus: float = 0,
        measure_on: str | None = None,
        send_artifacts: bool = False,
    ) -> None:
        if max_concurrent_trials < 1:
            raise ConfigError(f"max_concurrent_trials must be >= 1, got {max_concurrent_trials}")
        if trial_cpus < 0 or trial_gpus < 0:
            raise ConfigError("trial_cpus and trial_gpus must be >= 0")
        self.address = address
        self.num_cpus = num_cpus
        self.max_concurrent_trials = max_concurrent_trials
        self.trial_cpus = trial_cpus
        self.trial_gpus = trial_gpus
        self.measure_on = measure_on
        self.send_artifacts = send_artifacts
        self._started = False
        self._temp_dir: str | None = None
        self._runner_ref: Any = None

    def __repr__(self) -> str:
        return (
            f"RayBackend(address={self.address!r}, max_concurrent_trials={self.max_concurrent_trials}, "
            f"trial_cpus={self.trial_cpus:g}, trial_gpus={self.trial_gpus:g}, measure_on={self.measure_on!r})"
        )

    # -- Ray itself ---------------------------------------------------------------------------
    def _ensure_ray(self) -> Any:
        quiet_ray()  # before Ray is imported: some of its settings are read at import
        try:
            import ray
        except ImportError:
            raise ConfigError("the Ray backend needs Ray Tune: pip install 'autoshrink[ray]'") from None
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                       "log_to_driver": False, "configure_logging": True}  # fmt: skip
            if self.address is None:
                # Unix socket paths are limited to ~100 characters: keep Ray's files short-pathed.
                self._temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
                options |= {"num_cpus": self.num_cpus or os.cpu_count() or 1, "_temp_dir": self._temp_dir}
            else:
                options["address"] = self.address
            try:
                _init_keeping_sigterm(ray, options)
            except ConnectionError as exc:
                raise ConfigError(f"cannot join the Ray cluster at {self.address!r}: {exc}") from None
            self._started = True
        if self.measure_on is not None:
            have = sum(node.get("Resources", {}).get(self.measure_on, 0) for node in ray.nodes() if node.get("Alive"))
            if not have:
                raise ConfigError(
                    f"no node of the Ray cluster has the resource {self.measure_on!r}; start the target node with "
                    f"ray start --address <head> --num-cpus 0 --resources '{{\"{self.measure_on}\": 1}}'"
                )
        return ray

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        if self._temp_dir is not None:  # the local Ray's session files (logs, sockets) go with it
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        self._runner_ref = None

    def _measurer(self, runner: TrialRunner) -> Measurer | None:
        if self.measure_on is None:
            return None
        return _RemoteMeasure(self._runner(runner), self.measure_on)

    def _runner(self, runner: TrialRunner) -> Any:
        ray = self._ensure_ray()
        if self._runner_ref is None:
            self._runner_ref = ray.put(runner)
        return self._runner_ref

    # -- the Backend contract -----------------------------------------------------------------
    def evaluate(self, runner: TrialRunner, plan: Plan, *, name: str) -> TrialOutcome:
        self._ensure_ray()
        return runner(plan, name=name, measure_with=self._measurer(runner))

    def retime(self, artifact_path: str, batch: Inputs, hardware: HardwareProfile) -> Latency:
        ray = self._ensure_ray()
        if self.measure_on is None:
            return super().retime(artifact_path, batch, hardware)
        payload = Path(artifact_path).read_bytes()
        task = _retime_task(ray).options(num_cpus=0, resources={self.measure_on: 1})
        return ray.get(task.remote(payload, Path(artifact_path).suffix, batch, hardware))

    def run(
        self,
        study: optuna.Study,
        space: SearchSpace,
        runner: TrialRunner,
        recorder: Recorder,
        *,
        n_trials: int,
        callbacks: Sequence[StudyCallback] = (),
        deadline: float | None = None,
    ) -> None:
        self._ensure_ray()
        search = DriverSearch(study, space, recorder, runner.artifacts_dir, callbacks, deadline)
        # Tune insists on a results folder; everything worth keeping is in the study and MLflow.
        storage = Path(tempfile.mkdtemp(prefix="autoshrink-ray-results-"))
        try:
            with registered(search) as key:
                self._tuner(runner, key, storage, n_trials=n_trials, name=f"{study.study_name}-{os.getpid()}").fit()
        finally:
            shutil.rmtree(storage, ignore_errors=True)
        if search.bug is not None:
            raise search.bug

    def _tuner(self, runner: TrialRunner, key: str, storage: Path, *, n_trials: int, name: str) -> Any:
        """A Tune ``Tuner`` whose searcher is the registered search ``key``, writing under ``storage``."""
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter

        trainable = tune.with_resources(
            tune.with_parameters(
                _trial, runner=runner, runner_ref=[self._runner(runner)], measure_on=self.measure_on,
                driver=socket.gethostname(), send_artifacts=self.send_artifacts,
            ),
            {"cpu": self.trial_cpus, "gpu": self.trial_gpus},
        )  # fmt: skip
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(study_searcher(key), max_concurrent=self.max_concurrent_trials),
                num_samples=n_trials, reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            ),
        )  # fmt: skip


def _init_keeping_sigterm(ray: Any, options: dict[str, Any]) -> None:
    """``ray.init(**options)``, then the caller's SIGTERM handler back in place.

    ``ray.init`` replaces it (with ``sys.exit``, and its core worker then aborts the process on
    SIGTERM); a handler the caller installed (the command line's: SIGTERM stops the search like
    Ctrl-C) is put back. The default disposition is left to Ray.
    """
    previous = signal.getsignal(signal.SIGTERM)
    ray.init(**options)
    if callable(previous) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _trial(
    config: dict[str, Any], runner: TrialRunner, runner_ref: list[Any], measure_on: str | None, driver: str,
    send_artifacts: bool,
) -> None:  # fmt: skip
    """The Ray Tune trainable: one candidate, reported once."""
    from ray import tune

    if "reuse" in config:
        tune.report({"outcome": config["reuse"]})
        return
    measure_with = _RemoteMeasure(runner_ref[0], measure_on) if measure_on else None
    plan = Plan.from_dict(config["plan"])
    front = Front.from_dict(config["front"]) if "front" in config else None
    try:  # the runner records a candidate's own errors in the outcome: what reaches here is a bug
        outcome = runner(plan, name=config["name"], measure_with=measure_with, front=front)
    except Exception as exc:  # reported with its traceback: Tune would keep only "the trial failed"
        tune.report({"bug": f"{type(exc).__name__} on {socket.gethostname()}: {exc}\n{traceback.format_exc()}"})
        return
    report: dict[str, Any] = {"outcome": json.dumps(outcome.to_dict())}
    if outcome.artifact_path and (send_artifacts or socket.gethostname() != driver):
        report["artifact"] = base64.b64encode(Path(outcome.artifact_path).read_bytes()).decode()
    tune.report(report)


class _RemoteMeasure:
    """Measure an artifact with a Ray task that needs ``resource`` (the target node)."""

    def __init__(self, runner_ref: Any, resource: str) -> None:
        self.runner_ref, self.resource = runner_ref, resource

    def __call__(self, artifact: Artifact, accuracy: bool = True) -> tuple[Measurement, str]:
        import ray

        # "DEFAULT" takes the task out of the trial's placement group, which holds only CPUs.
        task = _measure_task(ray).options(num_cpus=0, resources={self.resource: 1}, scheduling_strategy="DEFAULT")
        data, where = ray.get(task.remote(self.runner_ref, artifact.payload, artifact.suffix, accuracy))
        return Measurement.from_dict(data), where


def _node() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"


def _measure_task(ray: Any) -> Any:
    @ray.remote(max_retries=0)
    def measure_artifact(runner: TrialRunner, payload: bytes, suffix: str, accuracy: bool) -> tuple[dict[str, Any], str]:
        artifact = _from_bytes(payload, suffix)
        return runner.measure(artifact, accuracy).to_dict(), _node()

    return measure_artifact


def _retime_task(ray: Any) -> Any:
    @ray.remote(max_retries=0)
    def retime_artifact(payload: bytes, suffix: str, batch: Inputs, hardware: HardwareProfile) -> Latency:
        from autoshrink.measuring.latency import measure_latency
        from autoshrink.searching.trial import measurement_lock

        with measurement_lock():
            return measure_latency(_from_bytes(payload, suffix), batch, hardware)

    return retime_artifact


def _from_bytes(payload: bytes, suffix: str) -> Artifact:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"artifact{suffix}"
        path.write_bytes(payload)
        return load_artifact(path)
