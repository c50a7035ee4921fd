"""What the early-stop rule of distillation saves: the README's search with and without it, several seeds.

``python -m benchmarks search-cost`` writes ``results/search-cost.md`` and ``.json``.

Each run is the README's main command (``autoshrink search --speedup 4 --trials 20``, the built-in
digits workload) in its own empty folder (its own MLflow store and Optuna study), with
``--early-stop-margin off`` and with the default margin, for each seed, one after the other in
one session (order alternating, so a drift of the machine does not favour one side). Read back
from each study: the whole command's wall time, the seconds spent distilling (the ``distill``
phase of every trial), how many trials were stopped early, and the registered plan with its
speed-up and validation score.

``--model lite1`` runs a 12-trial search of the pretrained EfficientNet-Lite1 instead (the model
of ``benchmarks/_pretrained.py`` on 128 unlabelled calibration and 128 scored crops; needs the
bench extra) and writes ``results/search-cost-lite1.md``, with each run's seconds by phase.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments
from benchmarks._workloads import scratch_dir

#: What each model's search runs: (experiment, arguments of ``autoshrink search`` before ``--seed``).
SEARCHES = {
    "digits": ("digits-demo", ["search", "--speedup", "4", "--trials", "20", "--experiment", "digits-demo"]),
    # the pretrained EfficientNet-Lite1 of benchmarks/_pretrained.py, unlabelled crops of bundled photos
    "lite1": ("lite1-cost", ["search", "--workload", "benchmarks._pretrained:efficientnet_workload",
                             "--workload-arg", "name=lite1", "--workload-arg", "n_cal=128", "--workload-arg", "n_score=128",
                             "--speedup", "4", "--trials", "12", "--experiment", "lite1-cost"]),
}  # fmt: skip


def run_one(folder: Path, *, seed: int, rule: bool, code: Path | None = None, model: str = "digits") -> dict[str, Any]:
    """``model``'s search in ``folder`` with the rule on or off; what its study recorded."""
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    experiment, base = SEARCHES[model]
    command = [*base, "--seed", str(seed), *([] if rule else ["--early-stop-margin", "off"])]
    start = time.perf_counter()
    env = os.environ | ({"PYTHONPATH": str(code)} if code is not None else {})
    with open(folder / "out.txt", "w") as out:
        subprocess.run([sys.executable, "-m", "autoshrink.cli", *command], cwd=folder, stdout=out,
                       stderr=subprocess.STDOUT, check=True, env=env)  # fmt: skip
    seconds = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=experiment, storage=f"sqlite:///{folder / '.autoshrink' / 'optuna.db'}")
    outcomes = [t.user_attrs["outcome"] for t in study.trials if "outcome" in t.user_attrs]
    phases: dict[str, float] = {}  # seconds by phase over the trials that ran (a repeat reuses an earlier one)
    for o in outcomes:
        if o.get("duplicate_of") is None:
            for name, spent in o.get("phases", {}).items():
                phases[name] = phases.get(name, 0.0) + spent
    text = (folder / "out.txt").read_text()
    best = next((line.strip() for line in text.splitlines() if line.startswith("best under budget")), "none")
    return {
        "command": "autoshrink " + " ".join(command),
        "seed": seed,
        "rule": rule,
        "seconds": seconds,
        "distill_s": phases.get("distill", 0.0),
        "memory_s": phases.get("memory", 0.0),
        "session_s": phases.get("session", 0.0),
        "stopped": sum(1 for t in study.trials if t.state.name == "PRUNED"),
        "trials": len(study.trials),
        "best": best,
        "phases": {k: round(v, 1) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
        "load_average": os.getloadavg()[0],
    }


def run(seeds: tuple[int, ...], log: Any = print, model: str = "digits") -> list[dict[str, Any]]:
    root = scratch_dir("autoshrink-bench-search-cost-")
    code = root / "code"  # a copy of the code: every run uses the same code, whatever is edited meanwhile
    for package in ("autoshrink", "benchmarks"):
        shutil.copytree(Path(__file__).resolve().parents[1] / package, code / package)
    results = []
    for i, seed in enumerate(seeds):
        for rule in (True, False) if i % 2 == 0 else (False, True):
            label = f"seed{seed}-{'rule' if rule else 'no-rule'}"
            log(f"running {label} ...")
            results.append(run_one(root / label, seed=seed, rule=rule, code=code, model=model))
            r = results[-1]
            log(f"{label}: {r['seconds']:.0f} s, distill {r['distill_s']:.0f} s, {r['stopped']} stopped; {r['best']}")
    return results


TITLES = {
    "digits": "Search cost: the README's search with and without the early-stop rule of distillation",
    "lite1": "Search cost on a pretrained model: EfficientNet-Lite1 (ImageNet weights), 12 trials, with and without the early-stop rule",
}


def write(results: list[dict[str, Any]], report: Report, model: str = "digits") -> Path:
    _, base = SEARCHES[model]
    lines = [
        *report.header(
            TITLES[model],
            f"`autoshrink {' '.join(base)} --seed S` with the default `--early-stop-margin` (rule on) and with "
            "`--early-stop-margin off`, each in an empty folder (its own store, study and caches), one after the other "
            "(order alternating by seed).",
        ),
        "| seed | rule | whole command s | distill s | stopped early | peak-memory s | session-tuning s | load after | registered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['seed']} | {'on' if r['rule'] else 'off'} | {r['seconds']:.0f} | {r['distill_s']:.0f} | "
                     f"{r['stopped']} | {r['memory_s']:.1f} | {r['session_s']:.1f} | {r.get('load_average', float('nan')):.1f} | "
                     f"{r['best']} |")  # fmt: skip
    on = [r for r in results if r["rule"]]
    off = [r for r in results if not r["rule"]]
    if on and off:
        lines += [
            "",
            f"Median whole command: {statistics.median(r['seconds'] for r in off):.0f} s without the rule, "
            f"{statistics.median(r['seconds'] for r in on):.0f} s with it; median distillation time "
            f"{statistics.median(r['distill_s'] for r in off):.0f} s vs {statistics.median(r['distill_s'] for r in on):.0f} s.",
        ]
    names = sorted({k for r in results for k in r.get("phases", {})}, key=lambda k: -sum(r.get("phases", {}).get(k, 0) for r in results))
    if names:
        lines += ["", "Seconds by phase (sum over the trials of a run; a phase's own time):", "",
                  "| seed | rule | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
        for r in results:
            cells = " | ".join(f"{r.get('phases', {}).get(k, 0.0):.1f}" for k in names)
            lines.append(f"| {r['seed']} | {'on' if r['rule'] else 'off'} | {cells} |")
    total = sum(r["seconds"] for r in results)
    lines += [
        "",
        f"Over all runs, measuring peak memory took {100 * sum(r['memory_s'] for r in results) / total:.1f}% of the "
        f"wall time and choosing session options {100 * sum(r['session_s'] for r in results) / total:.1f}%.",
    ]
    return report.write({"model": model, "runs": results}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("search-cost", __doc__)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--model", choices=sorted(SEARCHES), default="digits",
                        help="digits (the README search, 20 trials; results/search-cost.md) or lite1 (the pretrained "
                             "EfficientNet-Lite1, 12 trials; results/search-cost-lite1.md; needs the bench extra)")  # fmt: skip
    args = parser.parse_args(argv)
    stem = "search-cost" if args.model == "digits" else f"search-cost-{args.model}"
    report = Report("search-cost", args.out, argv=sys.argv[1:] if argv is None else argv, stem=stem)
    print(f"wrote {write(run(tuple(range(args.seeds)), model=args.model), report, args.model)}")


if __name__ == "__main__":
    main()
