"""Per-layer sensitivity ranks the layers that int8 breaks first."""

from __future__ import annotations

import pytest

from autoshrink.sensitivity import layer_sensitivity
from autoshrink.workloads import Workload
from tests.conftest import count_calibrations, fragile_workload, make_case


def test_layers_made_fragile_on_purpose_are_ranked_first() -> None:
    wl = fragile_workload()  # an activation outlier between a1 and a2
    ranked = layer_sensitivity(wl, samples=128)
    assert {r.layer for r in ranked} == {"stem.0", "a1", "a2", "b1", "b2", "proj", "head"}
    # a2 reads the outlier tensor: its int8 input range rounds the other channels away (a1 quantized
    # alone keeps its output, the outlier tensor, in float)
    assert ranked[0].layer == "a2" and ranked[0].loss > 0.1, ranked
    # (the loss moves in steps of 1/128: a1 alone lost 7 of 128 with full-range int8 weights on a
    # VNNI CPU, 3.6x less than a2; the margin is asserted on the deviation below)
    assert all(r.loss < ranked[0].loss / 3 for r in ranked[1:]), ranked
    # the outputs move most when a2 is quantized, and measurably for every layer
    by_deviation = sorted(ranked, key=lambda r: -r.deviation)
    assert by_deviation[0].layer == "a2", by_deviation
    assert all(0 < r.deviation < by_deviation[0].deviation / 5 for r in by_deviation[1:]), by_deviation


def test_the_command_prints_the_table_and_refuses_a_bad_bit_width_in_one_line(tmp_path) -> None:
    from tests.test_cli import assert_one_line_error, invoke
    from tests.tiny import write_files

    spec = f"{write_files(tmp_path)['workload']}:tiny"
    done = invoke("sensitivity", "--workload", spec, "--samples", "32")
    assert done.exit_code == 0, done.output
    rows = [line for line in done.output.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    assert len(rows) == 3 and "| layer | score, quantized alone | loss |" in done.output  # 2 convs and the head
    assert_one_line_error(invoke("sensitivity", "--workload", spec, "--bits", "3"), "Plan.bits must be one of")
    probed = invoke("sensitivity", "--workload", spec, "--technique", "prune")
    assert probed.exit_code == 0, probed.output
    assert "| group | width | removed by the probe | parameters removed | output error |" in probed.output
    errors = [float(line.split("|")[5]) for line in probed.output.splitlines() if line.startswith("| ") and "group" not in line]
    assert errors and errors == sorted(errors, reverse=True)  # the most sensitive group first
    assert_one_line_error(invoke("sensitivity", "--workload", spec, "--technique", "svd"), "--technique must be")


def test_a_layer_that_cannot_be_scored_alone_is_recorded_and_the_analysis_goes_on() -> None:
    from autoshrink.measuring.accuracy import top1_accuracy

    model, (x, y), example = make_case("rescnn")

    def evaluate(artifact, data):  # breaks on one candidate only: "head" quantized alone
        if artifact.plan.layer_bits and ("head", 32) not in artifact.plan.layer_bits:
            raise RuntimeError("the evaluator broke")
        return top1_accuracy(artifact, data)

    wl = Workload("t", model, (x[:256], y[:256]), (x[256:320], y[256:320]), (x[320:], y[320:]), example, evaluate=evaluate)
    ranked = layer_sensitivity(wl, samples=64)
    assert len(ranked) == 7 and ranked[-1].layer == "head" and "the evaluator broke" in ranked[-1].error
    assert all(not r.error and r.loss == r.loss for r in ranked[:-1])  # every other layer scored


def test_the_analysis_calibrates_once_for_all_layers_and_exports_each_build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.techniques import quantize

    calibrations = count_calibrations(monkeypatch)
    exports: list[int] = []
    original = quantize.export_onnx
    monkeypatch.setattr(quantize, "export_onnx", lambda *a, **k: exports.append(1) or original(*a, **k))
    model, (x, y), example = make_case("rescnn")
    wl = Workload("t", model, (x[:256], y[:256]), (x[256:320], y[256:320]), (x[320:], y[320:]), example)
    ranked = layer_sensitivity(wl, samples=32)
    assert len(ranked) == 7 and all(not r.error for r in ranked)
    assert len(calibrations) == 1, f"{len(calibrations)} calibrations for {len(ranked)} layers"
    # the float weights once (fp32, and the graph every build's activation ranges come from), then one
    # export per int8 build: uniform, and each layer alone (its weights rounded, the others float)
    assert len(exports) == 2 + len(ranked), f"{len(exports)} exports for {len(ranked)} layers"


def test_the_chart_adds_the_output_deviation_below_the_loss_where_it_was_measured(tmp_path) -> None:
    import matplotlib.image

    from autoshrink.sensitivity import LayerSensitivity, chart

    old = [LayerSensitivity(f"l{i}", 1.0, 0.0) for i in range(4)]  # rows from before deviation was recorded
    new = [LayerSensitivity(f"l{i}", 1.0, 0.0, deviation=0.001 * i) for i in range(4)]
    chart(old, str(tmp_path / "old.png"))
    chart(new, str(tmp_path / "new.png"))
    heights = [matplotlib.image.imread(tmp_path / f"{name}.png").shape[0] for name in ("old", "new")]
    assert heights[1] == 2 * heights[0], heights


def test_each_row_counts_its_layers_macs_and_the_per_mac_ranking_uses_them() -> None:
    from autoshrink.sensitivity import LayerSensitivity, per_mac_ranking

    wl = fragile_workload()
    rows = layer_sensitivity(wl, samples=64)
    assert all(r.macs > 0 for r in rows), rows  # every layer of the net is a Conv2d or Linear
    assert len({r.macs for r in rows}) > 1
    assert LayerSensitivity.from_dict(rows[0].to_dict()) == rows[0]
    ranked = per_mac_ranking(rows)
    assert sorted(ranked) == sorted(r.layer for r in rows)
    best = max(rows, key=lambda r: (r.deviation - min(x.deviation for x in rows)) / r.macs)
    assert ranked[0] == best.layer
    assert LayerSensitivity.from_dict({"layer": "a", "score": 0.9, "loss": 0.1}).macs == 0  # rows stored before
