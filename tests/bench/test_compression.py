from __future__ import annotations

import json
from pathlib import Path

from autoshrink.bench.compression import run_compression_bench, write_report
from autoshrink.plan import Plan
from autoshrink.workloads import Workload
from tests.conftest import make_case


def test_bench_writes_measured_table(tmp_path: Path, fast_hardware) -> None:
    model, (x, y), example = make_case("rescnn")
    data = __import__("torch").utils.data.TensorDataset(x, y)
    wl = Workload("tiny", model, data, data, data, example)
    rows = run_compression_bench(wl, plans=[Plan(prune=0.5, bits=8)], hardware=fast_hardware, log=lambda s: None)
    assert [r.plan for r in rows] == [Plan(), Plan(prune=0.5, bits=8)]
    md = write_report(rows, tmp_path, fast_hardware, "tiny")
    text = md.read_text()
    assert "baseline (fp32 torch)" in text and "prune0.5-int8" in text
    record = json.loads((tmp_path / "compression.json").read_text())["rows"][1]
    assert record["size_ratio"] > 4
    assert record["speedup"] > 1  # pruned + int8 in ONNX Runtime beats fp32 torch
    assert (tmp_path / "compression.png").stat().st_size > 1000
