"""Every plan of a workload's default search space measured once, as a lookup table.

``python -m benchmarks grid`` writes ``results/grid-<workload>.json`` and ``.md``. The table (plan ->
validation and test accuracy, latency p50/p95, bytes, energy) is what
``python -m benchmarks search-quality`` replays samplers against without building a model: the
tabular-benchmark method of the hyperparameter-optimization field. Builds are reused where
the plan allows: the pruned / factorized model is built once per (prune, rank), distilled once
per number of epochs, and lowered once per bit width.

For the replay of the early-stop rule at equal wall-clock time (``search-quality --timed``), each row
also keeps what a search would spend on it: ``arch_s`` (pruning / low rank), ``epoch_s`` (the
distillation seconds at the end of each epoch), ``lower_s`` (lowering and measuring: quantization,
calibration, timing, scoring on the validation split) and the learning ``curve`` (the torch
student's score on the search's validation subset after each epoch, `autoshrink.searching.fidelity`),
the figures the rule reads. The mixed-precision knob is left out of the grid (``mixed: [0]``).
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from autoshrink.config import HardwareProfile
from autoshrink.plan import Plan
from autoshrink.space import OFF, SearchSpace
from benchmarks._report import Report, arguments
from benchmarks._workloads import build_threads


def space_plans(space: SearchSpace) -> list[Plan]:
    """Every plan of a space (the grid), in a fixed order."""
    low, high, step = space.prune
    prunes = [round(low + i * step, 6) for i in range(int(round((high - low) / step)) + 1)] if high > low else [low]
    return [
        Plan(prune=p, rank=None if r == OFF else float(r), bits=int(b), distill_epochs=int(e))
        for p in prunes for r in space.rank for e in space.distill_epochs for b in space.bits
    ]  # fmt: skip


class _Curve:
    """A distillation's seconds (its own, not the scoring's) and subset score after each epoch."""

    def __init__(self, score: Callable[[torch.nn.Module], float]) -> None:
        self.score, self.start, self.scoring = score, time.perf_counter(), 0.0
        self.epoch_s: list[float] = []
        self.curve: list[float] = []

    def __call__(self, epoch: int, student: torch.nn.Module) -> None:
        now = time.perf_counter()
        self.epoch_s.append(now - self.start - self.scoring)
        self.curve.append(self.score(student))
        self.scoring += time.perf_counter() - now


def run_grid(workload: Any, space: SearchSpace, *, hardware: HardwareProfile | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Measure every plan of ``space`` on ``workload``; returns the table and the baseline."""
    from autoshrink.artifact import Artifact
    from autoshrink.data import spread
    from autoshrink.inputs import InputSpec
    from autoshrink.measuring import measure
    from autoshrink.measuring.accuracy import score
    from autoshrink.pipeline import prepare, run_techniques, technique_configs, to_artifact
    from autoshrink.searching.fidelity import SUBSET
    from autoshrink.techniques import CompressionError, Stage
    from autoshrink.techniques.distill import DistillConfig
    from autoshrink.techniques.lowrank import LowRankConfig
    from autoshrink.techniques.prune import PruneConfig
    from autoshrink.techniques.quantize import QuantizeConfig

    hardware = hardware or HardwareProfile()
    plans = space_plans(space)
    started = time.perf_counter()
    spec = InputSpec.of(workload.example_input)
    rows: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ctx = prepare(workload.model, train_data=workload.train, example_input=workload.example_input,
                      task=workload.task, output=workload.output)  # fmt: skip

        subset = spread(workload.val, SUBSET)

        def student_score(student: torch.nn.Module) -> float:  # as `TrialRunner.epoch_score` scores it
            return score(Artifact(Plan(), "torch", b"", 0, module=student, spec=spec), subset, workload.evaluate)

        def measure_plan(stage: Stage, plan: Plan, built_s: float, timing: dict[str, Any]) -> None:
            t0 = time.perf_counter()
            try:
                lowered = run_techniques(stage, [QuantizeConfig(bits=plan.bits, runtime=plan.resolved_runtime)], ctx)
                art = to_artifact(lowered, plan, spec)
                m = measure(art, eval_data=workload.val, hardware=hardware, evaluate=workload.evaluate)
                timing = timing | {"lower_s": time.perf_counter() - t0}
                test = score(art, workload.test, workload.evaluate)
            except CompressionError as exc:
                rows.append({"plan": plan.to_dict(), "label": plan.label, "error": str(exc)[:300]})
                log(f"{plan.label:<32} failed: {exc}")
                return
            rows.append({"plan": plan.to_dict(), "label": plan.label, **m.to_dict(), "test_accuracy": test,
                         "build_s": built_s + time.perf_counter() - t0, **timing})  # fmt: skip
            log(f"{plan.label:<32} val {m.accuracy:.4f} test {test:.4f} {m.latency_ms:7.3f} ms "
                f"{m.size_bytes / 1e3:8.1f} kB  ({len(rows)}/{len(plans)}, {time.perf_counter() - started:.0f} s)")  # fmt: skip

        architectures = sorted({(p.prune, p.rank) for p in plans}, key=lambda a: (a[0], a[1] or 0))
        pruned = [a for a in architectures if a[0]]
        if pruned:  # the pruning probe runs once per search (kept in the cache): not in any architecture's arch_s
            probe = [c for c in technique_configs(Plan(prune=pruned[0][0])) if isinstance(c, PruneConfig)]
            with contextlib.suppress(CompressionError):
                run_techniques(Stage(module=copy.deepcopy(ctx.teacher).eval()), probe, ctx)
        for prune, rank in architectures:
            t0 = time.perf_counter()
            # pruning and low rank as a search builds them (the plan's methods: sensitivity allocation, ...)
            configs = [c for c in technique_configs(Plan(prune=prune, rank=rank)) if isinstance(c, (PruneConfig, LowRankConfig))]
            try:
                arch = run_techniques(Stage(module=copy.deepcopy(ctx.teacher).eval()), configs, ctx)
            except CompressionError as exc:
                for plan in (p for p in plans if (p.prune, p.rank) == (prune, rank)):
                    rows.append({"plan": plan.to_dict(), "label": plan.label, "error": str(exc)[:300]})
                continue
            arch_s = time.perf_counter() - t0
            for epochs in sorted({p.distill_epochs for p in plans if (p.prune, p.rank) == (prune, rank)}):
                t1 = time.perf_counter()
                watch = _Curve(student_score)
                stage = arch if epochs == 0 else run_techniques(
                    Stage(module=copy.deepcopy(arch.module), reports=arch.reports), [DistillConfig(epochs=epochs)],
                    replace(ctx, on_epoch=watch),
                )  # fmt: skip
                built = arch_s + time.perf_counter() - t1 - watch.scoring
                timing = {"arch_s": arch_s, "epoch_s": watch.epoch_s, "curve": watch.curve,
                          "curve_score_s": watch.scoring / max(1, len(watch.curve))}  # fmt: skip
                for plan in (p for p in plans if (p.prune, p.rank, p.distill_epochs) == (prune, rank, epochs)):
                    measure_plan(stage, plan, built, timing)
    return {"rows": rows, "seconds": time.perf_counter() - started, "space": space.to_dict(), "plans": len(plans)}


def write_grid(table: dict[str, Any], report: Report, workload: str) -> Path:
    """Write ``grid-<workload>.json`` (the table samplers are replayed on) and ``.md`` (its fastest plans)."""
    ok = [r for r in table["rows"] if "error" not in r]
    base = next(r for r in ok if r["plan"] == Plan().to_dict())
    lines = [
        *report.header(
            f"Grid: every plan of the default space on `{workload}`",
            f"{len(table['rows'])} plans measured once each in {table['seconds'] / 60:.0f} min (builds reused per "
            f"architecture and distillation). The table is `{report.path('.json').name}`; "
            "`python -m benchmarks search-quality` replays samplers against it.",
        ),
        f"Baseline (fp32 torch): val {base['accuracy']:.4f}, test {base['test_accuracy']:.4f}, "
        f"{base['latency_ms']:.3f} ms, {base['size_bytes'] / 1e3:.0f} kB. Failed plans: "
        f"{len(table['rows']) - len(ok)}.",
        "",
        "Fastest plans within 0.5 points of the baseline's validation accuracy:",
        "",
        "| plan | val acc | test acc | p50 ms | speed-up | kB |",
        "|---|---|---|---|---|---|",
    ]
    close = sorted((r for r in ok if r["accuracy"] >= base["accuracy"] - 0.005), key=lambda r: r["latency_ms"])[:10]
    for r in close:
        lines.append(f"| {r['label']} | {r['accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['latency_ms']:.3f} | "
                     f"{base['latency_ms'] / r['latency_ms']:.1f}x | {r['size_bytes'] / 1e3:.0f} |")  # fmt: skip
    return report.write({"workload": workload, **table}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("grid", __doc__)
    parser.add_argument("--workload", default="digits", help="workload whose default space is measured (default: digits)")
    parser.add_argument("--build-threads", type=int, default=0, help="threads for distillation (0 = all cores); timing uses 1")
    args = parser.parse_args(argv)
    from autoshrink import workloads

    build_threads(args.build_threads)
    report = Report("grid", args.out, argv=sys.argv[1:] if argv is None else argv, stem=f"grid-{args.workload}")
    wl = workloads.load(args.workload)
    space = replace(SearchSpace.preset(wl.family), mixed=(0,))  # mixed precision: not in the grid (see the doc)
    table = run_grid(wl, space, hardware=report.hardware, log=print)
    print(f"wrote {write_grid(table, report, args.workload)}")


if __name__ == "__main__":
    main()
