"""The ``autoshrink`` command line: a thin shell over the Python API."""

from __future__ import annotations

from pathlib import Path

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
