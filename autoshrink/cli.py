"""The ``autoshrink`` command line: a thin shell over the Python API."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Find the best real compressed version of a trained PyTorch model.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write measured results to results/.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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
    from autoshrink.bench import run_compression_bench, write_report
    from autoshrink.config import HardwareProfile

    torch.set_num_threads(build_threads or os.cpu_count() or 1)
    wl = workloads.load(workload, verbose=True)
    hardware = HardwareProfile(threads=threads)
    rows = run_compression_bench(wl, hardware=hardware, log=typer.echo)
    path = write_report(rows, out, hardware, workload)
    typer.echo(f"wrote {path}")


def _die(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def search(
    latency_budget_ms: float = typer.Option(..., help="Median latency limit per batch, in ms (required)."),
    trials: int = typer.Option(20, help="Total trials in the study (finished ones count when resuming)."),
    experiment: str = typer.Option("digits-demo", help="MLflow experiment / Optuna study name."),
    workload: str = typer.Option("digits", help="Built-in workload to compress."),
    space: Optional[Path] = typer.Option(None, help="Search space YAML (default: search_spaces/default.yaml)."),
    hardware: Optional[Path] = typer.Option(None, help="Hardware profile YAML (default: 1 thread, batch 1)."),
    size_budget_mb: Optional[float] = typer.Option(None, help="Artifact size limit in MB."),
    energy_budget_mj: Optional[float] = typer.Option(None, help="Energy per inference limit in mJ."),
    min_accuracy: Optional[float] = typer.Option(None, help="Lowest acceptable validation accuracy (0-1)."),
    sampler: str = typer.Option("tpe", help="tpe, nsga2 or random."),
    seed: int = typer.Option(0, help="Seed for the sampler and distillation."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default sqlite:///./.autoshrink/mlflow.db)."),
    build_threads: int = typer.Option(0, help="Threads for distillation (0 = all cores); timing uses the profile's."),
) -> None:
    """Search compression plans under a latency budget; log to MLflow; register the best."""
    import os

    import torch

    from autoshrink import workloads
    from autoshrink.config import Budget, ConfigError, HardwareProfile
    from autoshrink.searching import search as run_search
    from autoshrink.space import SearchSpace
    from autoshrink.techniques import CompressionError

    try:
        budget = Budget(latency_budget_ms, size_budget_mb, energy_budget_mj, min_accuracy)
        default_space = Path("search_spaces/default.yaml")
        space_obj = SearchSpace.from_yaml(space) if space else (
            SearchSpace.from_yaml(default_space) if default_space.is_file() else SearchSpace()
        )
        hw = HardwareProfile.from_yaml(hardware) if hardware else HardwareProfile()
        wl = workloads.load(workload, verbose=True)
    except (ConfigError, ValueError) as exc:
        _die(str(exc))
    torch.set_num_threads(build_threads or os.cpu_count() or 1)
    typer.echo(f"searching {trials} trials on '{workload}' under {budget.to_dict()} -> experiment '{experiment}'")
    try:
        with _progress(trials) as update:
            result = run_search(
                wl.model, train_data=wl.train, eval_data=wl.val, test_data=wl.test,
                example_input=wl.example_input, budget=budget, space=space_obj, trials=trials,
                experiment=experiment, tracking_uri=tracking_uri, hardware=hw, sampler=sampler,
                seed=seed, progress=update,
            )  # fmt: skip
    except (ConfigError, CompressionError) as exc:
        _die(str(exc))
    _print_result(result)


def _progress(total: int):  # type: ignore[no-untyped-def]
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def cm():  # type: ignore[no-untyped-def]
        columns = (
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("feasible {task.fields[feasible]} | failed {task.fields[failed]} | best {task.fields[best]}"),
        )  # fmt: skip
        with Progress(*columns) as bar:
            task = bar.add_task("search", total=total, feasible=0, failed=0, best="-")

            def update(p) -> None:  # type: ignore[no-untyped-def]
                bar.update(task, completed=p.done, feasible=p.feasible, failed=p.failed, best=p.best or "-")

            yield update

    return cm()


def _print_result(result) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    base = result.baseline.measurement
    table = Table(title=f"Pareto set of '{result.experiment}' ({result.n_complete} measured, {result.n_failed} failed)")
    for col in ("trial", "plan", "runtime", "val acc", "test acc", "p50 ms", "p95 ms", "speed-up", "kB", "mJ/inf", "budget"):
        table.add_column(col)
    for c in [result.baseline, *result.pareto]:
        m = c.measurement
        table.add_row(
            "baseline" if c.trial is None else str(c.trial), c.plan.label, m.runtime, f"{m.accuracy:.4f}",
            f"{c.test_accuracy:.4f}" if c.test_accuracy is not None else "-", f"{m.latency_ms:.3f}",
            f"{m.latency_p95_ms:.3f}", f"{base.latency_ms / m.latency_ms:.1f}x", f"{m.size_bytes / 1e3:.1f}",
            f"{m.energy_mj:.3f}", "met" if c.feasible else "over",
        )  # fmt: skip
    console.print(table)
    style = "bold green" if result.met_budget else "bold red"
    console.print(result.message, style=style)
    if result.failures:
        for number, error in result.failures.items():
            console.print(f"trial {number} failed: {error[:200]}", style="yellow")
    console.print(f"energy: {base.energy_method}")
    if result.registered_model:
        console.print(f"registered: models:/{result.registered_model}")
    console.print(f"inspect:    autoshrink ui --tracking-uri {result.tracking_uri}")
    console.print(
        f"load:       python -c \"import autoshrink; m = autoshrink.load_best('{result.experiment}'"
        f"{'' if result.tracking_uri.endswith('.autoshrink/mlflow.db') else f', tracking_uri={result.tracking_uri!r}'}); print(m)\""
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
        "runtime": run.data.tags.get("runtime"),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    m = info["metrics"]
    typer.echo(
        f"trial {info['trial']} ({info['runtime']}): val acc {m.get('accuracy', float('nan')):.4f}, "
        f"test acc {m.get('test_accuracy', float('nan')):.4f}, {m.get('latency_ms', float('nan')):.3f} ms, "
        f"{m.get('size_bytes', 0) / 1e3:.1f} kB, plan {info['plan']}\nmodel: {info['model_uri']}"
    )


@app.command()
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default sqlite:///./.autoshrink/mlflow.db)."),
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Start the MLflow UI on 127.0.0.1 for the store in use."""
    import os
    import subprocess
    import sys

    from autoshrink.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(cmd, env=env, check=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
