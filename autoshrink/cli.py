"""The ``autoshrink`` command line: a thin shell over the Python API."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

app = typer.Typer(help="Find the best real compressed version of a trained PyTorch model.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write measured results to results/.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def _bench() -> None:
    """Benchmarks print their own progress: Optuna's study lines are noise there too."""
    _quiet_optuna()


@bench_app.command("compression")
def bench_compression(
    workload: str = typer.Option("digits", help="Built-in workload to compress."),
    out: Path = typer.Option(Path("results"), help="Folder for compression.md/.json/.png."),
    threads: int = typer.Option(1, help="Threads for timed inference (1 is the stable choice)."),
    build_threads: int = typer.Option(0, help="Threads for training/distillation (0 = all cores)."),
) -> None:
    """Measure every technique alone, in pairs and combined against the fp32 baseline."""
    import os

    import torch

    from autoshrink import workloads
    from autoshrink.bench.compression import run_compression_bench, write_report
    from autoshrink.config import HardwareProfile

    torch.set_num_threads(build_threads or os.cpu_count() or 1)
    wl = workloads.load(workload)
    hardware = HardwareProfile(threads=threads)
    rows = run_compression_bench(wl, hardware=hardware, log=typer.echo)
    path = write_report(rows, out, hardware, workload)
    typer.echo(f"wrote {path}")


@app.command("export-digits")
def export_digits(
    path: Path = typer.Argument(..., help="Folder to write (train/, val/, test/, one sub-folder per digit)."),
    image_size: int = typer.Option(32, help="Height and width of the PNGs."),
) -> None:
    """Write the built-in digits data as an image folder, to try --data imagefolder:PATH offline."""
    from autoshrink.workloads.vision import export_digits_folder

    counts = export_digits_folder(path, image_size=image_size)
    typer.echo(f"wrote {sum(counts.values())} images to {path} ({counts})")


@bench_app.command("models")
def bench_models(
    out: Path = typer.Option(Path("results"), help="Folder for models.md/.json."),
    image_size: int = typer.Option(224, help="Input size for the torchvision families."),
    models: str = typer.Option(",".join(("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                                         "regnet_x_400mf", "convnext_tiny")), help="Comma-separated torchvision names."),
    search_model: str = typer.Option("resnet18", help="Model for the search with real accuracy ('' to skip)."),
    search_trials: int = typer.Option(12, help="Trials of that search."),
    search_budget_ms: float = typer.Option(1.0, help="Latency budget of that search."),
) -> None:
    """torchvision families at 224x224 (bytes, latency) and one CLI search with real accuracy."""
    from autoshrink.bench.models import run_models_bench, run_search_row, write_models_report
    from autoshrink.config import HardwareProfile

    hardware = HardwareProfile()
    rows = run_models_bench(models.split(","), image_size=image_size, hardware=hardware, log=typer.echo)
    search_row = (
        run_search_row(out, model=search_model, trials=search_trials, latency_budget_ms=search_budget_ms, log=typer.echo)
        if search_model
        else None
    )
    typer.echo(f"wrote {write_models_report(rows, search_row, out, hardware, image_size)}")


@bench_app.command("grid")
def bench_grid(
    workload: str = typer.Option("digits", help="Workload whose default space is measured."),
    out: Path = typer.Option(Path("results"), help="Folder for grid-<workload>.json/.md."),
    build_threads: int = typer.Option(0, help="Threads for distillation (0 = all cores); timing uses 1."),
) -> None:
    """Every plan of the workload's default space, measured once: the table samplers are replayed on."""
    import os

    import torch

    from autoshrink import workloads
    from autoshrink.bench.grid import run_grid, write_grid
    from autoshrink.config import HardwareProfile
    from autoshrink.space import SearchSpace

    torch.set_num_threads(build_threads or os.cpu_count() or 1)
    wl = workloads.load(workload)
    hardware = HardwareProfile()
    table = run_grid(wl, SearchSpace.preset(wl.family), hardware=hardware, log=typer.echo)
    typer.echo(f"wrote {write_grid(table, out, workload, hardware)}")


@bench_app.command("search")
def bench_search(
    workload: str = typer.Option("digits", help="The workload whose grid table is replayed."),
    out: Path = typer.Option(Path("results"), help="Folder with grid-<workload>.json; writes search-quality.md/.json/.png."),
    samplers: str = typer.Option("tpe,tpe-multivariate,nsga2,random", help="Comma-separated samplers."),
    seeds: int = typer.Option(10, help="Seeds per cell."),
) -> None:
    """Replay samplers against the grid table (no model built): hypervolume and accuracy gap."""
    import json

    from autoshrink.bench.search_quality import run_search_quality, write_search_quality

    grid_file = out / f"grid-{workload}.json"
    if not grid_file.is_file():
        _die(f"{grid_file} does not exist: run `autoshrink bench grid --workload {workload}` first")
    results = run_search_quality(json.loads(grid_file.read_text()), samplers.split(","), seeds=seeds, log=typer.echo)
    typer.echo(f"wrote {write_search_quality(results, out, workload)}")


@bench_app.command("noise")
def bench_noise(
    workload: str = typer.Option("digits", help="Workload whose artifacts are measured repeatedly."),
    out: Path = typer.Option(Path("results"), help="Folder for noise.md/.json (reads grid-<workload>.json if there)."),
    repeats: int = typer.Option(10, help="Measurements per artifact."),
) -> None:
    """Run-to-run spread of latency and energy on the same artifact, against candidates' differences."""
    import json

    from autoshrink import workloads
    from autoshrink.bench.noise import run_noise, write_noise

    rows = run_noise(workloads.load(workload), repeats=repeats, log=typer.echo)
    grid_file = out / f"grid-{workload}.json"
    grid = json.loads(grid_file.read_text()) if grid_file.is_file() else None
    typer.echo(f"wrote {write_noise(rows, grid, out)}")


@bench_app.command("runtimes")
def bench_runtimes(
    out: Path = typer.Option(Path("results"), help="Folder for runtimes.md/.json."),
    trials: int = typer.Option(20, help="Trials of each of the two searches."),
    seeds: int = typer.Option(3, help="Pairs of searches per batch size (seeds 0, 1, ...)."),
    knob: str = typer.Option("measured", help="measured: auto times every runtime a profile names; sampled: the sampler draws it."),
) -> None:
    """One model in torch / ONNX Runtime / OpenVINO, and the README search without and with the runtime knob."""
    import os

    import torch

    from autoshrink import workloads
    from autoshrink.bench.runtimes import (
        KNOB_SETTINGS,
        KNOBS,
        run_knob_comparison,
        run_runtime_table,
        write_runtimes_report,
    )

    torch.set_num_threads(os.cpu_count() or 1)
    wl = workloads.load("digits")
    rows = run_runtime_table(wl, log=typer.echo)
    if knob not in KNOBS:
        raise typer.BadParameter(f"--knob must be one of {list(KNOBS)}")
    pairs = [run_knob_comparison(wl, trials=trials, batch_size=b, budget_ms=ms, seed=seed, knob=knob, log=typer.echo)
             for b, ms in KNOB_SETTINGS for seed in range(seeds)]  # fmt: skip
    typer.echo(f"wrote {write_runtimes_report(rows, pairs, out)}")


@bench_app.command("ray")
def bench_ray(
    out: Path = typer.Option(Path("results"), help="Folder for ray.md/.json."),
    workload: str = typer.Option("digits", help="Workload to search."),
    trials: int = typer.Option(8, help="Trials per backend."),
) -> None:
    """The same search locally and on Ray with 1 and 2 concurrent trials: trials/hour, overhead."""
    from autoshrink import workloads
    from autoshrink.bench.ray import run_ray_bench, write_ray_report

    rows = run_ray_bench(workloads.load(workload), trials=trials, log=typer.echo)
    typer.echo(f"wrote {write_ray_report(rows, out, workload, trials)}")


@bench_app.command("transformers")
def bench_transformers(
    out: Path = typer.Option(Path("results"), help="Folder for transformers.md/.json."),
    trials: int = typer.Option(20, help="Trials of the search on the trained model."),
) -> None:
    """Encoders with token inputs: per technique, per int8 recipe, and a search's best plan."""
    from autoshrink.bench.transformers import run_all

    typer.echo(f"wrote {run_all(out, trials=trials, log=typer.echo)}")


@bench_app.command("trial-time")
def bench_trial_time(
    against: str = typer.Option(..., help="The older commit to compare with (e.g. eed81ee)."),
    out: Path = typer.Option(Path("results"), help="Folder for trial-time.md/.json."),
    trials: int = typer.Option(20, help="Trials of each search."),
) -> None:
    """The README's main search on an older commit, then on this checkout: time per trial."""
    from autoshrink.bench.trial_time import run_trial_time, write_trial_time

    results = run_trial_time(against, trials=trials, log=typer.echo)
    typer.echo(f"wrote {write_trial_time(results, against, out)}")


def _die(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


WORKLOAD_HELP = (
    "digits (built in), torchvision:<model>, hf:<path or cached id>, package.module:function, path/to/file.py:function, "
    "or an installed plug-in."
)


@app.command()
def search(
    latency_budget_ms: Optional[float] = typer.Option(None, help="Median latency limit per batch, in ms (required here or in --config)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Run file (YAML) with workload, budget, space, hardware...; flags override it."),
    workload: Optional[str] = typer.Option(None, help=f"What to compress: {WORKLOAD_HELP} (default: digits)"),
    data: Optional[str] = typer.Option(None, help="Image data for torchvision models: digits or imagefolder:PATH."),
    weights: Optional[str] = typer.Option(None, help="torchvision weights: a weights name (from the local torch cache), a state-dict path, or none."),
    num_classes: Optional[int] = typer.Option(None, help="Resize the classification head to this many classes."),
    image_size: Optional[int] = typer.Option(None, help="Input height/width for image models."),
    finetune_epochs: Optional[int] = typer.Option(None, help="Fine-tune a torchvision model on the train split first (cached)."),
    workload_arg: list[str] = typer.Option([], "--workload-arg", help="key=value passed to the workload's function (repeatable)."),
    trials: Optional[int] = typer.Option(None, help="Total trials in the study (finished ones count when resuming) (default: 20)."),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment / Optuna study name (default: from the workload)."),
    space: Optional[Path] = typer.Option(None, help="Search space YAML (default: the workload family's)."),
    hardware: Optional[Path] = typer.Option(None, help="Hardware profile YAML (default: 1 thread, batch 1)."),
    size_budget_mb: Optional[float] = typer.Option(None, help="Artifact size limit in MB."),
    energy_budget_mj: Optional[float] = typer.Option(None, help="Energy per inference limit in mJ."),
    min_accuracy: Optional[float] = typer.Option(None, help="Lowest acceptable validation accuracy (0-1)."),
    sampler: Optional[str] = typer.Option(None, help="tpe-multivariate, tpe, nsga2 or random (default: tpe-multivariate)."),
    warm_start: Optional[bool] = typer.Option(None, "--warm-start/--no-warm-start", help="Start with plans that usually work (default: on)."),
    seed: Optional[int] = typer.Option(None, help="Seed for the sampler and distillation (default: 0)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default sqlite:///./.autoshrink/mlflow.db)."),
    build_threads: int = typer.Option(0, help="Threads for distillation (0 = all cores); timing uses the profile's."),
    backend: Optional[str] = typer.Option(None, help="Where trials run: local (this process) or ray (default: local)."),
    ray_address: Optional[str] = typer.Option(None, help="Join this Ray cluster ('auto' or host:port) instead of starting one."),
    max_concurrent_trials: Optional[int] = typer.Option(None, help="Ray: trials at the same time (default: 1)."),
    trial_cpus: Optional[float] = typer.Option(None, help="Ray: CPUs each trial reserves (default: 1)."),
    trial_gpus: Optional[float] = typer.Option(None, help="Ray: GPUs each trial reserves (default: 0)."),
    measure_on: Optional[str] = typer.Option(None, help="Ray: measure latency and energy only on nodes with this custom resource."),
    accuracy_tolerance: Optional[float] = typer.Option(None, help="Validation-accuracy differences up to this are noise: the fastest within it of the best wins (default: 1 standard error)."),
    pareto_floor: Optional[float] = typer.Option(None, help="Keep candidates more than this below the baseline's accuracy out of the Pareto set; 0 keeps all (default: 0.05)."),
) -> None:
    """Search compression plans under a latency budget; log to MLflow; register the best."""
    import os

    import torch

    from autoshrink import workloads
    from autoshrink.config import ConfigError, HardwareProfile
    from autoshrink.searching import search as run_search
    from autoshrink.space import SearchSpace
    from autoshrink.techniques import CompressionError

    say = _Reporter()
    try:
        run = _run_config(
            config, latency_budget_ms=latency_budget_ms, size_mb=size_budget_mb, energy_mj=energy_budget_mj,
            min_accuracy=min_accuracy, workload=workload, trials=trials, experiment=experiment,
            space=SearchSpace.from_yaml(space) if space else None,
            hardware=HardwareProfile.from_yaml(hardware) if hardware else None,
            sampler=sampler, seed=seed, tracking_uri=tracking_uri,
            accuracy_tolerance=accuracy_tolerance, pareto_floor=pareto_floor, warm_start=warm_start,
            backend=_backend_options(backend, address=ray_address, max_concurrent_trials=max_concurrent_trials,
                                     trial_cpus=trial_cpus, trial_gpus=trial_gpus, measure_on=measure_on),
            workload_options=_workload_options(
                weights=weights, num_classes=num_classes, data=data, image_size=image_size,
                finetune_epochs=finetune_epochs, args=workload_arg,
            ),
        )  # fmt: skip
        backend_obj = run.make_backend()
        selection = run.make_selection()
        say.line(f"loading workload '{run.workload}'")
        wl = workloads.load(run.workload, **run.workload_options)
    except (ConfigError, ValueError) as exc:
        _die(str(exc))
    torch.set_num_threads(build_threads or os.cpu_count() or 1)
    _quiet_optuna()
    say.line(f"searching {run.trials} trials of '{wl.name}' under {run.budget.to_dict()} -> experiment '{run.experiment}'")
    try:
        with _sigterm_as_interrupt(), say.progress(run.trials) as update:
            result = run_search(
                wl, budget=run.budget, space=run.space, trials=run.trials, experiment=run.experiment,
                tracking_uri=run.tracking_uri, hardware=run.hardware, sampler=run.sampler, seed=run.seed,
                progress=update, run_file=run.to_yaml(), backend=backend_obj, selection=selection,
                warm_start=run.warm_start,
            )  # fmt: skip
    except KeyboardInterrupt:
        _die(
            f"interrupted: {say.done} finished trial(s) are kept; run the same command again to resume",
            code=130,
        )
    except (ConfigError, CompressionError) as exc:
        _die(str(exc))
    _print_result(result)


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


def _run_config(config: Path | None, *, latency_budget_ms: float | None, size_mb: float | None,
                energy_mj: float | None, min_accuracy: float | None, **overrides: Any) -> Any:  # fmt: skip
    """The run file (if any) with the command-line flags on top."""
    from dataclasses import replace

    from autoshrink.config import Budget, ConfigError
    from autoshrink.runfile import RunConfig
    from autoshrink.store import experiment_name_for

    limits = {"latency_ms": latency_budget_ms, "size_mb": size_mb, "energy_mj": energy_mj, "min_accuracy": min_accuracy}
    given = {k: v for k, v in limits.items() if v is not None}
    if config is not None:
        run = RunConfig.from_yaml(config)
        run = replace(run, budget=replace(run.budget, **given))
    else:
        if latency_budget_ms is None:
            raise ConfigError("a latency budget is required: --latency-budget-ms MS (or a run file with --config)")
        run = RunConfig(budget=Budget(**given))
        if overrides.get("experiment") is None:
            overrides["experiment"] = experiment_name_for(overrides.get("workload") or run.workload)
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


class _Reporter:
    """Progress for people: a live bar in a terminal, one plain line per event otherwise."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=False)
        self.interactive = self.console.is_terminal
        self.done = 0

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text)
        else:
            print(text, flush=True)

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[Callable[[Any], None]]:
        if not self.interactive:

            def plain(p: Any) -> None:
                self.done = p.done
                counts = f"{p.done}/{p.total} done, {p.feasible} meet the budget, {p.failed} failed"
                prefix = f"[{_clock(p.elapsed_s)}]"
                print(f"{prefix} {p.last}" + (f" | {counts}" if p.stage == "trial" else ""), flush=True)

            yield plain
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("feasible {task.fields[feasible]} | failed {task.fields[failed]} | best {task.fields[best]}"),
        )  # fmt: skip
        with Progress(*columns, console=self.console) as bar:
            task = bar.add_task("search", total=total, feasible=0, failed=0, best="-")

            def update(p: Any) -> None:
                self.done = p.done
                bar.console.print(f"[dim]{_clock(p.elapsed_s)}[/dim] {p.last}", highlight=False)
                bar.update(task, completed=p.done, feasible=p.feasible, failed=p.failed, best=p.best or "-")

            yield update


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _print_result(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from autoshrink.searching.report import COLUMNS, headers, markdown_table, pareto_rows

    console = Console(soft_wrap=True)  # long lines stay whole in a log file
    title = f"Pareto set of '{result.experiment}' ({result.n_complete} measured, {result.n_failed} failed)"
    if console.is_terminal:
        table = Table(title=title)
        for col in headers(result):
            table.add_column(col)
        for row in pareto_rows(result):
            table.add_row(*(row[c] for c in COLUMNS))
        console.print(table)
    else:  # a log file: a plain Markdown table, no box drawing
        print("\n".join([title, "", *markdown_table(result)]), flush=True)
    style = "bold green" if result.met_budget else "bold red"
    console.print(result.message, style=style)
    if result.failures:
        for number, error in result.failures.items():
            console.print(f"trial {number} failed: {error[:200]}", style="yellow")
    console.print(f"energy: {result.baseline.measurement.energy_method}")
    if result.registered_model:
        console.print(f"registered: models:/{result.registered_model}")
    default_store = result.tracking_uri.endswith(".autoshrink/mlflow.db")
    console.print(f"inspect:    autoshrink ui{'' if default_store else f' --tracking-uri {result.tracking_uri}'}")
    console.print(
        f"load:       python -c \"import autoshrink; m = autoshrink.load_best('{result.experiment}'"
        f"{'' if default_store else f', tracking_uri={result.tracking_uri!r}'}); print(m)\""
    )


@app.command()
def best(
    experiment: str = typer.Option(..., help="Experiment name of a finished search."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default sqlite:///./.autoshrink/mlflow.db)."),
    latency_budget_ms: Optional[float] = typer.Option(None, help="Pick the best logged model under this latency instead of the registered one."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Print the best model under the budget (the registered `best`, or under --latency-budget-ms)."""
    import json

    from autoshrink.config import Budget, ConfigError
    from autoshrink.searching import best_run
    from autoshrink.tracking import METRIC, RUNTIME

    try:
        budget = Budget(latency_budget_ms) if latency_budget_ms else None
        run = best_run(experiment, tracking_uri=tracking_uri, budget=budget)
    except (LookupError, ConfigError) as exc:
        _die(str(exc))
    info = {
        "experiment": experiment,
        "run_id": run.info.run_id,
        "trial": int(run.data.tags.get("autoshrink.trial", -1)),
        "plan": {k: v for k, v in run.data.params.items()},
        "metrics": run.data.metrics,
        "model_uri": run.data.tags.get("autoshrink.model_uri"),
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
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default sqlite:///./.autoshrink/mlflow.db)."),
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
