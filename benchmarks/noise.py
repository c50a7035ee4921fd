"""How much the same artifact's latency and energy move between runs.

``python -m benchmarks noise`` writes ``results/noise.md`` and ``.json`` (and compares with
``results/grid-<workload>.json`` where that exists).

Each artifact is measured ``repeats`` times in one process, as a search measures candidates.
The spread is compared with how much candidates differ from each other in the grid table: a
figure whose run-to-run spread is as large as the differences between candidates cannot steer
a sampler.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoshrink.config import HardwareProfile
from autoshrink.plan import Plan
from benchmarks._report import Report, arguments

PLANS = (Plan(bits=8), Plan(prune=0.5, bits=8, distill_epochs=2), Plan())


def run_noise(workload: Any, *, repeats: int = 10, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    from autoshrink.measuring import timing_batch
    from autoshrink.measuring.energy import measure_energy
    from autoshrink.measuring.latency import measure_latency
    from autoshrink.pipeline import compress

    hardware = HardwareProfile()
    batch = timing_batch(workload.val, hardware.batch_size)
    rows = []
    for plan in PLANS:
        art = compress(workload.model, plan, train_data=workload.train, example_input=workload.example_input)
        lat = [measure_latency(art, batch, hardware).median_ms for _ in range(repeats)]
        energy = [measure_energy(art, batch, hardware) for _ in range(repeats)]
        mj = [e.mj_per_inference for e in energy]
        row = {"plan": plan.label, "latency_ms": lat, "energy_mj": mj, "method": energy[0].method}
        rows.append(row)
        log(f"{plan.label:<24} latency cv {_cv(lat):.3f}  energy cv {_cv(mj):.3f}  mJ per ms {statistics.median(m / t for m, t in zip(mj, lat)):.3f}")
    return rows


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values)


def write_noise(rows: list[dict[str, Any]], grid: dict[str, Any] | None, report: Report, workload: str) -> Path:
    lines = [
        *report.header(
            "Noise: the same artifact measured again and again",
            f"Each artifact measured {len(rows[0]['latency_ms'])} times, batch 1, 1 thread. Energy method: {rows[0]['method']}.",
        ),
        "| plan | latency median ms | latency CV | energy median mJ | energy CV | energy / latency (mJ per ms) CV |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = [m / lat for m, lat in zip(r["energy_mj"], r["latency_ms"])]
        lines.append(
            f"| {r['plan']} | {statistics.median(r['latency_ms']):.3f} | {_cv(r['latency_ms']):.3f} | "
            f"{statistics.median(r['energy_mj']):.4f} | {_cv(r['energy_mj']):.3f} | {_cv(ratio):.3f} |"
        )
    if grid:
        ok = [r for r in grid["rows"] if "error" not in r]
        ratios = [r["energy_mj"] / r["latency_ms"] for r in ok]
        fit = statistics.correlation([r["latency_ms"] for r in ok], [r["energy_mj"] for r in ok])
        lines += [
            "",
            f"Across the {len(ok)} candidates of `results/grid-{workload}.json`: correlation of energy with latency "
            f"{fit:.3f}; energy per millisecond of latency {statistics.median(ratios):.3f} mJ/ms (CV {_cv(ratios):.3f}).",
        ]
    lines += [
        "",
        "Reading: without energy counters CodeCarbon's estimate is CPU load x a TDP figure, i.e. about a fixed "
        "power times the time spent: it carries what latency carries, plus its own noise. A search on such a "
        "machine therefore optimizes accuracy and latency, reports energy (with how it was obtained) and lets "
        "a user constrain it; with RAPL counters energy is a third objective.",
    ]
    return report.write({"workload": workload, "rows": rows}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("noise", __doc__)
    parser.add_argument("--workload", default="digits", help="workload whose artifacts are measured repeatedly (default: digits)")
    parser.add_argument("--repeats", type=int, default=10, help="measurements per artifact (default: 10)")
    args = parser.parse_args(argv)
    from autoshrink import workloads

    report = Report("noise", args.out, argv=sys.argv[1:] if argv is None else argv)
    rows = run_noise(workloads.load(args.workload), repeats=args.repeats, log=print)
    grid_file = args.out / f"grid-{args.workload}.json"
    grid = json.loads(grid_file.read_text()) if grid_file.is_file() else None
    print(f"wrote {write_noise(rows, grid, report, args.workload)}")


if __name__ == "__main__":
    main()
