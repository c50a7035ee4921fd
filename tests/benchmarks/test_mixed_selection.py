"""The mixed-selection report: each rule's rows with the share of int8's speed-up they keep."""

from __future__ import annotations

from pathlib import Path

from benchmarks._report import Report
from benchmarks.mixed_selection import ModelRun, Row, write


def test_the_report_gives_each_rows_share_of_int8s_speedup_and_where_the_ranking_came_from(tmp_path: Path) -> None:
    run = ModelRun("efficientnet-lite2", ranking_from="results/amd-avx2/pretrained.json", torch_ms=60.0, int8_ms=15.0,
                   int8_agreement=0.88, layers=[{"layer": "_conv_stem"}], restore_s=900.0,
                   rows=[Row("deviation per MAC", "20 layers", 0.953, 12_000_000, 20.0, ("_conv_stem",)),
                         Row("gain per measured ms", "25% of int8's ms", 0.91, 11_000_000, 30.0, ("a", "b", "c"))])  # fmt: skip
    text = write([run], Report("mixed-selection", tmp_path)).read_text()
    assert "Deviation ranking read from `results/amd-avx2/pretrained.json`" in text
    assert "uniform int8 agreement 0.8800, 15.00 ms (4.00x)" in text
    assert "| deviation per MAC | 20 layers | 0.9530 | 12.00 | 20.00 | 0.75 |" in text  # 60/20 = 3x of int8's 4x
    assert "| gain per measured ms | 3 (25% of int8's ms) | 0.9100 | 11.00 | 30.00 | 0.50 |" in text
