"""The sensitivity-ranking report: the overlap of the halves and each mixed artifact against int8."""

from __future__ import annotations

from pathlib import Path

from benchmarks._report import Report
from benchmarks.sensitivity_ranking import RANKINGS, ModelRun, Row, write


def test_the_report_gives_each_rankings_overlap_and_speed_against_int8(tmp_path: Path) -> None:
    run = ModelRun("efficientnet-lite1", overlap={label: {"0.05": 0.25, "0.15": 0.5} for label in RANKINGS},
                   top={label: ["_conv_stem", "_fc"] for label in RANKINGS}, sensitivity_s=800.0, layers=65,
                   int8_ms=5.0, int8_agreement=0.84, int8_stable=0.95, stable_crops=206, default=RANKINGS[1],
                   rows=[Row(RANKINGS[2], 0.15, "openvino", 0.93, 0.98, 7_000_000, 6.25, ("_conv_stem",))])  # fmt: skip
    text = write([run], Report("sensitivity-ranking", tmp_path)).read_text()
    assert f"| {RANKINGS[2]} | 25% | 50% | `_conv_stem`, `_fc` |" in text
    assert f"| {RANKINGS[1]} (default) | 25% | 50% |" in text and f"| {RANKINGS[0]} | 25%" in text
    assert f"| {RANKINGS[2]} | 15% | openvino | 0.9300 | 0.9800 | 7.00 | 6.25 | 0.80x |" in text
    assert "agreement 0.8400, 0.9500 on the 206 stable test crops, 5.00 ms" in text
