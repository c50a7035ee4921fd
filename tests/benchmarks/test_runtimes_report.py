from __future__ import annotations

from pathlib import Path

from benchmarks._report import Report
from benchmarks.runtimes import write_runtimes_report


def _side(plan: str, runtime: str, b1: float, b32: float, acc: float = 0.99) -> dict[str, object]:
    return {"plan": plan, "runtime": runtime, "val_accuracy": acc, "b1_ms": b1, "b32_ms": b32, "bytes": 1000,
            "test_accuracy": acc}  # fmt: skip


def test_the_knob_summary_gives_the_median_speed_up_per_batch_size(tmp_path: Path) -> None:
    knob = [
        {"batch_size": 1, "budget_ms": 1.0, "trials": 20, "seed": seed,
         "without the knob": _side("a", "onnxruntime", 0.3, 9.0), "with the knob": _side("b", "openvino", 0.3 / r, 3.0)}
        for seed, r in enumerate((1.0, 1.5, 2.0))
    ] + [{"batch_size": 32, "budget_ms": 10.0, "trials": 20, "seed": 0,
          "without the knob": _side("a", "onnxruntime", 0.3, 9.0), "with the knob": {"message": "nothing met the budget"}}]  # fmt: skip
    text = write_runtimes_report([], knob, Report("runtimes", tmp_path)).read_text()
    assert "median speed-up at batch 1 **1.50x** over 3 seed(s) (min 1.00x, max 2.00x)" in text
    assert "Searches at batch 32" not in text  # no pair to compare: nothing registered with the knob
    assert "none registered: nothing met the budget" in text
