"""The same search run locally and on Ray with 1 and 2 concurrent trials: trials/hour, overhead.

``python -m benchmarks ray`` writes ``results/ray.md`` and ``.json`` (needs the ``ray`` extra).

Each run is a fresh experiment in a fresh store, on the same workload, space, budget and seed.
Reported per run: wall time of the trial phase, trials per hour, and the per-trial overhead
(a trial's wall time minus the time its build and measurement took).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoshrink.config import Budget, HardwareProfile
from autoshrink.space import SearchSpace
from benchmarks._report import Report, arguments
from benchmarks._workloads import quiet_optuna, scratch_dir

SPACE = SearchSpace(prune=(0.3, 0.6, 0.3), rank=("off", 0.5), bits=(8,), distill_epochs=(0, 2))


def _trial_phase(study_path: Path, experiment: str) -> dict[str, float]:
    import optuna

    study = optuna.load_study(study_name=experiment, storage=f"sqlite:///{study_path}")
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.datetime_start and t.datetime_complete]
    start = min(t.datetime_start for t in done if t.datetime_start)
    end = max(t.datetime_complete for t in done if t.datetime_complete)
    return {"trials": len(done), "phase_s": (end - start).total_seconds()}


def run_ray_bench(workload: Any, *, trials: int = 8, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    from autoshrink.searching import LocalBackend, search
    from autoshrink.searching.ray import RayBackend

    hardware = HardwareProfile()
    budget = Budget(latency_ms=1000.0)
    rows = []
    for label, backend in (
        ("local", LocalBackend()),
        ("ray, 1 concurrent trial", RayBackend(max_concurrent_trials=1)),
        ("ray, 2 concurrent trials", RayBackend(max_concurrent_trials=2)),
    ):
        root = scratch_dir("autoshrink-bench-ray-")
        start = time.perf_counter()
        result = search(workload, budget=budget, space=SPACE, trials=trials, experiment="ray-bench", seed=0,
                        tracking_uri=f"sqlite:///{root}/mlflow.db", hardware=hardware, backend=backend)  # fmt: skip
        total = time.perf_counter() - start
        phase = _trial_phase(root / "optuna.db", "ray-bench")
        t = result.timings
        row = {
            "backend": label, "total_s": total, "trials": phase["trials"], "phase_s": phase["phase_s"],
            "trials_per_hour": 3600 * phase["trials"] / phase["phase_s"],
            "work_s": t.get("trial_work_s", 0.0), "wall_s": t.get("trial_wall_s", 0.0),
            "overhead_s": t.get("trial_wall_s", 0.0) - t.get("trial_work_s", 0.0),
            "best": result.best.plan.label if result.best else None,
            "best_ms": result.best.measurement.latency_ms if result.best else None,
            "baseline_ms": result.baseline.measurement.latency_ms,
        }  # fmt: skip
        rows.append(row)
        log(f"{label:<26} {row['phase_s']:7.1f} s for {row['trials']} trials, {row['trials_per_hour']:6.0f}/h, "
            f"overhead {row['overhead_s']:.2f} s/trial")  # fmt: skip
    return rows


def write_ray_report(rows: list[dict[str, Any]], report: Report, workload: str, trials: int) -> Path:
    local = rows[0]
    lines = [
        *report.header(
            "Local vs Ray Tune: the same search",
            f"`{workload}`, {trials} trials, space `{json.dumps(SPACE.to_dict())}`, seed 0, each in a fresh store. "
            "Ray starts a local instance with this machine's CPUs.",
        ),
        "Trial phase = from the first trial's start to the last one's end (the baseline, Ray's start-up "
        "and the final Pareto/registry work are outside it; `total` includes them). Overhead per trial = "
        "a trial's wall time minus its build + measurement time (scheduling, shipping the outcome, recording).",
        "",
        "| backend | total s | trial phase s | trials/hour | vs local | overhead s/trial | work s/trial | best | best ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['total_s']:.0f} | {r['phase_s']:.0f} | {r['trials_per_hour']:.0f} | "
            f"{r['trials_per_hour'] / local['trials_per_hour']:.2f}x | {r['overhead_s']:.2f} | {r['work_s']:.1f} | "
            f"{r['best']} | {r['best_ms']:.3f} |"
        )
    lines += [
        "",
        "Measurements never overlap on one machine (a per-machine lock), but with 2 concurrent trials on "
        "2 cores one trial's compression runs beside another's measurement, so its latency figures are "
        "noisier; on a real cluster, pin measurement to a quiet node with `--measure-on`.",
    ]
    return report.write({"workload": workload, "trials": trials, "rows": rows}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("ray", __doc__)
    parser.add_argument("--workload", default="digits", help="workload to search (default: digits)")
    parser.add_argument("--trials", type=int, default=8, help="trials per backend (default: 8)")
    args = parser.parse_args(argv)
    from autoshrink import workloads

    quiet_optuna()
    report = Report("ray", args.out, argv=sys.argv[1:] if argv is None else argv)
    rows = run_ray_bench(workloads.load(args.workload), trials=args.trials, log=print)
    print(f"wrote {write_ray_report(rows, report, args.workload, args.trials)}")


if __name__ == "__main__":
    main()
