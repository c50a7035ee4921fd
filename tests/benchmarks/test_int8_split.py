"""The int8-split diagnosis: each half of int8 rounded alone, on a small CNN with every kind of layer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmarks._report import Report
from benchmarks.int8_split import ModelRun, Row, emulated, input_ranges, layers, split, write


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
                         nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()  # fmt: skip


def test_more_bits_err_less_and_the_float_model_is_left_alone() -> None:
    model, x = small_cnn(), torch.randn(64, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ranges = input_ranges(model, [x[:32], x[32:]])
    assert set(ranges) == set(layers(model)) and ranges["0"] == (float(x.min()), float(x.max()))
    with torch.no_grad():
        exact = model(x)
        errors = {b: float((emulated(model, weight_bits=lambda n, m, b=b: b)(x) - exact).abs().max()) for b in (4, 8, 12)}
        act_errors = {b: float((emulated(model, activation_bits=b, ranges=ranges)(x) - exact).abs().max()) for b in (4, 8)}
    assert errors[4] > errors[8] > errors[12] > 0
    assert act_errors[4] > act_errors[8] > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_split_scores_every_kind_of_layer_and_the_report_lists_them(tmp_path: Path) -> None:
    model, x = small_cnn(), torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).argmax(-1)

    def score(twin: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            same = float((twin(x).argmax(-1) == expected).float().mean())
        return same, same

    rows = split(model, [x], score, reduced=True)
    settings = [r.setting for r in rows]
    for k in ("depthwise", "1x1", "other conv", "linear"):
        assert f"ONNX Runtime's grid, {k} layers only" in settings
    assert "7 bits (depthwise 8), every layer" in settings
    assert all(0.0 <= r.agreement <= 1.0 for r in rows)
    assert [r for r in rows if r.setting == "12 bits, every layer input"][0].agreement == 1.0
    run = ModelRun("small", layers={"other conv": 1}, rows=[*rows, Row("artifact", "ONNX Runtime int8", 0.5, 0.6)],
                   noise_floor={"pixels8": 0.9}, stable_crops=50, test_crops=64)  # fmt: skip
    text = write([run], Report("int8-split", tmp_path), 64, 64).read_text()
    assert "| artifact | ONNX Runtime int8 | 0.5000 | 0.6000 |" in text
    assert "7-bit (no VNNI), depthwise 8" in text and "50 of 64 test crops stable" in text
