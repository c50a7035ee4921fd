"""One model in torch / ONNX Runtime / OpenVINO, and the README search without and with the runtime knob.

``python -m benchmarks runtimes`` writes ``results/runtimes.md`` and ``.json`` (``--knob sampled``:
``results/runtimes-sampled-knob.*``); needs the ``openvino`` extra.

Part 1: the digits student (prune 0.5 + rank 0.5, distilled) and the uncompressed model in
torch, ONNX Runtime and OpenVINO, fp32 and int8 (OpenVINO's int8 two ways: NNCF, or its own run
of ONNX Runtime's QDQ file), batch 1 and 32, all measured in one process, interleaved: every
round times every artifact once, and the fastest round's median is kept.

Part 2: the README's search (20 trials, 1 ms) without and with the runtime knob, and the same
at batch 32 (10 ms per batch), once per seed; both registered models of each pair re-measured
side by side, and the speed-ups summarized over the seeds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoshrink.config import Budget, HardwareProfile
from autoshrink.plan import Plan
from autoshrink.space import SearchSpace
from benchmarks._report import Report, arguments
from benchmarks._workloads import build_threads, quiet_optuna, scratch_dir

ROUNDS = 4
STUDENT = {"prune": 0.5, "rank": 0.5, "distill_epochs": 8}
VARIANTS: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("torch fp32", {"runtime": "torch"}, {}),
    ("ONNX Runtime fp32", {"runtime": "onnxruntime"}, {}),
    ("ONNX Runtime int8 (static QDQ)", {"bits": 8, "runtime": "onnxruntime"}, {}),
    ("OpenVINO fp32", {"runtime": "openvino"}, {}),
    ("OpenVINO int8 (NNCF)", {"bits": 8, "runtime": "openvino"}, {"openvino_int8": "nncf"}),
    ("OpenVINO int8 (runs the QDQ file)", {"bits": 8, "runtime": "openvino"}, {"openvino_int8": "qdq"}),
)


def _build(workload: Any, plan: Plan, quantize_options: dict[str, Any], cache: dict[str, Any]) -> Any:
    from autoshrink.inputs import InputSpec
    from autoshrink.pipeline import prepare, run_techniques, technique_configs, to_artifact
    from autoshrink.techniques import Stage
    from autoshrink.techniques.quantize import QuantizeConfig

    ctx = prepare(workload.model, train_data=workload.train, example_input=workload.example_input, cache=cache)
    configs = technique_configs(plan)
    configs[-1] = QuantizeConfig(bits=plan.bits, runtime=plan.resolved_runtime, **quantize_options)
    import copy

    stage = run_techniques(Stage(module=copy.deepcopy(ctx.teacher).eval()), configs, ctx)
    return to_artifact(stage, plan, InputSpec.of(workload.example_input))


def interleaved(artifacts: dict[str, Any], workload: Any, batches: tuple[int, ...] = (1, 32)) -> dict[str, dict[int, float]]:
    """Median latency per artifact and batch size: ``ROUNDS`` rounds over all, fastest round kept."""
    from autoshrink.measuring import timing_batch
    from autoshrink.measuring.latency import measure_latency

    best: dict[str, dict[int, float]] = {name: {} for name in artifacts}
    for _ in range(ROUNDS):
        for b in batches:
            hardware = HardwareProfile(batch_size=b, repeats=30 if b > 1 else 50)
            batch = timing_batch(workload.val, b)
            for name, art in artifacts.items():
                ms = measure_latency(art, batch, hardware).median_ms
                best[name][b] = min(best[name].get(b, ms), ms)
    return best


def run_runtime_table(workload: Any, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    from autoshrink.measuring.accuracy import score

    rows = []
    cache: dict[str, Any] = {}
    for model_name, base in (("student (prune 0.5 + rank 0.5 + KD 8)", STUDENT), ("uncompressed", {})):
        artifacts = {}
        for label, plan_options, q_options in VARIANTS:
            plan = Plan(**base, **plan_options)  # type: ignore[arg-type]
            artifacts[label] = _build(workload, plan, q_options, cache)
            log(f"built {model_name}: {label}")
        times = interleaved(artifacts, workload)
        for label, art in artifacts.items():
            rows.append({
                "model": model_name, "artifact": label, "b1_ms": times[label][1], "b32_ms": times[label][32],
                "bytes": art.size_bytes, "test_accuracy": score(art, workload.test),
            })  # fmt: skip
            log(f"{model_name:<40} {label:<36} {times[label][1]:7.3f} ms  {times[label][32]:8.2f} ms@32")
    return rows


KNOB_SETTINGS = ((1, 1.0), (32, 10.0))  # (batch size, latency budget in ms): the README's, and batched
# How the search gets the runtime knob: (the space's runtimes, the hardware profile's runtimes, how the report says it)
KNOBS: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None, str]] = {
    "measured": (("auto",), ("torch", "onnxruntime", "openvino"),
                 "`runtime: [auto]` with a hardware profile that names `runtimes: [torch, onnxruntime, openvino]`: "
                 "every architecture is lowered to each runtime that runs its bit width and the fastest measured "
                 "is kept; the sampler draws no runtime"),
    "sampled": (("auto", "onnxruntime", "openvino"), None,
                "`runtime: [auto, onnxruntime, openvino]` (`search_spaces/runtimes.yaml`): the sampler draws the "
                "runtime, `auto` being the fastest measured of them"),
}  # fmt: skip


def run_knob_comparison(
    workload: Any, *, trials: int = 20, batch_size: int = 1, budget_ms: float = 1.0, seed: int = 0,
    knob: str = "measured", log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The README search at ``batch_size`` without and with the runtime knob (`KNOBS`, both
    seeded with ``seed``); the registered bests re-measured together at batch 1 and 32."""
    from autoshrink.artifact import load_artifact
    from autoshrink.measuring.accuracy import score
    from autoshrink.searching import search

    out: dict[str, Any] = {"batch_size": batch_size, "budget_ms": budget_ms, "trials": trials, "seed": seed, "knob": knob}
    artifacts = {}
    space_runtimes, profile_runtimes, _ = KNOBS[knob]
    for label, runtimes, allowed in (("without the knob", ("auto",), None), ("with the knob", space_runtimes, profile_runtimes)):
        space = replace(SearchSpace.preset(workload.family), runtime=runtimes)
        root = scratch_dir("autoshrink-bench-rt-")
        start = time.perf_counter()
        result = search(workload, budget=Budget(latency_ms=budget_ms), space=space, trials=trials, experiment="rt",
                        tracking_uri=f"sqlite:///{root}/mlflow.db", seed=seed,
                        hardware=HardwareProfile(batch_size=batch_size, runtimes=allowed))  # fmt: skip
        best = result.best
        out[label] = {"message": result.message, "minutes": (time.perf_counter() - start) / 60,
                      "plan": best.plan.label if best else None, "search_ms": best.measurement.latency_ms if best else None,
                      "val_accuracy": best.measurement.accuracy if best else None}  # fmt: skip
        if best is not None and best.artifact_path:
            artifacts[label] = load_artifact(best.artifact_path)
        log(f"batch {batch_size}, seed {seed}, {label}: {result.message}")
    times = interleaved(artifacts, workload)
    for label, art in artifacts.items():
        out[label] |= {"b1_ms": times[label][1], "b32_ms": times[label][32], "bytes": art.size_bytes,
                       "test_accuracy": score(art, workload.test), "runtime": art.runtime}  # fmt: skip
    return out


def write_runtimes_report(rows: list[dict[str, Any]], knob: list[dict[str, Any]], report: Report) -> Path:
    lines = [
        *report.header(
            "Runtimes: the same model in torch, ONNX Runtime and OpenVINO",
            f"1 thread. Latency: median of a block after warm-up, {ROUNDS} rounds interleaved over all artifacts, "
            "fastest round kept; test accuracy on the digits test split.",
        ),
        "| model | artifact | batch 1 ms | batch 32 ms | bytes | test acc |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['artifact']} | {r['b1_ms']:.3f} | {r['b32_ms']:.2f} | {r['bytes']:,} | {r['test_accuracy']:.4f} |")
    lines += _knob_summary(knob)
    for comparison in knob:
        lines += _knob_section(comparison)
    return report.write({"rows": rows, "knob": knob}, lines)


def _knob_section(comparison: dict[str, Any]) -> list[str]:
    b, budget, seed = comparison["batch_size"], comparison["budget_ms"], comparison.get("seed", 0)
    without, with_ = comparison.get("without the knob", {}), comparison.get("with the knob", {})
    lines = [
        "",
        f"## The search at batch {b} ({comparison['trials']} trials, {budget:g} ms per batch, seed {seed}) without and with the runtime knob",
        "",
        "Without: `runtime: [auto]` and a profile that names no runtime (torch for fp32, ONNX Runtime for int8 / "
        f"4-bit). With: {KNOBS[comparison.get('knob', 'sampled')][2]}. Both registered models re-measured here, side by side:",
        "",
        "| search | registered plan | runtime | val acc | batch 1 ms | batch 32 ms | bytes | test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in (("without the knob", without), ("with the knob", with_)):
        if "b1_ms" in r:
            lines.append(f"| {label} | {r['plan']} | {r['runtime']} | {r['val_accuracy']:.4f} | {r['b1_ms']:.3f} | {r['b32_ms']:.2f} "
                         f"| {r['bytes']:,} | {r['test_accuracy']:.4f} |")  # fmt: skip
        else:
            lines.append(f"| {label} | none registered: {r.get('message', '')} | | | | | | |")
    if "b1_ms" in without and "b1_ms" in with_:
        lines += ["", f"With the knob the registered best is **{without['b1_ms'] / with_['b1_ms']:.2f}x** as fast at batch 1 "
                  f"and **{without['b32_ms'] / with_['b32_ms']:.2f}x** at batch 32, test accuracy "
                  f"{100 * (with_['test_accuracy'] - without['test_accuracy']):+.2f} points"
                  + (" (the issue's target: >= 1.25x at batch 1 at equal or better accuracy)." if b == 1 else ".")]  # fmt: skip
    return lines


def _knob_summary(knob: list[dict[str, Any]]) -> list[str]:
    """One row per search pair: the speed-ups of the knob's registered best, and their median per batch size."""
    import statistics

    pairs = [c for c in knob if "b1_ms" in c.get("without the knob", {}) and "b1_ms" in c.get("with the knob", {})]
    if not pairs:
        return []
    lines = [
        "", "## The runtime knob over seeds", "",
        f"The knob: {KNOBS[knob[0].get('knob', 'sampled')][2]}.", "",
        "Each row is one pair of searches (same seed, budget and batch size) without and with the knob; the "
        "speed-up is the registered best's without / with, both re-measured side by side.", "",
        "| search batch | seed | registered without | registered with | speed-up at batch 1 | speed-up at batch 32 "
        "| test acc change (points) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for c in pairs:
        w, k = c["without the knob"], c["with the knob"]
        lines.append(f"| {c['batch_size']} | {c.get('seed', 0)} | {w['plan']} ({w['runtime']}) | {k['plan']} ({k['runtime']}) "
                     f"| {w['b1_ms'] / k['b1_ms']:.2f}x | {w['b32_ms'] / k['b32_ms']:.2f}x "
                     f"| {100 * (k['test_accuracy'] - w['test_accuracy']):+.2f} |")  # fmt: skip
    for b in sorted({c["batch_size"] for c in pairs}):
        group = [c for c in pairs if c["batch_size"] == b]
        at = "b1_ms" if b == 1 else "b32_ms"
        ratios = [c["without the knob"][at] / c["with the knob"][at] for c in group]
        target = " (the issue's target: >= 1.25x at batch 1 at equal or better test accuracy)" if b == 1 else ""
        lines += ["", f"Searches at batch {b}: median speed-up at batch {b} **{statistics.median(ratios):.2f}x** over "
                  f"{len(group)} seed(s) (min {min(ratios):.2f}x, max {max(ratios):.2f}x){target}."]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = arguments("runtimes", __doc__)
    parser.add_argument("--trials", type=int, default=20, help="trials of each of the two searches (default: 20)")
    parser.add_argument("--seeds", type=int, default=3, help="pairs of searches per batch size, seeds 0, 1, ... (default: 3)")
    parser.add_argument("--knob", choices=list(KNOBS), default="measured",
                        help="measured: auto times every runtime a profile names; sampled: the sampler draws it (default: measured)")  # fmt: skip
    args = parser.parse_args(argv)
    from autoshrink import workloads

    build_threads(0)
    quiet_optuna()
    stem = "runtimes" if args.knob == "measured" else f"runtimes-{args.knob}-knob"
    report = Report("runtimes", args.out, argv=sys.argv[1:] if argv is None else argv, stem=stem)
    wl = workloads.load("digits")
    rows = run_runtime_table(wl, log=print)
    pairs = [run_knob_comparison(wl, trials=args.trials, batch_size=b, budget_ms=ms, seed=seed, knob=args.knob, log=print)
             for b, ms in KNOB_SETTINGS for seed in range(args.seeds)]  # fmt: skip
    print(f"wrote {write_runtimes_report(rows, pairs, report)}")


if __name__ == "__main__":
    main()
