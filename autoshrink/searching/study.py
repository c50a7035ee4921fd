"""The Optuna study of a search: open or resume it, and read it back.

A trial counts when it finished: measured (COMPLETE) or failed with its error recorded. A trial
left RUNNING by a crash, or FAILed without an error (Ctrl-C, a bug), was *interrupted*: it is
closed, its half-written MLflow run deleted, and it is re-run.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from autoshrink.config import SAMPLERS, Budget, ConfigError
from autoshrink.phases import summary
from autoshrink.searching.recorder import OUTCOME
from autoshrink.searching.result import Figures, Progress, ordered
from autoshrink.searching.trial import OBJECTIVES, TrialOutcome
from autoshrink.space import SearchSpace
from autoshrink.tracking import Tracker

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

def directions(objectives: tuple[str, ...]) -> list[Literal["maximize", "minimize"]]:
    """Maximize accuracy, minimize everything after it."""
    rest: list[Literal["maximize", "minimize"]] = ["minimize"] * (len(objectives) - 1)
    return ["maximize", *rest]

log = logging.getLogger("autoshrink")


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``name`` (``tpe``, ``nsga2`` or ``random``), seeded."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(4, trials // 3)))
    if name == "tpe-multivariate":  # models the knobs jointly (prune x bits interact)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=min(10, max(4, trials // 3)), multivariate=True, group=True
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {SAMPLERS}, got {name!r}")


def warm_start_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Trial parameters of plans that usually work, as far as ``space`` holds them: int8 alone,
    and moderate pruning with int8 and the most distillation the space offers.

    Example:
        >>> [p["prune"] for p in warm_start_params(SearchSpace())]
        [0.0, 0.3, 0.5]
    """
    from autoshrink.space import OFF

    low, high, step = space.prune

    def prune(value: float) -> float:
        if high <= low:
            return low
        steps = round((min(max(value, low), high) - low) / step)
        return round(low + steps * step, 6)

    bits = 8 if 8 in space.bits else min(space.bits)
    epochs = max(space.distill_epochs)
    rank = OFF if OFF in space.rank else space.rank[-1]
    wanted = [(0.0, 0), (0.3, epochs), (0.5, epochs)]
    params, seen = [], set()
    for p, e in wanted:
        item = {"rank": rank, "bits": bits, "distill_epochs": e if e in space.distill_epochs else epochs}
        if high > low:
            item["prune"] = prune(p)
        key = tuple(sorted(item.items()))
        if key not in seen:
            seen.add(key)
            params.append(item)
    return params


def open_study(
    experiment: str, storage_url: str, config: dict[str, Any], sampler: str, seed: int, trials: int,
    objectives: tuple[str, ...] = OBJECTIVES, warm_start: SearchSpace | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume; a different ``config`` is refused.

    Optuna does not store a sampler's random state. A resumed study gets its sampler seeded
    with the seed and the number of trials already there, so it does not replay the plans
    it drew before the interruption (and a re-run of the same history is reproducible).
    A new study with ``warm_start`` (its space) first runs `warm_start_params`.
    """
    import optuna

    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(
        storage=storage,
        study_name=experiment,
        directions=directions(objectives),
        sampler=make_sampler(sampler, seed, trials),
        load_if_exists=True,
    )
    existing = len(study.get_trials(deepcopy=False))
    if existing:
        study.sampler = make_sampler(sampler, seed * 100_003 + existing, trials)
    elif warm_start is not None:
        for params in warm_start_params(warm_start)[:trials]:
            study.enqueue_trial(params)
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", config)
    elif stored != config:
        changed = sorted(k for k in config.keys() | stored.keys() if stored.get(k) != config.get(k))
        shown = [f"{k} (was {stored.get(k)}, now {config.get(k)})" if len(repr(stored.get(k))) < 100 else k for k in changed]
        raise ConfigError(
            f"experiment {experiment!r} already exists with a different {', '.join(shown)}; "
            "re-run with the same settings to resume it, or choose a new --experiment name"
        )
    return study


#: The study's user attribute holding `weights_fingerprint` of the model it was started with.
MODEL_WEIGHTS = "model_weights"


def check_weights(study: optuna.Study, experiment: str, weights: str) -> None:
    """Refuse to resume a study started with another model's weights: its trials, the pruning
    probe and the per-layer sensitivity it keeps were measured on those (the first run of a
    study, or one that predates the check, records ``weights``)."""
    stored = study.user_attrs.get(MODEL_WEIGHTS)
    if stored is None:
        study.set_user_attr(MODEL_WEIGHTS, weights)
    elif stored != weights:
        raise ConfigError(
            f"experiment {experiment!r} was started with other model weights (fingerprint {stored}, now {weights}); "
            "its trials and analyses are for those: resume it with the same model, or choose a new --experiment name"
        )


def is_interrupted(trial: FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return trial.state == TrialState.RUNNING or (
        trial.state == TrialState.FAIL and "error" not in trial.user_attrs
    )


def failures(study: optuna.Study) -> dict[int, str]:
    """Trial number -> error, for trials that failed with their error recorded."""
    from optuna.trial import TrialState

    return {
        t.number: t.user_attrs["error"]
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if "error" in t.user_attrs
    }


def complete(study: optuna.Study) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    return list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def early_stopped(study: optuna.Study) -> dict[int, str]:
    """Trial number -> why, for trials stopped early (PRUNED, `fidelity`: in distillation or after the subset score)."""
    from optuna.trial import TrialState

    return {
        t.number: t.user_attrs.get("stopped_early", "stopped early")
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    }


def counted(study: optuna.Study) -> int:
    """Trials that count towards the total: measured, failed with a recorded error, or stopped early."""
    return len(complete(study)) + len(failures(study)) + len(early_stopped(study))


def outcome(trial: FrozenTrial) -> TrialOutcome:
    return TrialOutcome.from_dict(trial.user_attrs[OUTCOME])


def finished_outcomes(study: optuna.Study) -> dict[int, TrialOutcome]:
    """Trial number -> outcome, for every measured trial."""
    return {t.number: outcome(t) for t in complete(study) if OUTCOME in t.user_attrs}


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether a finished trial met its budget: `Budget.met` on the constraints it was recorded
    with (Optuna 5 stores them by name)."""
    constraints = trial.constraints or {}
    named = constraints if isinstance(constraints, dict) else {str(i): v for i, v in enumerate(constraints)}
    return Budget.met(named)


def recover_interrupted(study: optuna.Study, tracker: Tracker, parent_run_id: str) -> int:
    """After a crash: close trials left running, delete their half-written MLflow runs, and
    queue their plans to run first (so the interrupted candidate is really re-run).

    Returns how many trials were recovered now (each is recovered once; the study remembers).
    """
    from optuna.trial import TrialState

    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    done = set(study.user_attrs.get("recovered", []))
    interrupted = [t for t in study.get_trials(deepcopy=False) if is_interrupted(t) and t.number not in done]
    runs = tracker.trial_runs(parent_run_id)
    for trial in interrupted:
        if trial.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if trial.number in runs and runs[trial.number].info.lifecycle_stage == "active":
            tracker.discard(runs[trial.number].info.run_id)
        if trial.params:
            study.enqueue_trial(trial.params, skip_if_exists=False)
    if interrupted:
        study.set_user_attr("recovered", sorted(done | {t.number for t in interrupted}))
        log.info("resumed: %d interrupted trial(s) discarded and queued to run again", len(interrupted))
    return len(interrupted)


def pareto_trials(study: optuna.Study) -> tuple[list[FrozenTrial], bool]:
    """The feasible Pareto front (Optuna's ``best_trials``), or, when no trial is feasible,
    the unconstrained front; the flag says which."""
    import optuna

    front = study.best_trials
    if front:
        return front, True
    done = [t for t in complete(study) if not t.user_attrs.get(OUTCOME, {}).get("screened")]
    if not done:
        return [], False
    shadow = optuna.create_study(directions=study.directions)
    for t in done:
        shadow.add_trial(
            optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, values=t.values, user_attrs={"number": t.number}
            )
        )
    numbers = {t.user_attrs["number"] for t in shadow.best_trials}
    return [t for t in done if t.number in numbers], False


def trial_timings(study: optuna.Study) -> dict[str, float]:
    """Mean work (compress + measure), framework overhead and wall time per distinct trial, and
    the seconds of each phase (`autoshrink.phases`) over all of them (``phase_<name>_s``)."""
    done = [
        (t, outcome(t))
        for t in complete(study)
        if OUTCOME in t.user_attrs and t.user_attrs[OUTCOME].get("duplicate_of") is None
    ]
    if not done:
        return {}
    n = len(done)
    wall = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t, _ in done
        if t.datetime_complete and t.datetime_start
    ]
    phases: dict[str, float] = {}
    for _, o in done:
        for name, seconds in o.phases.items():
            phases[f"phase_{name}_s"] = phases.get(f"phase_{name}_s", 0.0) + seconds
    return phases | {
        "trial_work_s": sum(o.compress_s + o.measure_s for _, o in done) / n,
        "trial_overhead_s": sum(t.user_attrs.get("overhead_s", 0.0) for t, _ in done) / n,
        "trial_wall_s": sum(wall) / len(wall) if wall else 0.0,
        "distinct_trials": float(n),
    }


def _over(trial: FrozenTrial) -> str:
    """``over budget (latency, peak memory)``: the limits a finished trial missed."""
    constraints = trial.constraints or {}
    named = constraints if isinstance(constraints, dict) else {}
    missed = [LIMIT_WORDS.get(k, k) for k, v in named.items() if v > 0]
    return f"over budget ({', '.join(missed)})" if missed else "over budget"


#: How progress lines name a budget's limits.
LIMIT_WORDS = {"latency_ms": "latency", "size_mb": "size", "energy_mj": "energy", "memory_mb": "peak memory",
               "min_accuracy": "accuracy"}  # fmt: skip


def describe(trial: FrozenTrial) -> str:
    """One line about a finished trial, for progress output."""
    from optuna.trial import TrialState

    label = _plan_label(trial)
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number} {label}: {trial.user_attrs.get('stopped_early', 'stopped early')}"
    if trial.state != TrialState.COMPLETE:
        return f"trial {trial.number} {label}: FAILED {trial.user_attrs.get('error', '')[:160]}"
    o = outcome(trial)
    m = o.measurement
    assert m is not None
    label = o.plan.measured_in(m.runtime).label
    dup = f" (same plan as trial {o.duplicate_of})" if o.duplicate_of is not None else ""
    spent = f" [{summary(o.phases)}]" if o.phases and o.duplicate_of is None else ""
    if o.screened:
        return (
            f"trial {trial.number} {label}: {m.latency_ms:.3f} ms, {m.size_bytes / 1e3:.1f} kB before distillation: "
            f"{_over(trial)}, not distilled{dup}{spent}"
        )
    return (
        f"trial {trial.number} {label}: val {m.score_name} {m.accuracy:.4f}, {m.latency_ms:.3f} ms, "
        f"{m.size_bytes / 1e3:.1f} kB, {'' if math.isnan(m.peak_memory_mb) else f'{m.peak_memory_mb:.0f} MB peak, '}"
        f"{'meets budget' if is_feasible(trial) else _over(trial)}{dup}{spent}"
    )


def _plan_label(trial: FrozenTrial) -> str:
    from autoshrink.plan import Plan

    plan = trial.user_attrs.get("plan")
    return Plan.from_dict(plan).label if plan else "?"


def progress_callback(
    progress: Callable[[Progress], None],
    total: int | None,
    clock: Callable[[], float],
    *,
    tolerance: Callable[[float], float] | None = None,
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An Optuna callback that sends a `Progress` after every trial; works on any study.
    ``tolerance`` is as for `snapshot`."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if is_interrupted(trial):
            return
        progress(snapshot(study, total, "trial", describe(trial), clock(), tolerance=tolerance))

    return callback


def snapshot(
    study: optuna.Study | None,
    total: int | None,
    stage: str,
    last: str,
    elapsed_s: float,
    *,
    tolerance: Callable[[float], float] | None = None,
) -> Progress:
    """Where the search stands. Its best so far is chosen as the final one is (`ordered`) among
    the feasible trials measured so far; ``tolerance(top)`` gives the accuracy tolerance for the
    highest feasible accuracy ``top`` (the search's own: ``partial(selection.resolved_tolerance,
    validation_samples)``; without it, 0: the highest accuracy)."""
    if study is None:  # not opened yet
        return Progress(stage, 0, total, 0, 0, last, None, elapsed_s)
    done = complete(study)
    feasible = [t for t in done if is_feasible(t)]
    distinct = [t for t in feasible if OUTCOME in t.user_attrs and outcome(t).duplicate_of is None]
    top = max((t.values[0] for t in distinct), default=0.0)
    best = next(iter(ordered(distinct, tolerance(top) if tolerance else 0.0, _figures)), None)
    return Progress(
        stage=stage,
        done=counted(study),
        total=total,
        feasible=len(feasible),
        failed=len(failures(study)),
        last=last,
        best=_best_line(best) if best else None,
        elapsed_s=elapsed_s,
    )


def _figures(trial: FrozenTrial) -> Figures:
    m = outcome(trial).measurement
    assert m is not None  # a complete trial
    return m.accuracy, m.latency_ms, m.size_bytes


def _best_line(trial: FrozenTrial) -> str:
    m = outcome(trial).measurement
    assert m is not None
    return f"trial {trial.number}: {m.score_name} {m.accuracy:.4f}, {m.latency_ms:.3f} ms"
