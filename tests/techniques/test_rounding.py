"""GPTQ rounding with bias correction: on the runtime's grid, closer outputs, and kept by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from autoshrink import host
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques._rounding import depthwise, round_layers
from tests.conftest import SamePadConv, count_calibrations

AVX2 = {"model": "AMD EPYC (test)", "int8_isa": ["avx2"]}


def _correlated(rows: int, d: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose features are strongly correlated, as a real layer's are."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, generator=gen) @ torch.randn(4, d, generator=gen) + 0.1 * torch.randn(rows, d, generator=gen)


def _output_error(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((F.linear(x, weight, bias) - layer(x)).pow(2).mean())


def test_a_linear_layer_keeps_its_output_closer_than_nearest_rounding_and_its_mean_exactly() -> None:
    torch.manual_seed(0)
    layer, x = nn.Linear(32, 16), _correlated(2048, 32)
    got = round_layers(layer, x, {"": 7}).layers[""]
    scale = layer.weight.detach().abs().amax(1, keepdim=True) / 7
    nearest = torch.round(layer.weight.detach() / scale) * scale
    shift = (layer.weight.detach() - nearest) @ x.mean(0)  # nearest rounding, bias corrected too
    assert got.error < 0.5 * got.nearest_error, (got.error, got.nearest_error)
    measured = _output_error(layer, got.weight, got.bias, x)
    assert measured < 0.5 * _output_error(layer, nearest, layer.bias.detach() + shift, x)
    assert measured == pytest.approx(got.error, rel=0.05)  # the reported error is the real one
    with torch.no_grad():  # the bias took up the mean shift the rounding caused
        assert torch.allclose(F.linear(x, got.weight, got.bias).mean(0), layer(x).mean(0), atol=1e-4)


def test_levels_are_on_the_grid_and_each_channels_largest_weight_keeps_the_top_level() -> None:
    torch.manual_seed(0)
    layer, x = nn.Linear(24, 8), _correlated(1024, 24)
    for top in (64, 127):
        weight = round_layers(layer, x, {"": top}).layers[""].weight
        scale = layer.weight.detach().abs().amax(1, keepdim=True) / top  # the runtime's scale, from the float weights
        levels = weight / scale
        assert torch.allclose(levels, levels.round(), atol=1e-3)
        assert torch.equal(levels.round().abs().amax(1), torch.full((8,), float(top)))  # same scale again


class ScaledConv(nn.Conv2d):
    """A convolution that computes something else than its weights times its input patches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_convolutions_of_every_kind_are_matched_to_their_output_and_the_others_are_left_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        SamePadConv(3, 8, 3, stride=2, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.ReLU(), ScaledConv(16, 16, 3, padding=1, groups=4), nn.Flatten(), nn.Linear(16 * 16, 4),
    ).eval()  # fmt: skip
    x = torch.randn(64, 3, 8, 8)
    tops = {"0": 64, "2": 127, "4": 64, "6": 64, "8": 64}
    got = round_layers(model, x, tops)
    assert sorted(got.layers) == ["0", "2", "4", "8"] and list(got.left) == ["6"]
    assert "left to nearest rounding" in got.left["6"]
    assert depthwise(model[2]) and not depthwise(model[6])
    for name, layer in got.layers.items():
        assert layer.error <= layer.nearest_error * 1.001, name
        assert layer.weight.shape == model.get_submodule(name).weight.shape
    assert model[0].bias is None  # the model itself is not changed


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Conv2d(16, 16, 1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()  # fmt: skip  (layer 5 has no bias and no BatchNorm: rounding gives it one)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model, torch.randn(128, 3, 8, 8)


def _dequantized_weights(model: onnx.ModelProto) -> dict[tuple[int, ...], np.ndarray]:
    """The int8 weights of the QDQ graph times their scales, by shape."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) is not None and inits[node.input[0]].dtype == np.int8:
            q, scale = inits[node.input[0]].astype(np.float64), inits[node.input[1]].astype(np.float64)
            out[q.shape] = q * scale.reshape(-1, *[1] * (q.ndim - 1)) if scale.ndim else q * scale
    return out


def test_onnx_runtime_keeps_the_rounded_levels_and_a_float_layer_stays_float(monkeypatch: pytest.MonkeyPatch) -> None:
    """The artifact's int8 weights are the torch model's rounded ones (BatchNorm folded in at
    export): ONNX Runtime's own quantization changed nothing."""
    monkeypatch.setattr(host, "cpu", lambda *a, **k: AVX2)
    model, x = _cnn()
    art = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1])
    details = art.reports[-1].details["rounding"]
    assert details["method"] == "gptq" and details["layers"] == 4
    expected = round_layers(model, x, {"0": 64, "3": 127, "5": 64, "9": 64})
    folded = expected.layers["0"].weight * (model[1].weight / (model[1].running_var + model[1].eps).sqrt()).view(-1, 1, 1, 1)
    weights = _dequantized_weights(art.onnx_model)
    assert np.allclose(weights[(16, 3, 3, 3)], folded.detach().numpy(), rtol=1e-4, atol=1e-6)
    for name in ("3", "5", "9"):
        w = expected.layers[name].weight.detach().numpy()
        assert np.allclose(weights[w.shape], w, rtol=1e-4, atol=1e-6), name
    nearest = compress(model, Plan(bits=8, rounding="nearest"), train_data=(x,), example_input=x[:1])
    assert nearest.reports[-1].details["rounding"] == {"method": "nearest"}
    assert not np.allclose(_dequantized_weights(nearest.onnx_model)[(16, 16, 1, 1)], weights[(16, 16, 1, 1)])
    mixed = compress(model, Plan(bits=8, layer_bits={"5": 32}), train_data=(x,), example_input=x[:1])
    assert mixed.reports[-1].details["rounding"]["layers"] == 3
    assert (16, 16, 1, 1) not in _dequantized_weights(mixed.onnx_model)  # float, and its float weights
    assert any(np.allclose(numpy_helper.to_array(t), model[5].weight.detach().numpy())
               for t in mixed.onnx_model.graph.initializer)  # fmt: skip


def test_mixed_precision_tables_share_one_rounding_and_one_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    calibrations = count_calibrations(monkeypatch)
    roundings = []
    from autoshrink.techniques import _rounding

    real = _rounding.round_layers
    monkeypatch.setattr(_rounding, "round_layers", lambda *a, **k: roundings.append(1) or real(*a, **k))
    model, x = _cnn()
    shared: dict = {}
    for table in ({}, {"0": 32}, {"5": 32}, {"0": 32, "9": 32}):
        compress(model, Plan(bits=8, layer_bits=table), train_data=(x,), example_input=x[:1], cache=shared)
    assert len(roundings) == 1 and len(calibrations) == 1


def _openvino_weights(model: object) -> dict[tuple[int, ...], np.ndarray]:
    """The int8 weights of an NNCF-quantized OpenVINO model's convolutions and matrix products
    (int8 constants times their scales), by shape."""
    out = {}
    for op in model.get_ordered_ops():  # type: ignore[attr-defined]
        weights = op.input_value(1).get_node() if op.get_type_name() in ("Convolution", "MatMul") else None
        if weights is None or weights.get_type_name() != "Multiply":
            continue
        convert, scale = (weights.input_value(i).get_node() for i in (0, 1))
        q = convert.input_value(0).get_node().get_data() if convert.get_type_name() == "Convert" else None
        if q is not None and q.dtype == np.int8:
            out[q.shape] = q.astype(np.float64) * scale.get_data().astype(np.float64)
    return out


def test_openvino_keeps_the_rounded_levels_of_every_layer_but_the_depthwise_one() -> None:
    """NNCF's full-range grid is the same per-channel one; its depthwise weights get a range per
    channel and kernel column, so that layer is not rounded."""
    pytest.importorskip("nncf")
    model, x = _cnn()
    art = compress(model, Plan(bits=8, runtime="openvino"), train_data=(x,), example_input=x[:1], int8_range="full")
    assert art.reports[-1].details["rounding"]["layers"] == 3
    expected = round_layers(model, x, {"0": 127, "5": 127, "9": 127})
    folded = expected.layers["0"].weight * (model[1].weight / (model[1].running_var + model[1].eps).sqrt()).view(-1, 1, 1, 1)
    weights = _openvino_weights(art.openvino_model)
    assert np.allclose(weights[(16, 3, 3, 3)], folded.detach().numpy(), rtol=1e-4, atol=1e-6)
    for name in ("5", "9"):
        w = expected.layers[name].weight.detach().numpy()
        w = w.T if name == "9" and w.shape not in weights else w  # OpenVINO may store a Linear's weight transposed
        assert np.allclose(weights[w.shape], w, rtol=1e-4, atol=1e-6), name
    nearest = compress(model, Plan(bits=8, runtime="openvino", rounding="nearest"), train_data=(x,), example_input=x[:1],
                       int8_range="full")  # fmt: skip
    assert nearest.reports[-1].details["rounding"] == {"method": "nearest"}
    assert not np.allclose(_openvino_weights(nearest.openvino_model)[(16, 16, 1, 1)], weights[(16, 16, 1, 1)])


def test_openvino_with_7_bit_weights_keeps_nncfs_rounding() -> None:
    """NNCF's overflow fix puts a channel's largest weight at 63.5 steps: no grid survives it."""
    pytest.importorskip("nncf")
    model, x = _cnn()
    art = compress(model, Plan(bits=8, runtime="openvino"), train_data=(x,), example_input=x[:1], int8_range="reduced")
    assert art.reports[-1].details["rounding"] == {"method": "nearest"}


def test_rounding_is_a_knob_of_onnx_runtime_and_openvino() -> None:
    assert Plan(bits=8, rounding="nearest").label == "int8-near"
    assert Plan.from_json(Plan(bits=8, rounding="nearest").to_json()).rounding == "nearest"
    assert "rounding" not in Plan(bits=8).to_dict()
    assert Plan(bits=8, rounding="nearest").on("openvino").rounding == "nearest"
    with pytest.raises(ValueError, match="rounding='nearest' applies to int8 and 4-bit plans in ONNX Runtime or OpenVINO"):
        Plan(rounding="nearest")
    with pytest.raises(ValueError, match="Plan.rounding must be one of"):
        Plan(bits=8, rounding="adaround")
