"""The ``autoshrink`` command line: a thin shell over the Python API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from autoshrink._console import Reporter, print_result
from autoshrink._console import die as _die
from autoshrink.config import SAMPLERS
from autoshrink.runfile import RunConfig

app = typer.Typer(help="Find the best real compressed version of a trained PyTorch model.", no_args_is_help=True)


WORKLOAD_HELP = (
    "digits (built in), torchvision:<model>, hf:<path or cached id>, package.module:function, path/to/file.py:function, "
    "or an installed plug-in."
)
#: ``--tracking-uri``'s help, the same in every command (`autoshrink.store.resolve_tracking_uri`).
TRACKING_URI_HELP = "MLflow store (default: sqlite:///./.autoshrink/mlflow.db, or in $AUTOSHRINK_HOME)."


_HW = RunConfig.default("hardware")


def _default(setting: str) -> str:
    """``(default: X)`` for a help text: X is `RunConfig`'s default, the only place it is written."""
    value = RunConfig.default(setting)
    return f"(default: {'on' if value is True else 'off' if value is False else value})"


@app.command()
def search(
    latency_budget_ms: Optional[float] = typer.Option(None, help="Median latency limit per batch, in ms (this, --speedup or a run file's budget is required)."),
    speedup: Optional[float] = typer.Option(None, help="At least this many times faster than the uncompressed model, measured in the same search (> 1); the same on every CPU. With --latency-budget-ms, both hold."),
    size_ratio: Optional[float] = typer.Option(None, help="At least this many times smaller than the uncompressed model's artifact (> 1). With --size-budget-mb, both hold."),
    config: Optional[Path] = typer.Option(None, "--config", help="Run file (YAML) with workload, budget, space, hardware...; flags override it."),
    workload: Optional[str] = typer.Option(None, help=f"What to compress: {WORKLOAD_HELP} {_default('workload')}"),
    data: Optional[str] = typer.Option(None, help="Image data for torchvision models: digits or imagefolder:PATH."),
    weights: Optional[str] = typer.Option(None, help="torchvision weights: a weights name (from the local torch cache), a state-dict path, or none."),
    num_classes: Optional[int] = typer.Option(None, help="Resize the classification head to this many classes."),
    image_size: Optional[int] = typer.Option(None, help="Input height/width for image models."),
    finetune_epochs: Optional[int] = typer.Option(None, help="Fine-tune a torchvision model on the train split first (cached)."),
    workload_arg: list[str] = typer.Option([], "--workload-arg", help="key=value passed to the workload's function (repeatable)."),
    trials: Optional[int] = typer.Option(None, help=f"Total trials in the study (finished ones count when resuming) {_default('trials')}."),
    time_budget: Optional[str] = typer.Option(None, help="Wall-clock limit: no trial starts after it (90s, 30m, 1.5h); the best so far is registered. Without --trials: as many trials as fit."),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment / Optuna study name (default: from the workload)."),
    space: Optional[Path] = typer.Option(None, help="Search space YAML (default: the workload family's)."),
    hardware: Optional[Path] = typer.Option(None, help=f"Hardware profile YAML (default: {_HW.threads} thread(s), batch {_HW.batch_size})."),
    size_budget_mb: Optional[float] = typer.Option(None, help="Artifact size limit in MB."),
    energy_budget_mj: Optional[float] = typer.Option(None, help="Energy per inference limit in mJ."),
    memory_budget_mb: Optional[float] = typer.Option(None, help="Peak resident memory limit in MB: loading and running the model at the profile's batch size, its runtime included."),
    memory_objective: bool = typer.Option(False, "--memory-objective", help="Minimize peak memory too (a Pareto objective), where no fixed limit fits."),
    min_accuracy: Optional[float] = typer.Option(None, help="Lowest acceptable validation accuracy (0-1)."),
    max_drop: Optional[float] = typer.Option(None, help="Most points (0.01s of the score) a candidate may lose against the uncompressed model; int8 / 4-bit ones under it keep their most sensitive layers in float (accuracy-aware)."),
    sampler: Optional[str] = typer.Option(None, help=f"One of {', '.join(SAMPLERS)} {_default('sampler')}."),
    warm_start: Optional[bool] = typer.Option(None, "--warm-start/--no-warm-start", help=f"Start with plans that usually work {_default('warm_start')}."),
    seed: Optional[int] = typer.Option(None, help=f"Seed for the sampler and distillation {_default('seed')}."),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
    build_threads: int = typer.Option(0, help="Threads for distillation (0 = all cores); timing uses the profile's."),
    backend: Optional[str] = typer.Option(None, help=f"Where trials run: local (this process) or ray (default: {RunConfig.default('backend')['kind']})."),
    ray_address: Optional[str] = typer.Option(None, help="Join this Ray cluster ('auto' or host:port) instead of starting one."),
    max_concurrent_trials: Optional[int] = typer.Option(None, help="Ray: trials at the same time (default: RayBackend's)."),
    trial_cpus: Optional[float] = typer.Option(None, help="Ray: CPUs each trial reserves (default: RayBackend's)."),
    trial_gpus: Optional[float] = typer.Option(None, help="Ray: GPUs each trial reserves (default: RayBackend's)."),
    measure_on: Optional[str] = typer.Option(None, help="Ray: measure latency and energy only on nodes with this custom resource."),
    accuracy_tolerance: Optional[float] = typer.Option(None, help="Validation-accuracy differences up to this are noise: the fastest within it of the best wins (default: 1 standard error)."),
    early_stop_margin: Optional[str] = typer.Option(None, help=f"Stop a distillation that can no longer reach the Pareto front, granting it this many points of the score beyond the best gain seen; 'off': never {_default('early_stop_margin')}."),
    pareto_floor: Optional[float] = typer.Option(None, help=f"Keep candidates more than this below the baseline's accuracy out of the Pareto set; 0 keeps all {_default('pareto_floor')}."),
) -> None:
    """Search compression plans under a latency budget; log to MLflow; register the best."""
    import os

    import torch

    from autoshrink import workloads
    from autoshrink.config import ConfigError, HardwareProfile, duration, parse_duration
    from autoshrink.searching import search as run_search
    from autoshrink.searching.call import backend_for, selection_for
    from autoshrink.space import SearchSpace
    from autoshrink.techniques import CompressionError

    say = Reporter()
    try:
        run = _run_config(
            config, latency_budget_ms=latency_budget_ms, size_mb=size_budget_mb, energy_mj=energy_budget_mj,
            memory_mb=memory_budget_mb,
            min_accuracy=min_accuracy, max_drop=max_drop, speedup=speedup, size_ratio=size_ratio, workload=workload,
            trials=trials, experiment=experiment,
            time_budget_s=parse_duration(time_budget) if time_budget is not None else None,
            space=SearchSpace.from_yaml(space) if space else None,
            hardware=HardwareProfile.from_yaml(hardware) if hardware else None,
            sampler=sampler, seed=seed, tracking_uri=tracking_uri,
            accuracy_tolerance=accuracy_tolerance, pareto_floor=pareto_floor, warm_start=warm_start,
            memory_objective=memory_objective or None,  # not given: the run file's
            early_stop_margin=_margin(early_stop_margin),
            backend=_backend_options(backend, address=ray_address, max_concurrent_trials=max_concurrent_trials,
                                     trial_cpus=trial_cpus, trial_gpus=trial_gpus, measure_on=measure_on),
            workload_options=_workload_options(
                weights=weights, num_classes=num_classes, data=data, image_size=image_size,
                finetune_epochs=finetune_epochs, args=workload_arg,
            ),
        )  # fmt: skip
        if early_stop_margin is not None and early_stop_margin.strip().lower() == "off":
            from dataclasses import replace

            run = replace(run, early_stop_margin=None)
        backend_obj = backend_for(run.backend)
        selection_for(run)  # a bad tolerance or floor is refused now, not after the workload has loaded
        say.line(f"loading workload '{run.workload}'")
        wl = workloads.load(run.workload, **run.workload_options)
    except (ConfigError, ValueError) as exc:
        _die(str(exc))
    torch.set_num_threads(build_threads or os.cpu_count() or 1)
    _quiet_optuna()
    how_many = f"{run.trials} trials" if run.trials else "trials"
    limit = f" for at most {duration(run.time_budget_s)}" if run.time_budget_s else ""
    say.line(f"searching {how_many}{limit} of '{wl.name}' under {run.budget.describe()} -> experiment '{run.experiment}'")
    try:
        with _sigterm_as_interrupt(), say.progress(run.trials) as update:
            result = run_search(wl, run, backend=backend_obj, progress=update)
    except KeyboardInterrupt:
        _die(
            f"interrupted: {say.done} finished trial(s) are kept; run the same command again to resume",
            code=130,
        )
    except (ConfigError, CompressionError) as exc:
        _die(str(exc))
    print_result(result)


def _quiet_optuna() -> None:
    """The command line reports every trial itself: Optuna's own lines would repeat them."""
    import optuna

    optuna.logging.disable_default_handler()


def _backend_options(kind: str | None, **flags: Any) -> dict[str, Any] | None:
    """The backend settings the flags give (``None`` when no backend flag was used)."""
    given = {k: v for k, v in flags.items() if v is not None}
    if kind is None and not given:
        return None
    if kind is None:
        kind = "ray"  # a Ray option implies the Ray backend
    return {"kind": kind, **given}


def _workload_options(*, args: list[str], **flags: Any) -> dict[str, Any] | None:
    """Workload options from the flags that were given and ``--workload-arg key=value``."""
    import yaml

    from autoshrink.config import ConfigError

    options = {k: v for k, v in flags.items() if v is not None}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--workload-arg takes key=value, got {arg!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options or None


def _margin(text: str | None) -> float | None:
    """``--early-stop-margin`` as a number (None: not given, or ``off``, which `search` applies)."""
    from autoshrink.config import ConfigError

    if text is None or text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--early-stop-margin takes a number or 'off', got {text!r}") from None


def _run_config(config: Path | None, *, latency_budget_ms: float | None, size_mb: float | None,
                energy_mj: float | None, min_accuracy: float | None, max_drop: float | None = None,
                speedup: float | None = None, size_ratio: float | None = None, memory_mb: float | None = None,
                **overrides: Any) -> RunConfig:  # fmt: skip
    """The run file (if any) with the command-line flags on top: the whole search, for `search`.

    ``overrides`` are `RunConfig` fields; ``None`` (a flag not given) keeps the file's value or
    the field's default.
    """
    from dataclasses import replace

    from autoshrink.config import Budget, ConfigError
    from autoshrink.store import experiment_name_for

    limits = {"latency_ms": latency_budget_ms, "size_mb": size_mb, "energy_mj": energy_mj, "min_accuracy": min_accuracy,
              "max_drop": max_drop, "speedup": speedup, "size_ratio": size_ratio, "memory_mb": memory_mb}  # fmt: skip
    given = {k: v for k, v in limits.items() if v is not None}
    if config is not None:
        run = RunConfig.from_yaml(config)
        run = replace(run, budget=replace(run.budget, **given))
    else:
        if latency_budget_ms is None and speedup is None:
            raise ConfigError(
                "a latency budget is required: --speedup X (X times faster than the model) or --latency-budget-ms MS "
                "(or a run file with --config)"
            )
        run = RunConfig(budget=Budget(**given))
        if overrides.get("experiment") is None:
            overrides["experiment"] = experiment_name_for(overrides.get("workload") or run.workload)
        if overrides.get("time_budget_s") is not None and overrides.get("trials") is None:
            run = replace(run, trials=None, time_budget_s=overrides["time_budget_s"])  # as many trials as fit
    return run.with_overrides(**overrides)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a cluster job's time limit) stops the search like Ctrl-C does."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def best(
    experiment: str = typer.Option(..., help="Experiment name of a finished search."),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
    latency_budget_ms: Optional[float] = typer.Option(None, help="Pick the best logged model under this latency instead of the registered one."),
    speedup: Optional[float] = typer.Option(None, help="Pick the best logged model at least this many times faster than the search's baseline."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Print the best model under the budget (the registered `best`, or under --latency-budget-ms / --speedup)."""
    import json

    from autoshrink.config import Budget, ConfigError
    from autoshrink.searching import best_run
    from autoshrink.tracking import METRIC, MODEL_URI, RUNTIME, TRIAL

    try:
        given = latency_budget_ms is not None or speedup is not None
        budget = Budget(latency_ms=latency_budget_ms, speedup=speedup) if given else None
        run = best_run(experiment, tracking_uri=tracking_uri, budget=budget)
    except (LookupError, ConfigError) as exc:
        _die(str(exc))
    info = {
        "experiment": experiment,
        "run_id": run.info.run_id,
        "trial": int(run.data.tags.get(TRIAL, -1)),
        "plan": {k: v for k, v in run.data.params.items()},
        "metrics": run.data.metrics,
        "model_uri": run.data.tags.get(MODEL_URI),
        "runtime": run.data.tags.get(RUNTIME),
        "metric": run.data.tags.get(METRIC, "top1"),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    from autoshrink.measuring import score_name

    m, score = info["metrics"], score_name(info["metric"])
    typer.echo(
        f"trial {info['trial']} ({info['runtime']}): val {score} {m.get('accuracy', float('nan')):.4f}, "
        f"test {score} {m.get('test_accuracy', float('nan')):.4f}, {m.get('latency_ms', float('nan')):.3f} ms, "
        f"{m.get('size_bytes', 0) / 1e3:.1f} kB, plan {info['plan']}\nmodel: {info['model_uri']}"
    )


@app.command()
def sensitivity(
    workload: str = typer.Option(RunConfig.default("workload"), help=f"What to analyse: {WORKLOAD_HELP}"),
    data: Optional[str] = typer.Option(None, help="Image data for torchvision models: digits or imagefolder:PATH."),
    weights: Optional[str] = typer.Option(None, help="torchvision weights: a weights name, a state-dict path, or none."),
    workload_arg: list[str] = typer.Option([], "--workload-arg", help="key=value passed to the workload's function (repeatable)."),
    bits: int = typer.Option(8, help="The precision each layer is quantized to alone: 8 or 4."),
    runtime: str = typer.Option("onnxruntime", help="onnxruntime or openvino (8 bits)."),
    samples: int = typer.Option(128, help="Validation inputs scored, the same for every layer."),
    technique: str = typer.Option("quantize", help="quantize: each layer quantized alone, the score it loses and how far the outputs move (ranked by that); prune: each channel group pruned alone by half, the output's error (what pruning allocates by)."),
) -> None:
    """Print how much of the workload's score each layer loses when it alone is quantized, and how far
    the outputs move, which ranks the layers (or, with --technique prune, how much each channel
    group pruned alone changes the output), worst first."""
    from autoshrink import workloads
    from autoshrink.config import ConfigError
    from autoshrink.measuring.accuracy import EvaluationError
    from autoshrink.sensitivity import layer_sensitivity, table
    from autoshrink.techniques import CompressionError

    say = Reporter()
    try:
        options = _workload_options(weights=weights, data=data, args=workload_arg) or {}
        say.line(f"loading workload '{workload}'")
        if technique not in ("quantize", "prune"):
            raise ConfigError(f"--technique must be quantize or prune, got {technique!r}")
        wl = workloads.load(workload, **options)
        if technique == "prune":
            typer.echo(_prune_probe_table(wl))
            return
        rows = layer_sensitivity(wl, bits=bits, runtime=runtime, samples=samples, progress=say.line)
    except (ConfigError, CompressionError, EvaluationError, ValueError) as exc:
        _die(str(exc))
    typer.echo(table(rows))


def _prune_probe_table(wl: Any) -> str:
    from autoshrink import pipeline
    from autoshrink.plan import Plan
    from autoshrink.techniques._allocate import probe
    from autoshrink.techniques._allocate import table as probe_table

    context = pipeline.prepare(wl.model, train_data=wl.train, example_input=wl.example_input, task=wl.task, output=wl.output)
    return probe_table(probe(context, pipeline.technique_configs(Plan(prune=0.5))[0]))


@app.command()
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Start the MLflow UI on 127.0.0.1 for the store in use (Ctrl-C or SIGTERM stops all of it)."""
    from autoshrink.store import resolve_tracking_uri, sqlite_path
    from autoshrink.ui import PortInUse, serve

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        _die(f"no MLflow store at {uri}: run a search first, or pass --tracking-uri")
    try:
        serve(uri, port, on_ready=lambda url: typer.echo(f"MLflow UI for {uri} at {url} (Ctrl-C to stop)"))
    except PortInUse as exc:
        _die(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
