"""`search`: the one orchestration of a search, in the caller's process."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import nn

from autoshrink.artifact import load_artifact
from autoshrink.config import Budget, ConfigError, check_installed, duration
from autoshrink.data import dataset_size
from autoshrink.measuring import Measurement, timing_batch
from autoshrink.measuring.accuracy import score
from autoshrink.measuring.latency import WORST_OF, Latency, fastest_of
from autoshrink.plan import Plan
from autoshrink.runfile import RunConfig
from autoshrink.searching.backend import Backend
from autoshrink.searching.cache import SearchCache
from autoshrink.searching.call import backend_for, called_with, selection_for
from autoshrink.searching.finish import Recheck, Selection, finish
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.result import Candidate, Progress, SearchResult
from autoshrink.searching.study import (
    check_weights,
    counted,
    open_study,
    progress_callback,
    recover_interrupted,
    snapshot,
    trial_timings,
)
from autoshrink.searching.trial import TrialRunner, candidate_errors, objectives_for
from autoshrink.space import SearchSpace
from autoshrink.store import experiment_lock, prepare, resolve_tracking_uri, study_storage_for
from autoshrink.techniques import weights_fingerprint
from autoshrink.tracking import STUDY, Tracker
from autoshrink.workloads.base import Workload

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("autoshrink")


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
    run: RunConfig | None = None,
    *,
    backend: Backend | None = None,
    progress: Callable[[Progress], None] | None = None,
    **settings: Any,
) -> SearchResult:
    """Search compression plans for a workload under ``run.budget``; log everything to MLflow.

    Candidates are scored on the workload's validation split; Pareto-optimal ones are then
    measured once on its test split and that is the accuracy reported for them. The training
    split is only used for distillation and calibration. Re-running with the same experiment
    resumes: finished trials are kept and only the missing ones run.

    Args:
        workload: a `Workload` (model, splits, example input, optional ``evaluate``).
        run: the settings (`RunConfig`), logged on the parent run as ``run.yaml``; its
            ``workload`` entry is not read (``workload`` is what is searched).
        backend: where trials run; by default the one ``run.backend`` describes (`backend_for`).
        progress: optional callback receiving a `Progress` at each step.
        **settings: instead of ``run``, its fields as keywords, and the older form's data
            (`keyword_run`): ``search(wl, budget=Budget(latency_ms=1.0), trials=20)``.

    Example:
        >>> import autoshrink  # doctest: +SKIP
        >>> wl = autoshrink.workloads.load("digits")  # doctest: +SKIP
        >>> run = autoshrink.RunConfig(budget=autoshrink.Budget(latency_ms=1.0), trials=20)  # doctest: +SKIP
        >>> print(autoshrink.search(wl, run).message)  # doctest: +SKIP
    """
    wl, run, run_file = called_with(workload, run, settings)
    space, alternatives = _space_for(wl, run)
    selection = selection_for(run)
    backend = backend if backend is not None else backend_for(run.backend)
    live = _Live(progress, run.trials, partial(selection.resolved_tolerance, dataset_size(wl.val)), run.time_budget_s)
    live.emit("start", f"opening experiment '{run.experiment}' (MLflow store and Optuna study)")
    uri = resolve_tracking_uri(run.tracking_uri)
    folder = prepare(uri)
    objectives = objectives_for(_energy_objective(run), _memory_objective(run))
    with experiment_lock(folder, run.experiment):
        opened = _open(wl, run, uri, space, objectives, backend, run_file)
        _resume(opened, live, alternatives)
        recorder = Recorder(opened.tracker, opened.parent, run.budget, objectives, run.early_stop_margin)
        cache = SearchCache(folder / "cache" / run.experiment)  # int8 calibrations kept for a resume
        runner = TrialRunner(wl, run.hardware, folder / "artifacts" / run.experiment, run.seed, budget=run.budget,
                             runtimes=alternatives, cache=cache)  # fmt: skip
        try:
            baseline = _measure_baseline(backend, runner, wl, run.budget, opened, live)
            run, baseline = _resolved(run, baseline, opened, live)
            recorder.baseline, recorder.budget = baseline.measurement, run.budget
            space = _ranked(space, opened, wl, run, live)
            runner = replace(runner, budget=run.budget, ranking=space.ranking, per_mac=space.per_mac)
            _probed(space, opened, wl, runner, live)
            _run_trials(opened.study, backend, space, runner, recorder, live)
            stopped = live.stopped_early(counted(opened.study))
            if cache.loaded:
                live.emit("finish", f"reused {cache.loaded} int8 calibration(s) found on disk "
                                    "(stored by an earlier run of this search or another worker)")  # fmt: skip
            if stopped:
                live.emit("finish", stopped)
            live.emit("finish", "scoring the Pareto set on the test split, logging models, registering the best")
            result, finish_s = _finish(opened, recorder, baseline, wl, backend, run, selection, stopped)
        except KeyboardInterrupt:
            opened.tracker.finish(opened.parent, "KILLED")
            raise
        finally:
            backend.close()
    return _concluded(result, opened, finish_s, live.elapsed())


class _Live:
    """Progress for the caller: a `Progress` snapshot per step, with the study once it is open;
    its best so far is chosen with the search's own accuracy ``tolerance`` (as the final one is)."""

    def __init__(
        self, progress: Callable[[Progress], None] | None, trials: int | None, tolerance: Callable[[float], float],
        time_budget_s: float | None = None,
    ) -> None:  # fmt: skip
        self.progress, self.trials, self.tolerance = progress, trials, tolerance
        self.started = time.perf_counter()
        self.time_budget_s = time_budget_s
        #: When no new trial may start (`time.monotonic`), or None without a time budget.
        self.deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        self.study: optuna.Study | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stopped_early(self, done: int) -> str | None:
        """Why the search stopped before its trial count (the time budget ran out), or None."""
        if self.deadline is None or time.monotonic() < self.deadline or (self.trials is not None and done >= self.trials):
            return None
        assert self.time_budget_s is not None
        return f"time budget of {duration(self.time_budget_s)} reached after {duration(self.elapsed())}: {done} trial(s) finished"

    def emit(self, stage: str, last: str) -> None:
        if self.progress is not None:
            self.progress(snapshot(self.study, self.trials, stage, last, self.elapsed(), tolerance=self.tolerance))


class _Opened(NamedTuple):
    """A search's Optuna study and its MLflow parent run, open."""

    study: optuna.Study
    tracker: Tracker
    parent: str


def _space_for(wl: Workload, run: RunConfig) -> tuple[SearchSpace, tuple[str, ...]]:
    """The space sampled (the family's by default, with only the profile's runtimes) and the
    runtimes an "auto" plan is timed in; a runtime that is not installed is refused here."""
    space = run.space if run.space is not None else SearchSpace.preset(wl.family)
    space = space.restricted_to(run.hardware.runtimes)
    # With other runtimes in the space or the profile, an "auto" plan gets the fastest of them, measured.
    alternatives = space.compared_by_auto(run.hardware.runtimes)
    check_installed({*space.runtime, *alternatives})
    return space, alternatives


def _memory_objective(run: RunConfig) -> bool:
    """Whether peak memory is an objective: where asked for, and only where it can be measured."""
    if not run.memory_objective:
        return False
    from autoshrink.measuring.memory import memory_status

    if memory_status() is None:
        raise ConfigError("peak memory cannot be measured on this system (no VmHWM in /proc/self/status), so it cannot be an objective")
    return True


def _energy_objective(run: RunConfig) -> bool:
    if run.energy_objective is not None:
        return run.energy_objective
    from autoshrink.measuring.energy import energy_counters_available

    return energy_counters_available()


def _open(wl: Workload, run: RunConfig, uri: str, space: SearchSpace, objectives: tuple[str, ...],
          backend: Backend, run_file: str | None) -> _Opened:  # fmt: skip
    """Create or resume the study (a resumed one must have the same settings) and its parent run,
    with the settings logged on it."""
    config = {
        "objectives": list(objectives),
        "workload": wl.name,
        "budget": run.budget.to_dict(),
        "space": space.to_dict(),
        "hardware": run.hardware.to_dict(),
        "sampler": run.sampler,
        "seed": run.seed,
        "warm_start": run.warm_start,
    }
    study = open_study(run.experiment, study_storage_for(uri), config, run.sampler, run.seed, run.trials or PLANNED, objectives,
                       warm_start=space if run.warm_start else None)  # fmt: skip
    check_weights(study, run.experiment, weights_fingerprint(wl.model))
    tracker = Tracker(uri, run.experiment)
    parent = tracker.start_parent(study.user_attrs.get("parent_run_id"), {STUDY: run.experiment})
    study.set_user_attr("parent_run_id", parent)
    tracker.log_params(parent, _flat(config) | {"backend": repr(backend)})
    if run_file is not None:
        tracker.log_text(parent, run_file, "run.yaml")
    return _Opened(study, tracker, parent)


def _resume(opened: _Opened, live: _Live, alternatives: tuple[str, ...]) -> None:
    """Queue the trials an earlier run of this study left half done; say what is resumed and
    which runtimes an "auto" plan is timed in."""
    live.study = opened.study
    interrupted = recover_interrupted(opened.study, opened.tracker, opened.parent)
    if counted(opened.study):
        of = f" of {live.trials}" if live.trials is not None else ""
        live.emit("start", f"resuming: {counted(opened.study)}{of} trials already finished"
                  + (f", {interrupted} interrupted one(s) queued to run again" if interrupted else ""))  # fmt: skip
    if alternatives:
        timed_in = ", ".join(alternatives)
        live.emit("start", f"runtime auto: each architecture is timed in {timed_in} and the fastest kept")


def _measure_baseline(backend: Backend, runner: TrialRunner, wl: Workload, budget: Budget, opened: _Opened,
                      live: _Live) -> Candidate:  # fmt: skip
    """The baseline measured, logged on the parent run (with the CPU that measured it) and told."""
    live.emit("baseline", "measuring the uncompressed model (the baseline)")
    baseline, measured_on = _baseline(backend, runner, budget, wl)
    m = baseline.measurement
    opened.tracker.set_tags(opened.parent, {"baseline_host": measured_on} | _cpu_tags(measured_on))
    opened.tracker.log_metrics(
        opened.parent,
        {f"baseline_{k}": v for k, v in m.metrics().items()}
        | {"baseline_test_accuracy": baseline.test_accuracy or float("nan")},
    )
    live.emit("baseline", f"baseline: val {m.score_name} {m.accuracy:.4f}, {m.latency_ms:.3f} ms, "
              f"{m.size_bytes / 1e3:.1f} kB")  # fmt: skip
    warning = chance_warning(wl, m)
    if warning:
        log.warning(warning)
        live.emit("baseline", f"warning: {warning}")
    return baseline


#: The study's user attribute that keeps the per-layer sensitivity, by technique.
SENSITIVITY = "sensitivity"


def _ranked(space: SearchSpace, opened: _Opened, wl: Workload, run: RunConfig, live: _Live) -> SearchSpace:
    """``space`` with its layers ranked for mixed precision: the per-layer sensitivity, measured
    once per search in ONNX Runtime (in OpenVINO where it is the only runtime), kept in the study
    so a resumed search reuses it, and logged on the parent run (``sensitivity.json``, ``.png``)."""
    accuracy_aware = tuple(b for b in (8, 4) if b in space.bits) if run.budget.max_drop is not None else ()
    needed = tuple(sorted({*space.ranked_bits, *accuracy_aware}, reverse=True))
    if not needed:
        return space
    import tempfile
    from pathlib import Path

    from autoshrink.sensitivity import (
        LayerSensitivity,
        chart,
        layer_sensitivity,
        per_mac_ranking,
        ranking,
        technique_of,
    )

    stored = opened.study.user_attrs.get(SENSITIVITY, {})
    rows = {t: [LayerSensitivity.from_dict(r) for r in found] for t, found in stored.items()}
    missing = [b for b in needed if technique_of(b) not in rows]
    if not missing:
        live.emit("sensitivity", "mixed precision: reusing the per-layer sensitivity this study measured before")
    runtime = "openvino" if space.runtime == ("openvino",) else "onnxruntime"
    for bits in missing:
        live.emit("sensitivity", f"mixed precision: measuring each layer quantized alone at {bits} bits in {runtime}")
        started = time.perf_counter()
        try:
            found = layer_sensitivity(wl, bits=bits, runtime=runtime, int8_range=run.hardware.int8_range,
                                      progress=lambda line: live.emit("sensitivity", line))  # fmt: skip
        except candidate_errors() as exc:  # the uniform plan itself fails: its trials will say so too
            error = f"{type(exc).__name__}: {exc}"[:300]
            live.emit("sensitivity", f"mixed precision off for {bits}-bit plans: the analysis failed ({error})")
            found = [LayerSensitivity("(every layer)", math.nan, math.nan, error, technique_of(bits))]
        rows[technique_of(bits)] = found
        opened.study.set_user_attr(SENSITIVITY, {t: [r.to_dict() for r in v] for t, v in rows.items()})
        opened.tracker.log_metrics(opened.parent, {f"time_sensitivity_{technique_of(bits)}_s": time.perf_counter() - started})
    if missing:
        every = [r for found in rows.values() for r in found]
        opened.tracker.log_json(opened.parent, [r.to_dict() for r in every], "sensitivity.json")
        with tempfile.TemporaryDirectory() as folder:
            picture = Path(folder) / "sensitivity.png"
            chart(every, str(picture))
            opened.tracker.log_file(opened.parent, picture)
    if "per-mac" in space.mixed_by and any(not r.macs for b in needed for r in rows[technique_of(b)] if not r.error):
        live.emit("sensitivity", "mixed precision per MAC: some layers have no MAC count (not a Conv or Linear, or "
                                 "measured before MACs were counted); they follow in deviation order")  # fmt: skip
    return space.ranked({b: ranking(rows[technique_of(b)]) for b in needed},
                        {b: per_mac_ranking(rows[technique_of(b)]) for b in needed})  # fmt: skip


#: The study's user attribute that keeps the pruning probe: each channel group pruned alone.
PRUNE_PROBE = "prune_probe"


def _probed(space: SearchSpace, opened: _Opened, wl: Workload, runner: TrialRunner, live: _Live) -> None:
    """Each channel group of the model pruned alone, measured once per search where the space
    prunes by sensitivity (`autoshrink.techniques._allocate`), kept in the study (a resumed search
    reuses it), logged on the parent run (``prune_sensitivity.json``) and handed to the
    candidates through the runner's cache."""
    from autoshrink import pipeline
    from autoshrink.techniques._allocate import PROBE_SHARE

    low, high, _ = space.prune
    if high <= 0 or low >= PROBE_SHARE or "sensitivity" not in space.prune_method:
        return  # nothing pruned, or only ratios at which every group loses the ratio
    config = pipeline.technique_configs(Plan(prune=high))[0]  # (the probe is the same for every ratio)
    was_training = wl.model.training
    context = pipeline.prepare(wl.model, train_data=wl.train, example_input=wl.example_input, cache=runner.cache,
                               task=wl.task, output=wl.output)  # fmt: skip
    try:
        _probe_into(opened, runner, context, config, live)
    finally:
        wl.model.train(was_training)


def _probe_into(opened: _Opened, runner: TrialRunner, context: Any, config: Any, live: _Live) -> None:
    """`_probed` once the model is prepared: from the study if it holds the probe, else measured."""
    from autoshrink.techniques import CompressionError
    from autoshrink.techniques._allocate import Group, probe, probe_key

    key = probe_key(context.teacher, config)
    stored = opened.study.user_attrs.get(PRUNE_PROBE, {})
    if stored.get("key") == key:
        runner.cache[key] = [Group(**g) for g in stored["groups"]]
        live.emit("sensitivity", "pruning: reusing the channel groups' sensitivity this study measured before")
        return
    live.emit("sensitivity", "pruning: probing each channel group pruned alone by half, once per search")
    started = time.perf_counter()
    try:
        groups = probe(context, config)
    except candidate_errors() as exc:  # the pruned candidates fail at once and say why
        live.emit("sensitivity", f"pruning: the probe failed ({type(exc).__name__}: {exc})"[:300])
        runner.cache[key] = exc if isinstance(exc, CompressionError) else CompressionError(f"the pruning probe failed: {exc}")
        return
    runner.cache[key] = groups
    opened.study.set_user_attr(PRUNE_PROBE, {"key": key, "groups": [g.to_dict() for g in groups]})
    opened.tracker.log_metrics(opened.parent, {"time_sensitivity_prune_s": time.perf_counter() - started})
    opened.tracker.log_json(opened.parent, [g.to_dict() for g in groups], "prune_sensitivity.json")
    worst = sorted(groups, key=lambda g: -g.error)[:3]
    live.emit("sensitivity", "pruning: most sensitive groups " + ", ".join(f"{g.name} ({g.error:.3g})" for g in worst))


#: The study's user attribute that keeps the absolute limits its relative ones resolved to.
RESOLVED_LIMITS = "resolved_budget"
#: Each resolved limit: the `Budget` field and the parent run's metric that logs it.
_LIMIT_METRICS = {"latency_ms": "budget_latency_ms_resolved", "size_mb": "budget_size_mb_resolved",
                  "min_accuracy": "budget_min_accuracy_resolved"}  # fmt: skip


def _resolved(run: RunConfig, baseline: Candidate, opened: _Opened, live: _Live) -> tuple[RunConfig, Candidate]:
    """The run with its budget's relative limits (``speedup``, ``size_ratio``, ``max_drop``) fixed
    as absolute ones from the baseline measured here, once per study: a resumed search keeps the
    limits its finished trials were judged by, whatever the baseline measures now. The baseline
    is judged by them; they are logged on the parent run and told."""
    if not run.budget.relative:
        return run, baseline
    m = baseline.measurement
    stored = opened.study.user_attrs.get(RESOLVED_LIMITS)
    fresh = run.budget.resolved(m.metrics())
    limits = stored if stored is not None else {k: getattr(fresh, k) for k in _LIMIT_METRICS if getattr(fresh, k) is not None}
    opened.study.set_user_attr(RESOLVED_LIMITS, limits)
    budget = run.budget.with_limits(limits)
    opened.tracker.log_metrics(opened.parent, {_LIMIT_METRICS[k]: v for k, v in limits.items()})
    kept = " (kept from the study's first run)" if stored is not None else ""
    live.emit("baseline", f"budget: {budget.describe()}{kept}")
    if run.budget.max_drop is not None:
        live.emit("baseline", "int8 / 4-bit candidates under the score floor keep their most sensitive layers in float")
    return replace(run, budget=budget), replace(baseline, violations=budget.violations(m.metrics()))


#: The trial count samplers are sized for when only a time budget limits the search.
PLANNED = 30
#: Trials a search may run when only its time budget limits it.
UNCAPPED = 1_000_000


def _run_trials(study: optuna.Study, backend: Backend, space: SearchSpace, runner: TrialRunner,
                recorder: Recorder, live: _Live) -> None:  # fmt: skip
    """The trials the study still lacks (as many as the time allows without a trial count), on
    the backend; none starts after the time budget."""
    remaining = UNCAPPED if live.trials is None else live.trials - counted(study)
    if remaining > 0:
        callbacks = (
            [progress_callback(live.progress, live.trials, live.elapsed, tolerance=live.tolerance)] if live.progress else []
        )
        backend.run(study, space, runner, recorder, n_trials=remaining, callbacks=callbacks, deadline=live.deadline)


def _finish(opened: _Opened, recorder: Recorder, baseline: Candidate, wl: Workload, backend: Backend,
            run: RunConfig, selection: Selection, stopped: str | None) -> tuple[SearchResult, float]:  # fmt: skip
    """The Pareto set scored on the test split, its models logged, the best registered; and how
    long that took."""
    started = time.perf_counter()
    recheck = Recheck(backend, run.budget, run.hardware, timing_batch(wl.val, run.hardware.batch_size), opened.tracker)
    result = finish(opened.study, recorder, baseline, wl, recheck, timing_batch(wl.val, 2), selection, stopped)
    return result, time.perf_counter() - started


def _concluded(result: SearchResult, opened: _Opened, finish_s: float, total_s: float) -> SearchResult:
    """The result with its timings, which are logged on the parent run before it is closed."""
    timings = trial_timings(opened.study) | {"finish_s": finish_s, "total_s": total_s}
    opened.tracker.log_metrics(opened.parent, {f"time_{k}": v for k, v in timings.items()})
    opened.tracker.finish(opened.parent)
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
    path, batch = outcome.artifact_path, timing_batch(wl.val, runner.hardware.batch_size)
    m = _fastest(outcome.measurement, lambda: backend.retime(path, batch, runner.hardware))
    test_accuracy = score(load_artifact(outcome.artifact_path), wl.test, wl.evaluate)
    candidate = Candidate(None, Plan(), m, budget.violations(m.metrics()), test_accuracy, artifact_path=outcome.artifact_path)
    return candidate, outcome.host


def _fastest(m: Measurement, retime: Callable[[], Latency], n: int = WORST_OF) -> Measurement:
    """``m`` with the fastest of its timing and ``n - 1`` more (``retime()``, where trials are
    timed): every speed-up and relative budget is read against the baseline, so an unlucky slow
    block would flatter every candidate. Pretrained EfficientNet-Lite1 in torch on a 2-core EPYC
    timed 40-70 ms from one measurement to the next; a search's single timing of 69.8 ms made
    its best (17.1 ms) 4.1x faster, 2.4x against the benchmark's 40.5 ms (fastest of three).

    Example:
        >>> m = Measurement(1.0, 70.0, 74.0, 1.0, 1, 1, "torch", 1, 1, 150, 1.1, "codecarbon")
        >>> faster = iter([Latency(41.0, 44.0, 150, 1, 1, 1.1), Latency(55.0, 60.0, 150, 1, 1, 1.1)])
        >>> best = _fastest(m, lambda: next(faster))
        >>> best.latency_ms, best.latency_p95_ms, best.latency_repeats
        (41.0, 44.0, 450)
    """
    first = Latency(m.latency_ms, m.latency_p95_ms, m.latency_repeats, m.threads, m.batch_size, m.latency_spread)
    best = fastest_of(retime, n, key=lambda t: t.median_ms, taken=[first])
    return replace(m, latency_ms=best.median_ms, latency_p95_ms=best.p95_ms, latency_spread=best.spread,
                   latency_repeats=m.latency_repeats * n)  # fmt: skip


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
