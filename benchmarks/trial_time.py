"""The README's main search on an older commit, then on this checkout: time per trial.

``python -m benchmarks trial-time --against REV`` writes ``results/trial-time.md`` and ``.json``.

Both run the same command (20 trials, 1 ms budget, the built-in digits workload) one after the
other in one session, each in its own empty folder (its own MLflow store and Optuna study), with
the same Python environment; the older code is taken from git (``git archive``). Per-trial time
is read from each Optuna study (a trial's start to its end), so the baseline, training and the
final Pareto/registry work are not in it; the whole command's wall time is reported beside it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments
from benchmarks._workloads import scratch_dir

EXPERIMENT = "digits-demo"
REPO = Path(__file__).resolve().parents[1]  # the repository this checkout is: benchmarks/ sits at its root


def checkout(rev: str, into: Path) -> Path:
    """The package of commit ``rev`` of this repository, unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "autoshrink"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_one(code: Path, folder: Path, *, trials: int, budget_ms: float) -> dict[str, Any]:
    """The README's search with the package at ``code``, run in ``folder``; its trials' times."""
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    command = ["search", "--latency-budget-ms", str(budget_ms), "--trials", str(trials), "--experiment", EXPERIMENT]
    start = time.perf_counter()
    with open(folder / "out.txt", "w") as out:
        subprocess.run([sys.executable, "-m", "autoshrink.cli", *command], cwd=folder, env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=True)  # fmt: skip
    seconds = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=EXPERIMENT, storage=f"sqlite:///{folder / '.autoshrink' / 'optuna.db'}")
    walls = [(t.datetime_complete - t.datetime_start).total_seconds()
             for t in study.trials if t.datetime_complete and t.datetime_start]  # fmt: skip
    text = (folder / "out.txt").read_text()
    best = next((line.strip() for line in text.splitlines() if line.startswith("best under budget")), "none")
    return {
        "command": "autoshrink " + " ".join(command),
        "seconds": seconds,
        "trials": len(walls),
        "median_trial_s": statistics.median(walls),
        "mean_trial_s": statistics.mean(walls),
        "trial_phase_s": sum(walls),
        "best": best,
    }


def run_trial_time(against: str, *, trials: int = 20, budget_ms: float = 1.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The search on commit ``against``, then on this checkout."""
    root = scratch_dir("autoshrink-bench-trial-time-")
    results = {}
    for label, code in ((f"commit {against}", checkout(against, root / "old-code")), ("this checkout", REPO)):
        log(f"running the README search with {label} ...")
        results[label] = run_one(code, root / label.replace(" ", "-"), trials=trials, budget_ms=budget_ms)
        log(f"{label}: median trial {results[label]['median_trial_s']:.2f} s; {results[label]['best']}")
    return results


def write_trial_time(results: dict[str, Any], against: str, report: Report) -> Path:
    old, new = results[f"commit {against}"], results["this checkout"]
    lines = [
        *report.header(
            "Time per trial: the README's main search, older code vs this checkout",
            f"`{new['command']}` with each code, one after the other, same Python environment, each in an empty "
            "folder. A trial's time is its start to its end in the Optuna study.",
        ),
        "| code | trials | median s/trial | mean s/trial | trial phase s | whole command s | registered |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        lines.append(f"| {label} | {r['trials']} | {r['median_trial_s']:.2f} | {r['mean_trial_s']:.2f} | "
                     f"{r['trial_phase_s']:.0f} | {r['seconds']:.0f} | {r['best']} |")  # fmt: skip
    lines += [
        "",
        f"Median time per trial: **{old['median_trial_s'] / new['median_trial_s']:.1f}x** lower "
        f"(mean {old['mean_trial_s'] / new['mean_trial_s']:.1f}x). The whole command includes the baseline, the "
        "training of the digits model when its cache key differs, and the final Pareto/registry work.",
    ]
    return report.write({"against": against, "runs": results}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("trial-time", __doc__)
    parser.add_argument("--against", required=True, help="the older commit to compare with (e.g. eed81ee)")
    parser.add_argument("--trials", type=int, default=20, help="trials of each search (default: 20)")
    args = parser.parse_args(argv)
    report = Report("trial-time", args.out, argv=sys.argv[1:] if argv is None else argv)
    results = run_trial_time(args.against, trials=args.trials, log=print)
    print(f"wrote {write_trial_time(results, args.against, report)}")


if __name__ == "__main__":
    main()
