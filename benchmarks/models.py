"""torchvision families at 224x224 (bytes, latency), and one search with real accuracy.

``python -m benchmarks models`` writes ``results/models.md`` and ``.json``.

Part 1 builds each family with random weights (no download) and measures, in one run, the bytes
and batch-1 latency of fp32 torch, int8 alone and combined plans; ConvNeXt-tiny is also pruned
75%. Accuracy means nothing with random weights, so it is not reported there.

Part 2 runs ``autoshrink search`` (the command line, as a user would) on a torchvision model
fine-tuned on the built-in digits data, and reports its baseline and registered best.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from autoshrink.config import HardwareProfile
from autoshrink.plan import Plan
from benchmarks._report import Report, arguments

FAMILIES = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny")
PLANS = (
    Plan(),
    Plan(bits=8),
    Plan(prune=0.5, bits=8),
    Plan(prune=0.5, rank=0.5, bits=8),
)
EXTRA = {"convnext_tiny": (Plan(prune=0.75), Plan(prune=0.75, bits=8))}
CALIBRATION = 32


@dataclass(frozen=True)
class ModelRow:
    model: str
    plan: str
    runtime: str
    size_bytes: int
    parameters: int
    latency_ms: float
    latency_p95_ms: float
    compress_s: float
    skipped: int


def run_models_bench(
    names: Sequence[str] = FAMILIES,
    *,
    image_size: int = 224,
    hardware: HardwareProfile | None = None,
    log: Callable[[str], None] = print,
) -> list[ModelRow]:
    """Bytes and latency of each plan on each family, measured on the saved artifact."""
    import torchvision

    from autoshrink.measuring.latency import measure_latency
    from autoshrink.pipeline import compress

    hardware = hardware or HardwareProfile()
    rows = []
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(CALIBRATION, 3, image_size, image_size, generator=gen)
    for name in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torchvision.models.get_model(name, weights=None).eval()
        for plan in (*PLANS, *EXTRA.get(name, ())):
            start = time.perf_counter()
            artifact = compress(model, plan, train_data=(images,), example_input=images[:1])
            built = time.perf_counter() - start
            latency = measure_latency(artifact, images[: hardware.batch_size], hardware)
            row = ModelRow(
                name, plan.label, artifact.runtime, artifact.size_bytes, artifact.num_parameters,
                latency.median_ms, latency.p95_ms, built, len(artifact.skipped),
            )  # fmt: skip
            rows.append(row)
            log(f"{name:<20} {plan.label:<26} {row.size_bytes / 1e6:8.2f} MB {row.latency_ms:9.2f} ms  (built in {built:.0f} s)")
    return rows


def run_search_row(
    out_dir: Path,
    *,
    model: str = "resnet18",
    image_size: int = 32,
    finetune_epochs: int = 8,
    latency_budget_ms: float = 1.0,
    trials: int = 12,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the command line on ``torchvision:<model> --data digits`` and read back its result."""
    from autoshrink.searching import best_run
    from autoshrink.store import default_store_dir

    store = default_store_dir() / "bench-models"
    uri = f"sqlite:///{store.resolve()}/mlflow.db"
    command = [
        "autoshrink", "search", "--workload", f"torchvision:{model}", "--data", "digits",
        "--image-size", str(image_size), "--finetune-epochs", str(finetune_epochs),
        "--latency-budget-ms", str(latency_budget_ms), "--trials", str(trials),
        "--experiment", f"{model}-digits", "--tracking-uri", uri,
    ]  # fmt: skip
    log("$ " + " ".join(command))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "autoshrink.cli", *command[1:]], check=True)
    elapsed = time.perf_counter() - start
    run = best_run(f"{model}-digits", tracking_uri=uri)
    client_runs = _parent_metrics(uri, f"{model}-digits")
    return {
        "command": " ".join(command),
        "seconds": elapsed,
        "best_plan": {k: v for k, v in run.data.params.items()},
        "best": {k: run.data.metrics[k] for k in ("accuracy", "test_accuracy", "latency_ms", "size_bytes") if k in run.data.metrics},
        "baseline": {k: client_runs.get(f"baseline_{k}") for k in ("accuracy", "test_accuracy", "latency_ms", "size_bytes")},
    }


def _parent_metrics(uri: str, experiment: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no experiment {experiment!r} in {uri}")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`autoshrink.role` = 'search'")
    return dict(runs[0].data.metrics)


def write_models_report(rows: list[ModelRow], search: dict[str, Any] | None, report: Report, image_size: int) -> Path:
    hardware = report.hardware
    lines = [
        *report.header(
            "torchvision families: real compression, measured",
            "Every figure was measured in that run on the saved artifact (nothing predicted).",
        ),
        f"- Input {image_size}x{image_size}, batch {hardware.batch_size}, {hardware.threads} thread(s); "
        "latency = fastest of 3 block medians of "
        f"{hardware.repeats} runs after >= {hardware.warmup_s} s of warm-up. Size = bytes of the saved artifact.",
        "- Random weights (nothing is downloaded here): latency and bytes are real, accuracy is not "
        "reported. int8 is calibrated on random images.",
        "",
        "| model | plan | runtime | MB | size ratio | params | p50 ms | p95 ms | speed-up | layers skipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r.model: r for r in rows if r.plan == "fp32"}
    for r in rows:
        b = base[r.model]
        lines.append(
            f"| {r.model} | {r.plan} | {r.runtime} | {r.size_bytes / 1e6:.2f} | {b.size_bytes / r.size_bytes:.1f}x | "
            f"{r.parameters:,} | {r.latency_ms:.2f} | {r.latency_p95_ms:.2f} | {b.latency_ms / r.latency_ms:.1f}x | {r.skipped} |"
        )
    conv = [r for r in rows if r.model == "convnext_tiny" and r.plan == "prune0.75-fp32"]
    if conv:
        saved = 1 - conv[0].size_bytes / base["convnext_tiny"].size_bytes
        lines += [
            "",
            f"**ConvNeXt-tiny at 75% structured pruning**: {base['convnext_tiny'].size_bytes / 1e6:.1f} MB -> "
            f"{conv[0].size_bytes / 1e6:.1f} MB, a {100 * saved:.1f}% size reduction in bytes (the claim of 'up "
            "to 75%' understates it: removing 75% of the channels of both sides of a layer removes about "
            "94% of its weights). Accuracy after such pruning needs distillation; not measured here.",
        ]
    if search:
        b, best = search["baseline"], search["best"]
        lines += [
            "",
            "## One search with real accuracy, through the command line",
            "",
            f"`{search['command']}` ({search['seconds'] / 60:.1f} min, including the fine-tuning unless it was cached from an earlier run):",
            "",
            "| | val acc | test acc | p50 ms | kB |",
            "|---|---|---|---|---|",
            f"| baseline (fp32 torch) | {b['accuracy']:.4f} | {b['test_accuracy']:.4f} | {b['latency_ms']:.3f} | {b['size_bytes'] / 1e3:.1f} |",
            f"| registered best | {best['accuracy']:.4f} | {best.get('test_accuracy', float('nan')):.4f} | "
            f"{best['latency_ms']:.3f} | {best['size_bytes'] / 1e3:.1f} |",
            "",
            f"Best plan: `{json.dumps(search['best_plan'], sort_keys=True)}`; "
            f"{b['latency_ms'] / best['latency_ms']:.1f}x faster, {b['size_bytes'] / best['size_bytes']:.1f}x smaller.",
        ]
    return report.write({"rows": [asdict(r) for r in rows], "search": search}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("models", __doc__)
    parser.add_argument("--image-size", type=int, default=224, help="input size for the torchvision families (default: 224)")
    parser.add_argument("--models", default=",".join(FAMILIES), help=f"comma-separated torchvision names (default: {','.join(FAMILIES)})")
    parser.add_argument("--search-model", default="resnet18", help="model for the search with real accuracy ('' to skip; default: resnet18)")
    parser.add_argument("--search-trials", type=int, default=12, help="trials of that search (default: 12)")
    parser.add_argument("--search-budget-ms", type=float, default=1.0, help="latency budget of that search (default: 1.0)")
    args = parser.parse_args(argv)
    report = Report("models", args.out, argv=sys.argv[1:] if argv is None else argv)
    rows = run_models_bench(args.models.split(","), image_size=args.image_size, hardware=report.hardware, log=print)
    search_row = (
        run_search_row(args.out, model=args.search_model, trials=args.search_trials,
                       latency_budget_ms=args.search_budget_ms, log=print)
        if args.search_model
        else None
    )  # fmt: skip
    print(f"wrote {write_models_report(rows, search_row, report, args.image_size)}")


if __name__ == "__main__":
    main()
