"""Samplers replayed against the grid table (no model built): hypervolume and accuracy gap.

``python -m benchmarks search-quality`` reads ``results/grid-<workload>.json`` (written by
``python -m benchmarks grid``) and writes ``results/search-quality.md``, ``.json`` and ``.png``.
For each sampler, seed, number of trials N and latency budget, the search runs exactly as a
real one (the same `SearchSpace.sample`, objectives and constraints) but every plan's figures
come from the table. Reported, as median and spread over
seeds:

* the hypervolume of the feasible front found in (validation accuracy, latency), reference
  point accuracy 0 and the budget, as a fraction of the grid's own feasible front;
* the gap between the best feasible validation accuracy found and the grid's best, in points.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autoshrink.plan import Plan
from autoshrink.space import SearchSpace
from benchmarks._report import Report, arguments

NS = (10, 20, 40, 54)
SEEDS = 10


def hypervolume(points: Sequence[tuple[float, float]], budget: float) -> float:
    """Area dominated by (accuracy up, latency down) points, from accuracy 0 and latency ``budget``.

    Example:
        >>> hypervolume([(0.9, 1.0), (0.5, 0.5)], budget=2.0)
        1.15
    """
    area, best = 0.0, 0.0
    for acc, lat in sorted((p for p in points if p[1] <= budget), key=lambda p: (p[1], -p[0])):
        if acc > best:
            area += (acc - best) * (budget - lat)
            best = acc
    return round(area, 12)


def strong_plans(space: SearchSpace) -> list[dict[str, Any]]:
    """Plans that usually work, as trial parameters of ``space`` (those the space contains)."""
    from autoshrink.searching.study import warm_start_params

    return warm_start_params(space)


def replay(
    table: dict[str, dict[str, Any]], space: SearchSpace, sampler: str, seed: int, n: int, budget: float,
    *, warm_start: bool = False, energy: bool = False,
) -> list[tuple[float, float] | None]:  # fmt: skip
    """The (accuracy, latency) of each trial a sampler proposes, None for a failed plan."""
    import optuna

    from autoshrink.searching.study import directions, make_sampler
    from autoshrink.searching.trial import objectives_for

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objectives = objectives_for(energy)
    study = optuna.create_study(directions=directions(objectives), sampler=make_sampler(sampler, seed, n))
    if warm_start:
        for params in strong_plans(space):
            study.enqueue_trial(params)
    seen: list[tuple[float, float] | None] = []
    for _ in range(n):
        trial = study.ask()
        row = table.get(space.sample(trial).to_json())
        if row is None or "error" in row:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            seen.append(None)
            continue
        trial.set_constraint("latency_ms", row["latency_ms"] - budget)
        study.tell(trial, [row[k] for k in objectives])
        seen.append((row["accuracy"], row["latency_ms"]))
    return seen


#: Wall-clock checkpoints (minutes of simulated search time) of the timed replay.
MINUTES = (1, 2, 3, 4, 6, 8)


def replay_timed(
    table: dict[str, dict[str, Any]], space: SearchSpace, seed: int, budget: float, margin: float | None,
    limit_s: float, *, sampler: str = "tpe-multivariate", max_trials: int = 200,
) -> tuple[list[tuple[float, float, float]], int]:  # fmt: skip
    """A search replayed on the grid with its wall-clock cost: the (end time s, accuracy, latency)
    of each finished trial until ``limit_s`` of simulated time, and how many the rule stopped.

    What each trial costs is what a search pays (`autoshrink.searching.trial`), from the grid's
    timings: a distilling plan's architecture is timed first, once per (prune, rank, bits)
    (``arch_s`` + ``lower_s`` of its 0-epoch row) and screened if over the budget; then pruning
    again, each distillation epoch (``epoch_s``) and, with the rule on (``margin`` not None),
    the subset score after it (``curve_score_s``), where `fidelity.Front` may stop it; then
    lowering and measuring (``lower_s``). A repeated plan costs nothing; at most ``max_trials`` are asked. The front and learning
    curves the rule reads are built from the finished trials exactly as `fidelity.front_of` does.
    """
    import optuna

    from autoshrink.searching.fidelity import Curve, Front, Point
    from autoshrink.searching.study import directions, make_sampler, warm_start_params
    from autoshrink.searching.trial import objectives_for

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objectives = objectives_for(False)
    study = optuna.create_study(directions=directions(objectives), sampler=make_sampler(sampler, seed, 40))
    for params in warm_start_params(space):
        study.enqueue_trial(params)
    clock, timed, n_stopped = 0.0, set(), 0
    seen: dict[str, list[float] | None] = {}  # plan -> objective values (None: stopped)
    finished: list[tuple[float, float, float]] = []
    points: list[Point] = []
    curves: list[Curve] = []
    for _ in range(max_trials):
        if clock >= limit_s:
            break
        trial = study.ask()
        plan = space.sample(trial)
        row = table.get(plan.to_json())
        if row is None or "error" in row:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        key = plan.to_json()
        if key in seen and seen[key] is None:  # a repeat of a stopped plan is stopped again, for free
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        if key in seen:  # a repeat reuses the measurement
            trial.set_constraint("latency_ms", row["latency_ms"] - budget)
            study.tell(trial, seen[key])
            continue
        epochs = plan.distill_epochs
        if epochs:
            arch = Plan.from_dict(row["plan"] | {"distill_epochs": 0}).to_json()
            if arch not in timed:
                timed.add(arch)
                clock += table[arch]["arch_s"] + table[arch]["lower_s"]
            if row["latency_ms"] > budget:  # screened: over the budget before distillation
                trial.set_constraint("latency_ms", row["latency_ms"] - budget)
                seen[key] = [0.0, row["latency_ms"]]
                study.tell(trial, seen[key])
                continue
        clock += row["arch_s"]
        stopped = False
        front = Front(tuple(points), tuple(curves), margin or 0.0)
        for epoch in range(1, epochs + 1):
            clock += row["epoch_s"][epoch - 1] - (row["epoch_s"][epoch - 2] if epoch > 1 else 0.0)
            if margin is not None:
                clock += row["curve_score_s"]
                if not front.reachable(epoch, epochs, row["curve"][epoch - 1], (row["latency_ms"],)):
                    stopped = True
                    break
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            seen[key] = None
            n_stopped += 1
            continue
        clock += row["lower_s"]
        trial.set_constraint("latency_ms", row["latency_ms"] - budget)
        seen[key] = [row[k] for k in objectives]
        study.tell(trial, seen[key])
        finished.append((clock, row["accuracy"], row["latency_ms"]))
        if margin is not None and epochs:
            curves.append(Curve(epochs, tuple(row["curve"]), row["accuracy"]))
        if row["latency_ms"] <= budget:
            points.append(Point((row["latency_ms"],), row["accuracy"]))
    return finished, n_stopped


def run_timed(grid: dict[str, Any], *, budgets: Sequence[float] | None = None, seeds: int = SEEDS,
              margin: float = 0.01, log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """The default search (TPE multivariate, warm start) with the early-stop rule on and off, each
    seed replayed for the largest of `MINUTES`; median hypervolume fraction at each checkpoint."""
    space = SearchSpace.from_dict(grid["space"])
    rows = [r for r in grid["rows"] if "error" not in r]
    if not all("epoch_s" in r for r in rows):
        raise SystemExit("the grid has no timings per phase: regenerate it with `python -m benchmarks grid`")
    table = {Plan.from_dict(r["plan"]).to_json(): r for r in grid["rows"]}
    base = next(r for r in rows if r["plan"] == Plan().to_dict())
    budgets = budgets or [round(base["latency_ms"] / f, 4) for f in (4, 8, 12)]
    cells = []
    for budget in budgets:
        feasible = [(r["accuracy"], r["latency_ms"]) for r in rows if r["latency_ms"] <= budget]
        grid_hv, grid_best = hypervolume(feasible, budget), max(a for a, _ in feasible)
        for rule in (False, True):
            replays = [replay_timed(table, space, seed, budget, margin if rule else None, 60 * max(MINUTES))
                       for seed in range(seeds)]  # fmt: skip
            runs = [finished for finished, _ in replays]
            for minute in MINUTES:
                hv, gaps, trials = [], [], []
                for run in runs:
                    done = [(a, lat) for t, a, lat in run if t <= 60 * minute]
                    h, g = scores(done, len(done), budget, grid_hv, grid_best)
                    hv.append(h)
                    gaps.append(g)
                    trials.append(len(done))
                cells.append({"budget": budget, "rule": rule, "minutes": minute, "hv_median": statistics.median(hv),
                              "hv_min": min(hv), "hv_max": max(hv), "gap_median": statistics.median(gaps),
                              "trials_median": statistics.median(trials), "seeds": seeds,
                              "stopped_median": statistics.median(n for _, n in replays)})  # fmt: skip
            last = cells[-len(MINUTES) :]
            log(f"budget {budget:.3f} ms rule={'on' if rule else 'off'}: hv median "
                + ", ".join(f"{c['minutes']} min {c['hv_median']:.3f}" for c in last))  # fmt: skip
    return {"budgets": list(budgets), "margin": margin, "cells": cells, "grid_size": len(table)}


def scores(seen: Sequence[tuple[float, float] | None], n: int, budget: float, grid_hv: float, grid_best: float) -> tuple[float, float]:
    """(hypervolume fraction, accuracy gap in points) of the first ``n`` trials."""
    feasible = [p for p in seen[:n] if p is not None and p[1] <= budget]
    best = max((p[0] for p in feasible), default=0.0)
    return hypervolume(feasible, budget) / grid_hv, 100 * (grid_best - best)


def run_search_quality(
    grid: dict[str, Any], samplers: Sequence[str], *, budgets: Sequence[float] | None = None,
    seeds: int = SEEDS, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Every (sampler, warm start or not) x seed x budget, scored at each N of `NS`."""
    space = SearchSpace.from_dict(grid["space"])
    rows = [r for r in grid["rows"] if "error" not in r]
    table = {Plan.from_dict(r["plan"]).to_json(): r for r in grid["rows"]}
    base = next(r for r in rows if r["plan"] == Plan().to_dict())
    budgets = budgets or [round(base["latency_ms"] / f, 4) for f in (4, 8, 12)]
    results: dict[str, Any] = {"budgets": list(budgets), "grid_size": len(table), "baseline": base, "cells": []}
    for budget in budgets:
        feasible = [(r["accuracy"], r["latency_ms"]) for r in rows if r["latency_ms"] <= budget]
        grid_hv, grid_best = hypervolume(feasible, budget), max(a for a, _ in feasible)
        for sampler in samplers:
            for warm in (False, True):
                per_n: dict[int, list[tuple[float, float]]] = {n: [] for n in NS}
                for seed in range(seeds):
                    seen = replay(table, space, sampler, seed, max(NS), budget, warm_start=warm)
                    for n in NS:
                        per_n[n].append(scores(seen, n, budget, grid_hv, grid_best))
                for n in NS:
                    hv = [h for h, _ in per_n[n]]
                    gaps = [g for _, g in per_n[n]]
                    cell = {
                        "budget": budget, "sampler": sampler, "warm_start": warm, "n": n,
                        "hv_median": statistics.median(hv), "hv_min": min(hv), "hv_max": max(hv),
                        "gap_median": statistics.median(gaps), "gap_max": max(gaps),
                        "within_half_point": sum(g <= 0.5 for g in gaps), "seeds": seeds,
                    }  # fmt: skip
                    results["cells"].append(cell)
                last = per_n[20]
                log(f"budget {budget:.3f} ms {sampler:<16} warm={warm!s:<5} N=20: hv median "
                    f"{statistics.median(h for h, _ in last):.3f}, gap <= 0.5 pt in {sum(g <= 0.5 for _, g in last)}/{seeds}")  # fmt: skip
    return results


def write_search_quality(results: dict[str, Any], report: Report, workload: str) -> Path:
    from autoshrink.searching.report import new_figure

    cells = results["cells"]
    base = results["baseline"]
    lines = [
        *report.header(
            "Search quality: samplers replayed against the full grid",
            f"From `results/grid-{workload}.json` ({results['grid_size']} plans, each measured once): every sampler "
            "proposes plans exactly as in a real search (same space, objectives and latency constraint) and reads "
            "their figures from the table instead of building them. "
            f"{cells[0]['seeds']} seeds per cell; budgets are the baseline's {base['latency_ms']:.3f} ms divided by 4, 8 and 12.",
        ),
        "HV = hypervolume of the feasible (validation accuracy, latency) front found, reference point accuracy 0 "
        "and the budget, as a fraction of the grid's feasible front. Gap = grid's best feasible validation "
        "accuracy minus the best found, in points. `warm` = the study starts with the strong plans of "
        "`warm_start_params` before the sampler takes over.",
        "",
        "| budget ms | sampler | warm | N | HV median | HV min-max | gap median | gap max | gap <= 0.5 pt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['budget']:.3f} | {c['sampler']} | {'yes' if c['warm_start'] else 'no'} | {c['n']} | "
            f"{c['hv_median']:.3f} | {c['hv_min']:.3f}-{c['hv_max']:.3f} | {c['gap_median']:.2f} | "
            f"{c['gap_max']:.2f} | {c['within_half_point']}/{c['seeds']} |"
        )
    fig, axes = new_figure((4 * len(results["budgets"]), 4))
    fig.clear()
    for i, budget in enumerate(results["budgets"]):
        ax = fig.add_subplot(1, len(results["budgets"]), i + 1)
        for sampler in sorted({c["sampler"] for c in cells}):
            for warm in (False, True):
                pts = [c for c in cells if c["budget"] == budget and c["sampler"] == sampler and c["warm_start"] == warm]
                ax.plot([c["n"] for c in pts], [c["hv_median"] for c in pts], "o-" if warm else "o--",
                        label=f"{sampler}{' +warm' if warm else ''}")  # fmt: skip
        ax.set_title(f"budget {budget:.2f} ms")
        ax.set_xlabel("trials N")
        ax.set_ylabel("median HV / grid HV")
        ax.axhline(0.95, color="gray", linewidth=0.8)
        ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    report.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(report.path(".png"), dpi=110)
    lines += ["", f"![median hypervolume fraction vs trials]({report.path('.png').name})"]
    return report.write({"workload": workload, **results}, lines)


def write_timed(results: dict[str, Any], report: Report, workload: str) -> Path:
    cells = results["cells"]
    lines = [
        *report.header(
            "Search cost replayed: the early-stop rule at equal wall-clock time",
            f"From `results/grid-{workload}.json` ({results['grid_size']} plans, each built and measured once, with the "
            "seconds of each phase and the learning curve of each distillation): the default search (TPE multivariate, "
            f"warm start) replayed {cells[0]['seeds']} seeds per cell, with the early-stop rule (margin "
            f"{results['margin']}) and without, each trial charged the seconds a search spends on it "
            "(`replay_timed`: the architecture timed first once, pruning, each epoch, the rule's subset score, "
            "lowering and measuring; a repeat costs nothing). Budgets: the baseline's latency divided by 4, 8 and 12.",
        ),
        "HV = hypervolume of the feasible (validation accuracy, latency) front found by that minute of simulated "
        "search time, as a fraction of the grid's; gap = the grid's best feasible validation accuracy minus the best "
        "found, in points; trials = finished trials by then (median over seeds).",
        "",
        "| budget ms | rule | minutes | HV median | HV min-max | gap median | trials |",
        "|---|---|---|---|---|---|---|",
    ]
    lines[-3:-3] = [
        "Stopped by the rule in the whole replay (median per seed): "
        + ", ".join(f"{b:.3f} ms: {next(c['stopped_median'] for c in cells if c['budget'] == b and c['rule']):.0f}"
                    for b in results["budgets"]) + ".",  # fmt: skip
        "",
    ]
    for c in cells:
        lines.append(f"| {c['budget']:.3f} | {'on' if c['rule'] else 'off'} | {c['minutes']} | {c['hv_median']:.3f} | "
                     f"{c['hv_min']:.3f}-{c['hv_max']:.3f} | {c['gap_median']:.2f} | {c['trials_median']:.0f} |")  # fmt: skip
    lines += ["", "Median HV with the rule minus without it, by budget and minute:", ""]
    for budget in results["budgets"]:
        diffs = []
        for minute in MINUTES:
            on, off = (next(c for c in cells if c["budget"] == budget and c["rule"] == r and c["minutes"] == minute)
                       for r in (True, False))  # fmt: skip
            diffs.append(f"{minute} min {on['hv_median'] - off['hv_median']:+.3f}")
        lines.append(f"- {budget:.3f} ms: " + ", ".join(diffs))
    return report.write({"workload": workload, **results}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("search-quality", __doc__)
    parser.add_argument("--workload", default="digits", help="the workload whose grid table is replayed (default: digits)")
    parser.add_argument("--samplers", default="tpe,tpe-multivariate,nsga2,random", help="comma-separated samplers")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per cell (default: {SEEDS})")
    parser.add_argument("--timed", action="store_true",
                        help="replay the default search with and without the early-stop rule at equal wall-clock "
                             "time instead (results/search-cost-replay.md; needs a grid with per-phase timings)")  # fmt: skip
    args = parser.parse_args(argv)
    grid_file = args.out / f"grid-{args.workload}.json"
    if not grid_file.is_file():
        parser.error(f"{grid_file} does not exist: run `python -m benchmarks grid --workload {args.workload}` first")
    if args.timed:
        report = Report("search-quality", args.out, argv=sys.argv[1:] if argv is None else argv, stem="search-cost-replay")
        timed = run_timed(json.loads(grid_file.read_text()), seeds=args.seeds, log=print)
        print(f"wrote {write_timed(timed, report, args.workload)}")
        return
    report = Report("search-quality", args.out, argv=sys.argv[1:] if argv is None else argv)
    results = run_search_quality(json.loads(grid_file.read_text()), args.samplers.split(","), seeds=args.seeds, log=print)
    print(f"wrote {write_search_quality(results, report, args.workload)}")


if __name__ == "__main__":
    main()
