"""Every technique alone, in pairs and combined, against the fp32 baseline, measured in one run.

``python -m benchmarks compression`` writes ``results/compression.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoshrink.config import HardwareProfile
from autoshrink.measuring import Measurement, measure
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.workloads import Workload
from benchmarks._report import Report, arguments
from benchmarks._workloads import build_threads

DEFAULT_PLANS: tuple[Plan, ...] = (
    Plan(runtime="onnxruntime"),  # the runtime alone, no compression
    Plan(prune=0.3),
    Plan(prune=0.5),
    Plan(prune=0.5, distill_epochs=3),
    Plan(rank=0.5),
    Plan(rank=0.25),
    Plan(rank=0.5, distill_epochs=4),
    Plan(bits=8),
    Plan(bits=4),
    Plan(prune=0.5, rank=0.5, distill_epochs=4),
    Plan(prune=0.5, bits=8, distill_epochs=3),
    Plan(rank=0.5, bits=8, distill_epochs=4),
    Plan(prune=0.5, rank=0.5, bits=8),
    Plan(prune=0.5, rank=0.5, bits=8, distill_epochs=4),
    Plan(prune=0.5, rank=0.5, bits=8, distill_epochs=8),
    Plan(prune=0.5, rank=0.5, bits=4, distill_epochs=8),
    Plan(prune=0.6, bits=8, distill_epochs=4),
    Plan(prune=0.5, bits=8),  # reconstruction instead of distillation
    Plan(prune=0.7, bits=8),
)
#: Pruning ratios the reconstruction section compares with and without the least-squares refit.
RECONSTRUCT_RATIOS = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class BenchRow:
    plan: Plan
    measurement: Measurement
    compress_s: float
    skipped: int


def run_compression_bench(
    workload: Workload,
    *,
    plans: Sequence[Plan] = DEFAULT_PLANS,
    hardware: HardwareProfile | None = None,
    log: Callable[[str], None] = print,
) -> list[BenchRow]:
    """Compress and measure the baseline (``Plan()``) and every plan, scoring on the test split."""
    hardware = hardware or HardwareProfile()
    rows = []
    for plan in (Plan(), *plans):
        start = time.perf_counter()
        artifact = compress(workload.model, plan, train_data=workload.train, example_input=workload.example_input)
        built = time.perf_counter() - start
        m = measure(artifact, eval_data=workload.test, hardware=hardware)
        rows.append(BenchRow(plan, m, built, len(artifact.skipped)))
        log(
            f"{plan.label:<32} acc {m.accuracy:.4f}  {m.latency_ms:7.3f} ms  "
            f"{m.size_bytes / 1e3:8.1f} kB  {m.energy_mj:7.3f} mJ  (built in {built:.1f} s)"
        )
    return rows


def reconstruction_rows(workload: Workload, ratios: Sequence[float] = RECONSTRUCT_RATIOS) -> list[dict[str, Any]]:
    """Test accuracy of the pruned torch model at each ratio, uniform without and with
    reconstruction and by sensitivity (no distillation), its parameters and the seconds pruning
    took (the sensitivity probe counted in the first ratio's)."""
    import copy

    import torch

    from autoshrink.data import batches, split_batch
    from autoshrink.techniques import Context, Stage, apply
    from autoshrink.techniques.prune import PruneConfig

    out = []
    methods = {"uniform, no reconstruction": PruneConfig(0.0, reconstruct=False), "uniform": PruneConfig(0.0),
               "sensitivity": PruneConfig(0.0, allocation="sensitivity", importance="activation")}  # fmt: skip
    cache: dict[str, Any] = {}  # one probe for every ratio, as in a search
    for ratio in ratios:
        for method, config in methods.items():
            start = time.perf_counter()
            context = Context(teacher=workload.model, train_data=workload.train, example_input=workload.example_input,
                              cache=cache)  # fmt: skip
            stage = apply(Stage(copy.deepcopy(workload.model)), replace(config, ratio=ratio), context)
            spent = time.perf_counter() - start
            correct = seen = 0
            with torch.no_grad():
                for batch in batches(workload.test, 256):
                    x, y = split_batch(batch)
                    correct += int((stage.module.eval()(x).argmax(1) == y).sum())
                    seen += len(y)
            params = stage.reports[-1].details["params_after"]
            out.append({"ratio": ratio, "method": method, "accuracy": correct / seen, "params": params, "prune_s": spent})
    return out


def write_report(rows: list[BenchRow], report: Report, workload: str,
                 reconstruction: Sequence[dict[str, Any]] = ()) -> Path:  # fmt: skip
    """Write ``compression.md``, ``compression.json`` and ``compression.png``."""
    base = rows[0].measurement
    hardware = report.hardware
    records = []
    for row in rows:
        m = row.measurement
        records.append(
            {
                "plan": row.plan.to_dict(),
                "label": "baseline (fp32 torch)" if row is rows[0] else row.plan.label,
                **m.to_dict(),
                "speedup": base.latency_ms / m.latency_ms,
                "size_ratio": base.size_bytes / m.size_bytes,
                "accuracy_delta_pt": 100 * (m.accuracy - base.accuracy),
                "compress_s": row.compress_s,
                "layers_skipped": row.skipped,
            }
        )
    lines = [
        *report.header(
            f"Compression benchmark: `{workload}` workload",
            "Every number below was measured in that run on the artifact itself (nothing predicted). "
            "Accuracy is on the test split.",
        ),
        f"- Latency: batch {base.batch_size}, {base.threads} thread(s), warm-up >= "
        f"{hardware.warmup_s} s, {base.latency_repeats} timed runs in 3 blocks, fastest block's "
        "median and p95.",
        f"- Energy: CPU energy per inference over {hardware.energy_s} s of back-to-back runs; "
        f"method: {base.energy_method}.",
        "- Size: bytes of the saved artifact (pickled torch module or ONNX file).",
        "",
        "| plan | runtime | test acc | delta (pt) | p50 ms | p95 ms | speed-up | bytes | size ratio | params | mJ/inf | build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['label']} | {r['runtime']} | {r['accuracy']:.4f} | {r['accuracy_delta_pt']:+.2f} | "
            f"{r['latency_ms']:.3f} | {r['latency_p95_ms']:.3f} | {r['speedup']:.1f}x | "
            f"{r['size_bytes']:,} | {r['size_ratio']:.1f}x | {r['num_parameters']:,} | "
            f"{r['energy_mj']:.3f} | {r['compress_s']:.1f} |"
        )
    lines += [
        "",
        "Labels: `pruneX` removes as many parameters as X of every channel group would (below 0.5 taken "
        "from the groups a probe found least sensitive, from 0.5 the same share of each), the least varying "
        "channels first, then refits the layers that lost inputs (structured, torch-pruning); `rankX` keeps X of "
        "each factorized layer's weights (truncated SVD into two thin layers); `int8` is ONNX "
        "Runtime static QDQ int8; `int4` adds 4-bit MatMulNBits weights for Linear layers (int8 "
        "elsewhere); `kdN` is N epochs of distillation from the original model; `fp32-ort` is the "
        "uncompressed model in ONNX Runtime (the runtime's share of the gain).",
        "",
        f"![accuracy vs latency]({report.path('.png').name})",
    ]
    if reconstruction:
        lines += [
            "",
            "## Pruning without distillation: what reconstruction and the allocation change",
            "",
            "Test accuracy of the pruned torch model, no distillation. `uniform, no reconstruction`: every channel group "
            "loses the ratio, smallest weights first, nothing refitted; `uniform`: then each layer that lost inputs is "
            "refitted by least squares to the unpruned layer's outputs on 256 training inputs (no labels); "
            "`sensitivity` (what `Plan(prune=...)` does): as many parameters go, below 0.5 from the groups a probe found "
            "least sensitive (from 0.5 every group loses the ratio), the least varying channels first, then the same refit. `prune s`: pruning time (the first "
            "sensitivity row includes the probe, which later ratios reuse).",
            "",
            "| prune | method | test acc | params | prune s |",
            "|---|---|---|---|---|",
            *(f"| {r['ratio']:g} | {r['method']} | {r['accuracy']:.4f} | {r['params']:,} | {r['prune_s']:.1f} |"
              for r in reconstruction),
        ]  # fmt: skip
    md = report.write({"workload": workload, "rows": records, "reconstruction": list(reconstruction)}, lines)
    _plot(records, report.path(".png"))
    return md


def _plot(records: list[dict[str, Any]], path: Path) -> None:
    from autoshrink.searching.report import new_figure

    fig, ax = new_figure()
    for r in records:
        ax.scatter(r["latency_ms"], 100 * r["accuracy"], s=max(12, r["size_bytes"] / 2e4), alpha=0.7)
        ax.annotate(r["label"], (r["latency_ms"], 100 * r["accuracy"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (batch 1, log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("autoshrink compression benchmark (marker area ~ artifact bytes)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("compression", __doc__)
    parser.add_argument("--workload", default="digits", help="built-in workload to compress (default: digits)")
    parser.add_argument("--threads", type=int, default=1, help="threads for timed inference (1, the default, is the stable choice)")
    parser.add_argument("--build-threads", type=int, default=0, help="threads for training/distillation (0 = all cores)")
    args = parser.parse_args(argv)
    from autoshrink import workloads

    build_threads(args.build_threads)
    report = Report("compression", args.out, hardware=HardwareProfile(threads=args.threads),
                    argv=sys.argv[1:] if argv is None else argv)  # fmt: skip
    wl = workloads.load(args.workload)
    rows = run_compression_bench(wl, hardware=report.hardware, log=print)
    print(f"wrote {write_report(rows, report, args.workload, reconstruction_rows(wl))}")


if __name__ == "__main__":
    main()
