"""What the early-stop rule of distillation saves: the README's search with and without it, several seeds.

``python -m benchmarks search-cost`` writes ``results/search-cost.md`` and ``.json``.

Each run is the README's main command (``autoshrink search --speedup 4 --trials 20``, the built-in
digits workload) in its own empty folder (its own MLflow store and Optuna study), with
``--early-stop-margin off`` and with the default margin, for each seed, one after the other in
one session (order alternating, so a drift of the machine does not favour one side). Read back
from each study: the whole command's wall time, the seconds spent distilling (the ``distill``
phase of every trial), how many trials were stopped early, and the registered plan with its
speed-up and validation score.
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

EXPERIMENT = "digits-demo"
COMMAND = ["search", "--speedup", "4", "--trials", "20", "--experiment", EXPERIMENT]


def run_one(folder: Path, *, seed: int, rule: bool, code: Path | None = None) -> dict[str, Any]:
    """The README's search in ``folder`` with the rule on or off; what its study recorded."""
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    command = [*COMMAND, "--seed", str(seed), *([] if rule else ["--early-stop-margin", "off"])]
    start = time.perf_counter()
    env = os.environ | ({"PYTHONPATH": str(code)} if code is not None else {})
    with open(folder / "out.txt", "w") as out:
        subprocess.run([sys.executable, "-m", "autoshrink.cli", *command], cwd=folder, stdout=out,
                       stderr=subprocess.STDOUT, check=True, env=env)  # fmt: skip
    seconds = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=EXPERIMENT, storage=f"sqlite:///{folder / '.autoshrink' / 'optuna.db'}")
    outcomes = [t.user_attrs["outcome"] for t in study.trials if "outcome" in t.user_attrs]
    def phase(name: str) -> float:
        return sum(o.get("phases", {}).get(name, 0.0) for o in outcomes if o.get("duplicate_of") is None)

    text = (folder / "out.txt").read_text()
    best = next((line.strip() for line in text.splitlines() if line.startswith("best under budget")), "none")
    return {
        "command": "autoshrink " + " ".join(command),
        "seed": seed,
        "rule": rule,
        "seconds": seconds,
        "distill_s": phase("distill"),
        "memory_s": phase("memory"),
        "session_s": phase("session"),
        "stopped": sum(1 for t in study.trials if t.state.name == "PRUNED"),
        "trials": len(study.trials),
        "best": best,
    }


def run(seeds: tuple[int, ...], log: Any = print) -> list[dict[str, Any]]:
    root = scratch_dir("autoshrink-bench-search-cost-")
    code = root / "code"  # a copy of the package: every run uses the same code, whatever is edited meanwhile
    shutil.copytree(Path(__file__).resolve().parents[1] / "autoshrink", code / "autoshrink")
    results = []
    for i, seed in enumerate(seeds):
        for rule in (True, False) if i % 2 == 0 else (False, True):
            label = f"seed{seed}-{'rule' if rule else 'no-rule'}"
            log(f"running {label} ...")
            results.append(run_one(root / label, seed=seed, rule=rule, code=code))
            r = results[-1]
            log(f"{label}: {r['seconds']:.0f} s, distill {r['distill_s']:.0f} s, {r['stopped']} stopped; {r['best']}")
    return results


def write(results: list[dict[str, Any]], report: Report) -> Path:
    lines = [
        *report.header(
            "Search cost: the README's search with and without the early-stop rule of distillation",
            f"`autoshrink {' '.join(COMMAND)} --seed S` with the default `--early-stop-margin` (rule on) and with "
            "`--early-stop-margin off`, each in an empty folder, one after the other (order alternating by seed).",
        ),
        "| seed | rule | whole command s | distill s | stopped early | peak-memory s | session-tuning s | registered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['seed']} | {'on' if r['rule'] else 'off'} | {r['seconds']:.0f} | {r['distill_s']:.0f} | "
                     f"{r['stopped']} | {r['memory_s']:.1f} | {r['session_s']:.1f} | {r['best']} |")  # fmt: skip
    on = [r for r in results if r["rule"]]
    off = [r for r in results if not r["rule"]]
    if on and off:
        lines += [
            "",
            f"Median whole command: {statistics.median(r['seconds'] for r in off):.0f} s without the rule, "
            f"{statistics.median(r['seconds'] for r in on):.0f} s with it; median distillation time "
            f"{statistics.median(r['distill_s'] for r in off):.0f} s vs {statistics.median(r['distill_s'] for r in on):.0f} s.",
        ]
    total = sum(r["seconds"] for r in results)
    lines += [
        "",
        f"Over all runs, measuring peak memory took {100 * sum(r['memory_s'] for r in results) / total:.1f}% of the "
        f"wall time and choosing session options {100 * sum(r['session_s'] for r in results) / total:.1f}%.",
    ]
    return report.write({"runs": results}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("search-cost", __doc__)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    args = parser.parse_args(argv)
    report = Report("search-cost", args.out, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {write(run(tuple(range(args.seeds))), report)}")


if __name__ == "__main__":
    main()
