"""Which layers mixed precision keeps in float: autoshrink's deviation ranking against cost-aware and restore-one rules.

``python -m benchmarks mixed-selection`` writes ``results/mixed-selection.md`` and ``.json``.

For each pretrained EfficientNet-Lite (``--models``), int8 in ONNX Runtime keeps the same number
of layers in float (``--counts``) chosen by four rules:

- ``deviation``: the layers that move the outputs most when quantized alone
  (`autoshrink.sensitivity.ranking`, what a search and ``results/pretrained.md`` use);
- ``deviation per MAC``: the same deviations above the smallest one (the share every row has from
  the ops without weights) divided by the layer's multiply-accumulates, a cost proxy in the manner
  of AIMET's automatic mixed precision (accuracy per cost);
- ``restore-one gain``: the drop of output deviation when the layer alone is put back in float in
  the otherwise int8 model, as NNCF's accuracy control ranks the ops it reverts;
- ``gain per measured ms`` (``--budgets``): the same gains divided by each restored model's
  measured extra latency over uniform int8, layers taken greedily until their summed extra
  latency reaches the budget (a fraction of uniform int8's latency; 0.25 is what ">= 80% of
  int8's speed-up" allows).

The rankings are measured on the validation crops (the first 128 for the per-layer builds); every
artifact is scored on the test crops (top-1 agreement with fp32) and timed at batch 1, 1 thread,
all of a model's artifacts in turn, 3 rounds, fastest kept. ``--ranking-from`` reuses the
deviation ranking stored in a ``pretrained.json`` of the same code instead of measuring it again
(about 11 min on Lite1); the report says which.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments, each_model
from benchmarks.pretrained import Bench

COUNTS = (10, 16, 20)
BUDGETS = (0.15, 0.25)
SAMPLES = 128
UNIFORM_EVERY = 4  # restored models timed between two timings of uniform int8 (`restore_costs`)


@dataclass(frozen=True)
class Row:
    rule: str
    setting: str
    agreement: float
    bytes: int
    ms: float
    floats: tuple[str, ...]


@dataclass
class ModelRun:
    name: str
    ranking_from: str = ""  # where the deviation ranking came from ("" = measured in this run)
    rows: list[Row] = field(default_factory=list)
    torch_ms: float = math.nan
    int8_ms: float = math.nan
    int8_agreement: float = math.nan
    layers: list[dict[str, Any]] = field(default_factory=list)  # per layer: deviation, MACs, gain, cost
    restore_s: float = 0.0


def by_ratio(value: Mapping[str, float], cost: Mapping[str, float]) -> list[str]:
    """The layers of ``value`` by ``value / cost``, highest first.

    >>> by_ratio({"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 3.0, "b": 1.0, "c": 2.0})
    ['b', 'a', 'c']
    """
    return sorted(value, key=lambda n: -value[n] / max(cost[n], 1e-12))


def within(ranked: list[str], gain: Mapping[str, float], cost: Mapping[str, float], budget: float) -> list[str]:
    """Greedily, the layers of ``ranked`` with a positive gain whose summed cost stays within ``budget``
    (a negative measured cost counts as 0).

    >>> within(["a", "b", "c", "d"], {"a": 1, "b": 1, "c": -1, "d": 1}, {"a": 0.5, "b": 0.8, "c": 0, "d": 0.4}, 1.0)
    ['a', 'd']
    """
    chosen, spent = [], 0.0
    for name in ranked:
        extra = max(cost[name], 0.0)
        if gain[name] > 0 and spent + extra <= budget:
            chosen.append(name)
            spent += extra
    return chosen


def restore_costs(restored: Mapping[str, Any], uniform: Any, time_ms: Callable[[Any], float], rounds: int = 2,
                  every: int = UNIFORM_EVERY) -> tuple[dict[str, float], float]:  # fmt: skip
    """Each restored model's extra latency over uniform int8: ``rounds`` passes over ``restored``
    (reversed every other pass), uniform int8 timed again before every ``every`` of them; a
    layer's cost is its fastest time minus the fastest of the uniform timings next to its own, so
    that a slow moment of the machine during one uniform timing does not make every cost negative.
    Returns the costs and uniform int8's fastest time.

    >>> times = iter([10.0, 10.5, 11.0, 10.0, 11.0, 10.4])  # round 1: u, a, b; round 2: u, b, a
    >>> restore_costs({"a": "A", "b": "B"}, "U", lambda art: next(times), every=2)
    ({'a': 0.4, 'b': 1.0}, 10.0)
    """
    near: dict[str, list[float]] = {name: [] for name in restored}
    own: dict[str, list[float]] = {name: [] for name in restored}
    names = list(restored)
    for i in range(rounds):
        base = math.nan
        for j, name in enumerate(names if i % 2 == 0 else names[::-1]):
            if j % every == 0:
                base = time_ms(uniform)
            own[name].append(time_ms(restored[name]))
            near[name].append(base)
    costs = {name: round(min(own[name]) - min(near[name]), 3) for name in names}
    return costs, min(min(v) for v in near.values())


def _sensitivity(bench: Bench, name: str, ranking_from: Path | None, log: Callable[[str], None]) -> list[Any]:
    """The int8 sensitivity rows, most sensitive first, with each layer's MACs (measured, or read
    from ``ranking_from`` and counted here)."""
    from autoshrink.sensitivity import LayerSensitivity, layer_macs, layer_sensitivity

    if ranking_from is not None:
        stored = next(r for r in json.loads(ranking_from.read_text())["runs"] if r["name"] == f"efficientnet-{name}")
        rows = [LayerSensitivity.from_dict(d) for d in stored["sensitivity"]]
    else:
        rows = layer_sensitivity(bench.wl, samples=SAMPLES, progress=lambda s: log(f"  sensitivity {s}"))
    macs = layer_macs(bench.wl.model, bench.wl.example_input)
    return [replace(r, macs=macs.get(r.layer, 0)) for r in rows if not r.error]


def run_model(name: str, counts: tuple[int, ...], budgets: tuple[float, ...], ranking_from: Path | None,
              log: Callable[[str], None]) -> ModelRun:  # fmt: skip
    from autoshrink.config import HardwareProfile
    from autoshrink.measuring.latency import measure_latency
    from autoshrink.pipeline import compress
    from autoshrink.plan import Plan
    from autoshrink.sensitivity import deviation, per_mac_ranking

    bench = Bench(name, 256, 256, log)
    wl = bench.wl
    run = ModelRun(f"efficientnet-{name}", ranking_from=str(ranking_from or ""))
    analysed = _sensitivity(bench, name, ranking_from, log)
    dev = {r.layer: r.deviation for r in analysed}
    macs = {r.layer: r.macs for r in analysed}
    val = wl.val[0][:SAMPLES]
    reference = bench.outputs(wl.model, val)
    uniform = bench.build()
    base = deviation(bench.outputs(uniform, val), reference)
    start = time.perf_counter()
    restored: dict[str, Any] = {}
    gain: dict[str, float] = {}
    for i, layer in enumerate(dev):
        restored[layer] = bench.build(layer_bits=((layer, 32),))
        gain[layer] = base - deviation(bench.outputs(restored[layer], val), reference)
        log(f"  [{i + 1}/{len(dev)}] {layer} in float alone: deviation {base:.5f} -> {base - gain[layer]:.5f}")
    cost, int8_ms = restore_costs(restored, uniform, lambda art: measure_latency(art, wl.example_input, HardwareProfile()).median_ms)
    run.restore_s = round(time.perf_counter() - start, 1)
    del restored
    run.layers = [{"layer": n, "deviation": dev[n], "macs": macs[n], "restore_gain": round(gain[n], 6),
                   "restore_ms": round(cost[n], 3)} for n in dev]  # fmt: skip
    rules = {"deviation": list(dev), "deviation per MAC": per_mac_ranking(analysed),
             "restore-one gain": sorted(dev, key=lambda n: -gain[n])}  # fmt: skip
    chosen = {(rule, f"{c} layers"): ranked[:c] for rule, ranked in rules.items() for c in counts}
    per_ms = by_ratio(gain, {n: max(cost[n], 0.02) for n in dev})  # costs at or below 0 (timing noise) count as 0.02 ms
    for b in budgets:
        chosen[("gain per measured ms", f"{b:.0%} of int8's ms")] = within(per_ms, gain, cost, b * int8_ms)
    rows = [bench.row("fp32 torch", lambda: compress(wl.model, Plan(), train_data=wl.train, example_input=wl.example_input)),
            bench.row("int8", lambda: uniform)]  # fmt: skip
    for (rule, setting), names in chosen.items():
        rows.append(bench.row(f"{rule}|{setting}", lambda k=tuple((n, 32) for n in names): bench.build(layer_bits=k)))  # type: ignore[misc]
    rows = bench.time_all(rows)
    run.torch_ms, run.int8_ms, run.int8_agreement = rows[0].ms, rows[1].ms, rows[1].agreement
    for r in rows[2:]:
        rule, setting = r.label.split("|")
        run.rows.append(Row(rule, setting, r.agreement, r.bytes, r.ms, r.floats))
    return run


def write(runs: list[ModelRun], report: Report) -> Path:
    lines = report.header("Mixed precision: which layers to keep in float",
                          "Share: the share of uniform int8's speed-up over fp32 torch that a row keeps "
                          "(the target of `results/pretrained.md`: >= 0.95 agreement at >= 0.80).")  # fmt: skip
    for run in runs:
        source = f"read from `{run.ranking_from}`" if run.ranking_from else "measured in this run"
        speedup = run.torch_ms / run.int8_ms
        lines += [f"## {run.name}", "",
                  f"Deviation ranking {source}; restore-one analysis ({len(run.layers)} builds, timed) {run.restore_s:.0f} s. "
                  f"fp32 torch {run.torch_ms:.2f} ms; uniform int8 agreement {run.int8_agreement:.4f}, "
                  f"{run.int8_ms:.2f} ms ({speedup:.2f}x).", "",
                  "| rule | layers in float | agreement | MB | ms | share |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in run.rows:
            share = run.torch_ms / r.ms / speedup
            lines.append(f"| {r.rule} | {r.setting if r.rule != 'gain per measured ms' else f'{len(r.floats)} ({r.setting})'} | "
                         f"{r.agreement:.4f} | {r.bytes / 1e6:.2f} | {r.ms:.2f} | {share:.2f} |")  # fmt: skip
        lines.append("")
    return report.write({"runs": [asdict(r) for r in runs]}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("mixed-selection", __doc__)
    parser.add_argument("--models", default="lite1", help="comma-separated EfficientNet-Lite variants (default: lite1)")
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)), help="layers kept in float per rule")
    parser.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS),
                        help="extra latency allowed the measured-cost rule, as fractions of uniform int8's")  # fmt: skip
    parser.add_argument("--ranking-from", type=Path, default=None,
                        help="a pretrained.json whose stored deviation ranking is reused instead of measured")  # fmt: skip
    args = parser.parse_args(argv)
    counts = tuple(int(c) for c in args.counts.split(","))
    budgets = tuple(float(b) for b in args.budgets.split(","))
    if args.ranking_from is not None and not args.ranking_from.is_file():
        parser.error(f"--ranking-from {args.ranking_from}: no such file")
    report = Report("mixed-selection", args.out, argv=sys.argv[1:] if argv is None else argv)
    each_model(args.models, lambda name: run_model(name, counts, budgets, args.ranking_from, print),
               lambda runs: write(runs, report))


if __name__ == "__main__":
    main()
