"""`search`: the one orchestration of a search, in the caller's process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import nn

from autoshrink.artifact import load_artifact
from autoshrink.config import Budget, ConfigError, HardwareProfile, check_search_settings
from autoshrink.data import DataLike
from autoshrink.measuring import Evaluate, Measurement, timing_batch
from autoshrink.measuring.accuracy import score
from autoshrink.plan import Plan
from autoshrink.searching.backend import Backend
from autoshrink.searching.finish import Recheck, Selection, finish
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.result import Candidate, Progress, SearchResult
from autoshrink.searching.study import (
    counted,
    open_study,
    progress_callback,
    recover_interrupted,
    snapshot,
    trial_timings,
)
from autoshrink.searching.trial import TrialRunner, objectives_for
from autoshrink.space import SearchSpace
from autoshrink.store import (
    check_experiment_name,
    experiment_lock,
    prepare,
    resolve_tracking_uri,
    study_storage_for,
)
from autoshrink.tracking import STUDY, Tracker
from autoshrink.workloads.base import Workload

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("autoshrink")


def as_workload(
    workload: Workload | nn.Module,
    *,
    train_data: DataLike | None = None,
    eval_data: DataLike | None = None,
    test_data: DataLike | None = None,
    example_input: Any = None,
    evaluate: Evaluate | None = None,
) -> Workload:
    """A `Workload`, or one made from a model and the separate keywords (the older form)."""
    loose = {"train_data": train_data, "eval_data": eval_data, "test_data": test_data, "example_input": example_input}
    if isinstance(workload, Workload):
        given = sorted(k for k, v in loose.items() if v is not None)
        if given:
            raise ConfigError(f"pass either a Workload or a model with data, not both (got {', '.join(given)})")
        if evaluate is not None:
            raise ConfigError("a Workload carries its own evaluate; set Workload.evaluate instead")
        return workload
    if isinstance(workload, nn.Module):
        missing = sorted(k for k, v in loose.items() if v is None)
        if missing:
            raise ConfigError(f"search(model, ...) also needs {', '.join(missing)} (or pass a Workload)")
        return Workload(
            name=type(workload).__name__,
            model=workload,
            train=train_data,  # type: ignore[arg-type]
            val=eval_data,  # type: ignore[arg-type]
            test=test_data,  # type: ignore[arg-type]
            example_input=example_input,
            evaluate=evaluate,
        )
    raise ConfigError(
        f"search() takes an autoshrink Workload or a torch.nn.Module, got {type(workload).__name__}"
    )


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def search(
    workload: Workload | nn.Module,
    *,
    budget: Budget,
    space: SearchSpace | None = None,
    trials: int = 20,
    experiment: str = "autoshrink",
    tracking_uri: str | None = None,
    hardware: HardwareProfile | None = None,
    sampler: str = "tpe-multivariate",
    seed: int = 0,
    backend: Backend | None = None,
    selection: Selection | None = None,
    energy_objective: bool | None = None,
    warm_start: bool = True,
    progress: Callable[[Progress], None] | None = None,
    run_file: str | None = None,
    train_data: DataLike | None = None,
    eval_data: DataLike | None = None,
    test_data: DataLike | None = None,
    example_input: Any = None,
    evaluate: Evaluate | None = None,
) -> SearchResult:
    """Search compression plans for a workload under ``budget``; log everything to MLflow.

    Candidates are scored on the workload's validation split; Pareto-optimal ones are then
    measured once on its test split and that is the accuracy reported for them. The training
    split is only used for distillation and calibration. Re-running with the same
    ``experiment`` resumes: finished trials are kept and only the missing ones run.

    Args:
        workload: a `Workload` (model, splits, example input, optional ``evaluate``), or a
            model together with ``train_data``, ``eval_data``, ``test_data`` and
            ``example_input`` (and optionally ``evaluate``).
        budget: hard limits (latency required); candidates over any limit are infeasible.
        space: ranges to sample; by default the workload family's space (`SearchSpace.preset`).
        trials: total number of trials in the study (finished ones count on resume).
        experiment: MLflow experiment and Optuna study name.
        tracking_uri: MLflow store; default ``sqlite:///./.autoshrink/mlflow.db``.
        hardware: latency/energy protocol; `HardwareProfile()` by default.
        sampler: ``"tpe-multivariate"`` (default: it won the replay benchmark of
            ``results/search-quality.md``), ``"tpe"``, ``"nsga2"`` or ``"random"``; seeded by ``seed``.
        warm_start: start a new study with plans that usually work (int8 alone, moderate
            pruning + int8 + distillation) before the sampler takes over.
        backend: where trials run; `LocalBackend()` (this process) by default.
        selection: what "best" and the Pareto set mean (`Selection`): by default the fastest
            feasible candidate within one standard error of the best validation accuracy, and
            no candidate more than 5 points below the baseline in the Pareto set.
        energy_objective: optimize energy too. By default only where the machine has energy
            counters: CodeCarbon's estimate (CPU load x TDP) follows latency and adds noise, so
            it is then reported and may be constrained, but it does not steer the sampler.
        progress: optional callback receiving a `Progress` at each step.
        run_file: text of the run file this search came from, logged on the parent run.

    Example:
        >>> import autoshrink  # doctest: +SKIP
        >>> wl = autoshrink.workloads.load("digits")  # doctest: +SKIP
        >>> result = autoshrink.search(wl, budget=autoshrink.Budget(latency_ms=1.0), trials=20)  # doctest: +SKIP
        >>> print(result.message)  # doctest: +SKIP
    """
    from autoshrink.searching.local import LocalBackend

    started = time.perf_counter()
    wl = as_workload(
        workload, train_data=train_data, eval_data=eval_data, test_data=test_data,
        example_input=example_input, evaluate=evaluate,
    )  # fmt: skip
    if not isinstance(budget, Budget):
        raise ConfigError("budget must be an autoshrink.Budget, e.g. Budget(latency_ms=1.5)")
    check_search_settings(trials, sampler)
    check_experiment_name(experiment)
    space = space if space is not None else SearchSpace.preset(wl.family)
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be an autoshrink.SearchSpace, got {type(space).__name__}")
    hardware = hardware if hardware is not None else HardwareProfile()
    if not isinstance(hardware, HardwareProfile):
        raise ConfigError(f"hardware must be an autoshrink.HardwareProfile, got {type(hardware).__name__}")
    space = space.restricted_to(hardware.runtimes)
    # With other runtimes in the space or the profile, an "auto" plan gets the fastest of them, measured.
    alternatives = space.compared_by_auto(hardware.runtimes)
    check_installed({*space.runtime, *alternatives})
    backend = backend if backend is not None else LocalBackend()
    study: optuna.Study | None = None

    def elapsed() -> float:
        return time.perf_counter() - started

    def emit(stage: str, last: str) -> None:
        if progress is not None:
            progress(snapshot(study, trials, stage, last, elapsed()))

    emit("start", f"opening experiment '{experiment}' (MLflow store and Optuna study)")

    uri = resolve_tracking_uri(tracking_uri)
    folder = prepare(uri)
    if energy_objective is None:
        from autoshrink.measuring.energy import energy_counters_available

        energy_objective = energy_counters_available()
    objectives = objectives_for(energy_objective)
    config = {
        "objectives": list(objectives),
        "workload": wl.name,
        "budget": budget.to_dict(),
        "space": space.to_dict(),
        "hardware": hardware.to_dict(),
        "sampler": sampler,
        "seed": seed,
        "warm_start": warm_start,
    }
    with experiment_lock(folder, experiment):
        study = open_study(experiment, study_storage_for(uri), config, sampler, seed, trials, objectives,
                           warm_start=space if warm_start else None)  # fmt: skip
        tracker = Tracker(uri, experiment)
        parent = tracker.start_parent(study.user_attrs.get("parent_run_id"), {STUDY: experiment})
        study.set_user_attr("parent_run_id", parent)
        tracker.log_params(parent, _flat(config) | {"backend": repr(backend)})
        if run_file is not None:
            tracker.log_text(parent, run_file, "run.yaml")
        interrupted = recover_interrupted(study, tracker, parent)
        if counted(study):
            emit("start", f"resuming: {counted(study)} of {trials} trials already finished"
                 + (f", {interrupted} interrupted one(s) queued to run again" if interrupted else ""))  # fmt: skip
        recorder = Recorder(tracker, parent, budget, objectives)
        if alternatives:
            emit("start", f"runtime auto: each architecture is timed in {', '.join(alternatives)} and the fastest kept")
        runner = TrialRunner(wl, hardware, folder / "artifacts" / experiment, seed, budget=budget,
                             runtimes=alternatives)  # fmt: skip
        try:
            emit("baseline", "measuring the uncompressed model (the baseline)")
            baseline, measured_on = _baseline(backend, runner, budget, wl)
            recorder.baseline = baseline.measurement
            tracker.set_tags(parent, {"baseline_host": measured_on} | _cpu_tags(measured_on))
            tracker.log_metrics(
                parent,
                {f"baseline_{k}": v for k, v in baseline.measurement.metrics().items()}
                | {"baseline_test_accuracy": baseline.test_accuracy or float("nan")},
            )
            emit("baseline", f"baseline: val {baseline.measurement.score_name} {baseline.measurement.accuracy:.4f}, "
                 f"{baseline.measurement.latency_ms:.3f} ms, {baseline.measurement.size_bytes / 1e3:.1f} kB")  # fmt: skip
            warning = chance_warning(wl, baseline.measurement)
            if warning:
                log.warning(warning)
                emit("baseline", f"warning: {warning}")
            remaining = trials - counted(study)
            if remaining > 0:
                callbacks = [progress_callback(progress, trials, elapsed)] if progress else []
                backend.run(study, space, runner, recorder, n_trials=remaining, callbacks=callbacks)
            finishing = time.perf_counter()
            emit("finish", "scoring the Pareto set on the test split, logging models, registering the best")
            recheck = Recheck(backend, budget, hardware, timing_batch(wl.val, hardware.batch_size), tracker)
            result = finish(study, recorder, baseline, wl, recheck, timing_batch(wl.val, 2), selection or Selection())
        except KeyboardInterrupt:
            tracker.finish(parent, "KILLED")
            raise
        finally:
            backend.close()
    timings = trial_timings(study) | {
        "finish_s": time.perf_counter() - finishing,
        "total_s": time.perf_counter() - started,
    }
    tracker.log_metrics(parent, {f"time_{k}": v for k, v in timings.items()})
    tracker.finish(parent)
    return replace(result, timings=timings)


def chance_warning(wl: Workload, m: Measurement) -> str | None:
    """A sentence when an uncompressed classifier scores about chance: nothing to preserve."""
    if m.metric != "top1":
        return None
    from autoshrink.techniques import output_shape

    classes = int(output_shape(wl.model, wl.example_input)[-1])
    if classes < 2 or m.accuracy > 1.5 / classes:
        return None
    return (
        f"the uncompressed model scores {100 * m.accuracy:.1f}% on the validation data, about chance for "
        f"{classes} classes: is it trained? (random torchvision weights need --finetune-epochs; "
        "a new head needs training)"
    )


def _baseline(backend: Backend, runner: TrialRunner, budget: Budget, wl: Workload) -> tuple[Candidate, str]:
    """The uncompressed model measured like a candidate (and where it was measured); if that
    fails the workload is wrong."""
    outcome = backend.evaluate(runner, Plan(runtime="torch"), name="baseline")  # the reference: fp32 torch
    if outcome.failed or outcome.measurement is None or outcome.artifact_path is None:
        raise ConfigError(
            f"the uncompressed model of workload {wl.name!r} could not be measured, so no candidate "
            f"can be: {outcome.error}"
        )
    m = outcome.measurement
    test_accuracy = score(load_artifact(outcome.artifact_path), wl.test, wl.evaluate)
    candidate = Candidate(None, Plan(), m, budget.violations(m.metrics()), test_accuracy, artifact_path=outcome.artifact_path)
    return candidate, outcome.host


#: Runtimes that come with an optional extra, and the modules that extra installs.
EXTRAS = {"openvino": ("openvino", "nncf")}


def check_installed(runtimes: set[str]) -> None:
    """Refuse, before anything runs, a search that would use a runtime this machine lacks
    (``auto`` would otherwise pass over it in silence).

    >>> check_installed({"auto", "onnxruntime"})
    """
    import importlib.util

    for runtime, modules in EXTRAS.items():
        if runtime in runtimes and any(importlib.util.find_spec(m) is None for m in modules):
            raise ConfigError(
                f"the space or hardware profile names {runtime}, which is not installed here: "
                f"pip install 'autoshrink[{runtime}]'"
            )


def _cpu_tags(measured_on: str) -> dict[str, str]:
    """The CPU and its int8 instruction sets, where the baseline was measured on this machine
    (a Ray target node's CPU is not known here, so nothing is said of it)."""
    import socket

    from autoshrink.host import cpu

    if measured_on != socket.gethostname():
        return {}
    info = cpu()
    isa = info["int8_isa"]
    return {"cpu": info["model"], "cpu_int8_isa": (", ".join(isa) or "none") if isinstance(isa, list) else isa}
