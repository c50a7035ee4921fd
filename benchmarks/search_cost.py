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

``--before COMMIT`` compares this code's search (rule on) with the same command run by the code
of ``COMMIT`` (``git archive`` of its ``autoshrink`` and ``benchmarks``), ``--cap 45m`` bounds
each search with a wall-clock budget (a slow ``before`` then says how many trials it finished).
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


def run_one(
    folder: Path, *, seed: int, rule: bool, code: Path | None = None, model: str = "digits", extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``model``'s search in ``folder`` with the rule on or off (and ``extra`` arguments), run by
    the code in ``code`` (this checkout's if None); what its study recorded (`read_run`)."""
    folder.mkdir(parents=True, exist_ok=True)
    _, base = SEARCHES[model]
    command = [*base, "--seed", str(seed), *([] if rule else ["--early-stop-margin", "off"]), *extra]
    start = time.perf_counter()
    env = os.environ | ({"PYTHONPATH": str(code)} if code is not None else {})
    with open(folder / "out.txt", "w") as out:
        subprocess.run([sys.executable, "-m", "autoshrink.cli", *command], cwd=folder, stdout=out,
                       stderr=subprocess.STDOUT, check=True, env=env)  # fmt: skip
    seconds = time.perf_counter() - start
    return read_run(folder, model, command, seconds) | {"seed": seed, "rule": rule, "load_average": os.getloadavg()[0]}


def read_run(folder: Path, model: str, command: list[str], seconds: float) -> dict[str, Any]:
    """What the search run in ``folder`` recorded: its trials, the seconds by phase (a study from
    before phases were recorded has none), the registered plan and the whole command's seconds."""
    import optuna

    experiment, _ = SEARCHES[model]
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
        "seconds": seconds,
        "distill_s": phases.get("distill", 0.0),
        "memory_s": phases.get("memory", 0.0),
        "session_s": phases.get("session", 0.0),
        "stopped": sum(1 for t in study.trials if t.state.name == "PRUNED"),
        "trials": len(study.trials),
        "complete": sum(1 for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")),
        "best": best,
        "phases": {k: round(v, 1) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
    }


def checkout(commit: str, into: Path) -> Path:
    """The code of ``commit`` (its ``autoshrink`` and ``benchmarks``) in ``into``, from this repository."""
    into.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "archive", commit, "autoshrink", "benchmarks"], cwd=repo, check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(
    seeds: tuple[int, ...], log: Any = print, model: str = "digits", before: str | None = None,
    cap: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Each seed's search with the rule on and off, order alternating; with ``before`` (a commit),
    this code's search (rule on) and that commit's instead, at most ``cap`` each (a wall-clock
    budget, ``--time-budget``) where given."""
    root = scratch_dir("autoshrink-bench-search-cost-")
    code = root / "code"  # a copy of the code: every run uses the same code, whatever is edited meanwhile
    for package in ("autoshrink", "benchmarks"):
        shutil.copytree(Path(__file__).resolve().parents[1] / package, code / package)
    old = checkout(before, root / "before") if before else None
    extra = ("--time-budget", cap) if cap else ()
    results = []
    for i, seed in enumerate(seeds):
        sides: list[tuple[str, Path, bool]] = (
            [("after", code, True), (f"before ({before})", old, True)] if old is not None
            else [("rule", code, True), ("no-rule", code, False)]
        )  # fmt: skip
        for label, where, rule in sides if i % 2 == 0 else sides[::-1]:
            log(f"running seed{seed}-{label} ...")
            folder = root / f"seed{seed}-{label.split()[0]}"
            results.append(run_one(folder, seed=seed, rule=rule, code=where, model=model, extra=extra) | {"run": label})
            r = results[-1]
            log(f"seed{seed}-{label}: {r['seconds']:.0f} s, distill {r['distill_s']:.0f} s, {r['stopped']} stopped; {r['best']}")
    return results


TITLES = {
    "digits": "Search cost: the README's search with and without the early-stop rule of distillation",
    "lite1": "Search cost on a pretrained model: EfficientNet-Lite1 (ImageNet weights), 12 trials",
}


def _label(r: dict[str, Any]) -> str:
    return r.get("run") or ("rule on" if r["rule"] else "rule off")


def write(results: list[dict[str, Any]], report: Report, model: str = "digits", how: str | None = None) -> Path:
    """The report of ``results``; ``how`` says how the runs were made, where not by `run`."""
    _, base = SEARCHES[model]
    before = next((r["run"] for r in results if r.get("run", "").startswith("before")), None)
    made = how or (
        f"`autoshrink {' '.join(base)} --seed S` run by this commit's code (`after`) and by the code of "
        f"commit {before.split()[1].strip('()')} (`before`), each in an empty folder (its own store, study and caches), "
        "one after the other."
        if before else
        f"`autoshrink {' '.join(base)} --seed S` with the default `--early-stop-margin` (rule on) and with "
        "`--early-stop-margin off`, each in an empty folder (its own store, study and caches), one after the other "
        "(order alternating by seed)."
    )  # fmt: skip
    lines = [
        *report.header(TITLES[model], made),
        "| seed | run | whole command s | trials finished | distill s | stopped early | peak-memory s | session-tuning s | load after | registered |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        load = f"{r['load_average']:.1f}" if "load_average" in r else "-"
        lines.append(f"| {r['seed']} | {_label(r)} | {r['seconds']:.0f} | {r.get('complete', r['trials'])} of {r['trials']} | "
                     f"{r['distill_s']:.0f} | {r['stopped']} | {r['memory_s']:.1f} | {r['session_s']:.1f} | {load} | "
                     f"{r['best']} |")  # fmt: skip
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(_label(r), []).append(r)
    if len(groups) == 2:
        (a, first), (b, second) = groups.items()
        lines += [
            "",
            f"Median whole command: {statistics.median(r['seconds'] for r in first):.0f} s ({a}), "
            f"{statistics.median(r['seconds'] for r in second):.0f} s ({b}); median distillation time "
            f"{statistics.median(r['distill_s'] for r in first):.0f} s vs {statistics.median(r['distill_s'] for r in second):.0f} s.",
        ]
    names = sorted({k for r in results for k in r.get("phases", {})}, key=lambda k: -sum(r.get("phases", {}).get(k, 0) for r in results))
    if names:
        lines += ["", "Seconds by phase (sum over the trials of a run; a phase's own time; a run of code from before "
                  "phases were recorded has none):", "",
                  "| seed | run | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
        for r in results:
            cells = " | ".join(f"{r.get('phases', {}).get(k, 0.0):.1f}" for k in names)
            lines.append(f"| {r['seed']} | {_label(r)} | {cells} |")
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
    parser.add_argument("--before", help="a commit: compare this code's search (rule on) with that commit's, "
                                          "not the rule on and off")  # fmt: skip
    parser.add_argument("--cap", help="a wall-clock budget for each search (--time-budget), e.g. 45m")
    args = parser.parse_args(argv)
    stem = "search-cost" if args.model == "digits" else f"search-cost-{args.model}"
    report = Report("search-cost", args.out, argv=sys.argv[1:] if argv is None else argv, stem=stem)
    results = run(tuple(range(args.seeds)), model=args.model, before=args.before, cap=args.cap)
    print(f"wrote {write(results, report, args.model)}")


if __name__ == "__main__":
    main()
