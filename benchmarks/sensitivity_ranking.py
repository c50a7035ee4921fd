"""Which per-layer sensitivity ranks layers reproducibly: score loss or output deviation, on a pretrained CNN.

``python -m benchmarks sensitivity-ranking`` writes ``results/sensitivity-ranking.md`` and ``.json``.

For each pretrained EfficientNet-Lite (``--models``, Lite1 by default), the int8 sensitivity
analysis (`autoshrink.sensitivity.layer_sensitivity`, ONNX Runtime) runs twice, on two disjoint
halves of the validation crops (128 each). From each half's rows, three rankings: by the loss of
top-1 agreement alone (equal losses in graph order: the ranking before output deviation was
recorded), by loss with equal losses ranked by output deviation, and by output deviation alone;
the report marks the one `autoshrink.sensitivity.ranking` (the default) gives. A ranking that measures the layers, not the sampling noise of 128 crops,
names the same most sensitive layers on both halves: the report gives the overlap of the top 5%
and 15% between the halves. Then mixed precision keeps the top 5% and 15% of half A's rankings in
float, in ONNX Runtime and OpenVINO, and each artifact is scored on the test crops (other crops
of the scored photos): agreement with fp32, the same on the crops whose fp32 answer survives
8-bit pixels and a pixel level of noise (`stable`, as in ``results/pretrained.md``), bytes and
batch-1 latency (1 thread, every artifact of a model timed in turn, 3 rounds, fastest kept).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments, each_model
from benchmarks.pretrained import MIXED, Bench

RANKINGS = ("loss (graph order on ties)", "loss, ties by deviation", "deviation")


@dataclass(frozen=True)
class Row:
    ranking: str
    share: float
    runtime: str
    agreement: float
    stable: float
    bytes: int
    ms: float
    floats: tuple[str, ...]


@dataclass
class ModelRun:
    name: str
    overlap: dict[str, dict[str, float]] = field(default_factory=dict)  # ranking -> share -> |top A & top B| / k
    top: dict[str, list[str]] = field(default_factory=dict)  # ranking -> half A's top 15%
    rows: list[Row] = field(default_factory=list)
    default: str = ""  # the label of RANKINGS that autoshrink.sensitivity.ranking gave on half A
    sensitivity_s: float = 0.0
    layers: int = 0
    int8_ms: float = math.nan
    int8_agreement: float = math.nan
    int8_stable: float = math.nan
    stable_crops: int = 0


def rankings(rows: list[Any], graph_order: list[str]) -> dict[str, list[str]]:
    """The three rankings of `RANKINGS` of one analysis's rows (failed layers left out).

    >>> from autoshrink.sensitivity import LayerSensitivity as S
    >>> rows = [S("b", 0.9, 0.1, deviation=0.01), S("c", 0.9, 0.1, deviation=0.03), S("a", 0.95, 0.05, deviation=0.05)]
    >>> list(rankings(rows, ["a", "b", "c"]).values())
    [['b', 'c', 'a'], ['c', 'b', 'a'], ['a', 'c', 'b']]
    """
    scored = [r for r in rows if not r.error and not math.isnan(r.loss)]
    position = {name: i for i, name in enumerate(graph_order)}
    by_graph = sorted(scored, key=lambda r: position.get(r.layer, len(position)))
    return {
        RANKINGS[0]: [r.layer for r in sorted(by_graph, key=lambda r: -r.loss)],
        RANKINGS[1]: [r.layer for r in sorted(by_graph, key=lambda r: (-r.loss, -r.deviation))],
        RANKINGS[2]: [r.layer for r in sorted(scored, key=lambda r: -r.deviation)],
    }


def overlap(a: list[str], b: list[str], k: int) -> float:
    """The share of ``a``'s first ``k`` names that are among ``b``'s first ``k``.

    >>> overlap(["x", "y", "z"], ["y", "w", "x"], 2)
    0.5
    """
    return len(set(a[:k]) & set(b[:k])) / k if k else math.nan


def run_model(name: str, log: Callable[[str], None]) -> ModelRun:
    import onnx

    from autoshrink.config import HardwareProfile
    from autoshrink.measuring.latency import measure_latency
    from autoshrink.sensitivity import layer_sensitivity, ranking
    from autoshrink.space import SearchSpace
    from autoshrink.techniques._onnx import layers

    bench = Bench(name, 256, 256, log)
    bench.noise_floor()
    run = ModelRun(f"efficientnet-{name}", stable_crops=int(bench.stable.sum()))
    val = bench.wl.val[0]
    halves = {"A": replace(bench.wl, val=(val[:128],)), "B": replace(bench.wl, val=(val[128:],))}
    uniform = bench.build(bits=8)
    graph_order = list(layers(onnx.load_from_string(uniform.payload)))
    start = time.perf_counter()
    rows = {half: layer_sensitivity(wl, samples=128) for half, wl in halves.items()}
    ranked = {half: rankings(rows[half], graph_order) for half in halves}
    run.default = next((label for label in RANKINGS if ranked["A"][label] == ranking(rows["A"])), "")
    run.sensitivity_s = round(time.perf_counter() - start, 1)
    run.layers = len(graph_order)
    for label in RANKINGS:
        k = {share: math.ceil(share * len(ranked["A"][label])) for share in MIXED}
        run.overlap[label] = {f"{share:g}": overlap(ranked["A"][label], ranked["B"][label], k[share]) for share in MIXED}
        run.top[label] = ranked["A"][label][: k[max(MIXED)]]
    artifacts = {"int8": uniform}
    for label in RANKINGS:
        space = SearchSpace(mixed=MIXED).ranked({8: ranked["A"][label]})
        for share in MIXED:
            kept = tuple(space.kept(8, share).items())
            for runtime in ("onnxruntime", "openvino"):
                art = bench.build(runtime=runtime, layer_bits=kept)
                agreement, _, _, stable = bench.agreement(bench.outputs(art))
                floats = tuple(n for n, bits in art.plan.layer_bits if bits == 32)
                run.rows.append(Row(label, share, runtime, agreement, stable, art.size_bytes, math.nan, floats))
                artifacts[f"{label}|{share}|{runtime}"] = art
                log(str(run.rows[-1]))
    run.int8_agreement, _, _, run.int8_stable = bench.agreement(bench.outputs(uniform))
    best: dict[str, float] = {}
    keys = list(artifacts)
    for i in range(3):
        for key in keys if i % 2 == 0 else keys[::-1]:
            ms = measure_latency(artifacts[key], bench.wl.example_input, HardwareProfile()).median_ms
            best[key] = min(best.get(key, ms), ms)
    run.int8_ms = round(best["int8"], 3)
    run.rows = [replace(r, ms=round(best[f"{r.ranking}|{r.share}|{r.runtime}"], 3)) for r in run.rows]
    return run


def _marked(label: str, run: ModelRun) -> str:
    return f"{label} (default)" if label == run.default else label


def write(runs: list[ModelRun], report: Report) -> Path:
    lines = [*report.header("Per-layer sensitivity: which ranking is reproducible, and what mixed precision gets from it"),
             "The analysis ran twice per model, on two disjoint halves of the validation crops (A and B, 128 each).",
             ""]  # fmt: skip
    for run in runs:
        lines += [f"## {run.name}", "",
                  f"{run.layers} layers, two analyses in {run.sensitivity_s:.0f} s. Uniform int8 (ONNX Runtime): "
                  f"agreement {run.int8_agreement:.4f}, {run.int8_stable:.4f} on the {run.stable_crops} stable test "
                  f"crops, {run.int8_ms:.2f} ms.", "",
                  "| ranking | top 5% shared by A and B | top 15% shared by A and B | A's top 15% |", "|---|---|---|---|"]  # fmt: skip
        for label in RANKINGS:
            shares = run.overlap[label]
            lines.append(f"| {_marked(label, run)} | {shares[f'{MIXED[0]:g}']:.0%} | {shares[f'{MIXED[1]:g}']:.0%} | "
                         + ", ".join(f"`{n}`" for n in run.top[label]) + " |")  # fmt: skip
        lines += ["", "| ranking (half A) | in float | runtime | agreement | stable | MB | ms | vs int8 |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in run.rows:
            lines.append(f"| {_marked(r.ranking, run)} | {r.share:.0%} | {r.runtime} | {r.agreement:.4f} | {r.stable:.4f} | "
                         f"{r.bytes / 1e6:.2f} | {r.ms:.2f} | {run.int8_ms / r.ms:.2f}x |")  # fmt: skip
        lines.append("")
    return report.write({"runs": [asdict(r) for r in runs]}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("sensitivity-ranking", __doc__)
    parser.add_argument("--models", default="lite1", help="comma-separated EfficientNet-Lite variants (default: lite1)")
    args = parser.parse_args(argv)
    report = Report("sensitivity-ranking", args.out, argv=sys.argv[1:] if argv is None else argv)
    each_model(args.models, lambda name: run_model(name, print), lambda runs: write(runs, report))


if __name__ == "__main__":
    main()
