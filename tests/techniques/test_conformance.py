"""Every technique on a residual CNN, a depthwise net and a transformer encoder.

Checks: output shape kept, parameters and artifact bytes really reduced, the original model
untouched, and predictions within a stated bound of the original's.
"""

from __future__ import annotations

import pytest
import torch

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from tests.conftest import accuracy, agreement

BASELINE = Plan()


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("plan", "max_drop"),
    [
        # Structural changes followed by 3 epochs of distillation: within 25 points of the
        # original's accuracy on these small synthetic tasks (chance is 10-20%). Measured:
        # 0-8 points for pruning, 3-20 for low rank (worst: the transformer).
        (Plan(prune=0.3, distill_epochs=3), 0.25),
        (Plan(rank=0.5, distill_epochs=3), 0.25),
        # Tensor train: at half the weights every layer of these models would cost more
        # multiply-adds than dense (left dense, the plan fails); a tenth gives bonds that do not.
        (Plan(rank=0.1, rank_method="tt", distill_epochs=3), 0.25),
        # Quantization alone: within 3 points (measured: within 1).
        (Plan(bits=8), 0.03),
        (Plan(bits=4), 0.03),
    ],
    ids=lambda v: v.label if isinstance(v, Plan) else str(v),
)
def test_technique_shrinks_and_keeps_behaviour(case, plan: Plan, max_drop: float) -> None:
    name, model, data, example = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = compress(model, BASELINE, train_data=data, example_input=example)
    art = compress(model, plan, train_data=data, example_input=example)

    x, y = data
    with torch.no_grad():
        reference = model(x)
    out = art(x)
    assert out.shape == reference.shape
    assert accuracy(out, y) >= accuracy(reference, y) - max_drop, f"{name}: {plan.label} lost too much"
    assert art.size_bytes < base.size_bytes, f"{name}: {plan.label} did not shrink the artifact"
    if plan.bits == 32:
        assert art.num_parameters < _params(model)
    # the original model is never modified
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{name}: compress mutated {key}"
    assert all(r.technique for r in art.reports)


def test_int8_changes_layers_to_integer(case) -> None:
    name, model, data, example = case
    art = compress(model, Plan(bits=8), train_data=data, example_input=example)
    report = next(r for r in art.reports if r.technique == "quantize")
    assert report.details["layers_by_precision"].get("int8", 0) > 0
    ops = {n.op_type for n in art.onnx_model.graph.node}
    if report.details["scheme"] == "static":  # convolutional models: calibrated QDQ
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    else:  # matrix-product models: int8 weights, activations quantized per call
        assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    expected = "dynamic" if name == "transformer" else "static"
    assert report.details["scheme"] == expected


def test_a_cnn_with_a_large_classifier_still_gets_integer_convolutions() -> None:
    # Most weights sit in the Linear head (as in EfficientNet-B0 with 1000 classes once its
    # convolutions are pruned): the recipe follows the layers, so every conv is int8 too.
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 1000),
    ).eval()  # fmt: skip
    x = torch.randn(16, 3, 8, 8)
    art = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1])
    report = next(r for r in art.reports if r.technique == "quantize")
    assert report.details["scheme"] == "static"
    assert report.details["layers_by_precision"] == {"int8": 3}


def test_int4_uses_matmulnbits_on_linear_layers() -> None:
    from tests.conftest import make_case

    model, data, example = make_case("transformer")
    art = compress(model, Plan(bits=4), train_data=data, example_input=example)
    ops = [n.op_type for n in art.onnx_model.graph.node]
    assert ops.count("MatMulNBits") >= 4  # FFN and embedding/head linears
    report = next(r for r in art.reports if r.technique == "quantize")
    assert report.details["layers_by_precision"]["4-bit"] == ops.count("MatMulNBits")


def test_distillation_after_pruning_keeps_the_answers_and_lowers_its_loss() -> None:
    from tests.conftest import make_case

    model, data, example = make_case("rescnn", n=256)
    x = data[0]
    with torch.no_grad():
        reference = model(x)
    pruned = compress(model, Plan(prune=0.5), train_data=data, example_input=example)
    distilled = compress(model, Plan(prune=0.5, distill_epochs=8), train_data=data, example_input=example)
    before, after = agreement(pruned(x), reference), agreement(distilled(x), reference)
    # Reconstruction already brings the pruned model back (see test_prune); distillation keeps it there.
    assert before > 0.8 and after >= before - 0.02, (before, after)
    losses = next(r for r in distilled.reports if r.technique == "distill").details["loss_per_epoch"]
    assert losses[-1] < losses[0]


def test_runtime_errors_in_lowering_become_compression_errors(monkeypatch) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph

    from autoshrink.techniques import CompressionError, quantize
    from tests.conftest import make_case

    def broken(*args, **kwargs):
        raise InvalidGraph("no kernel for this node")

    monkeypatch.setattr(quantize, "quantize_static", broken)
    model, data, example = make_case("rescnn")
    with pytest.raises(CompressionError, match="8-bit ONNX Runtime lowering failed: no kernel"):
        compress(model, Plan(bits=8), train_data=data, example_input=example)


def test_quantizing_layernorm_models_prints_nothing(capfd) -> None:
    # ONNX Runtime's quantizer printed one "Axis 1 is out-of-range" warning per LayerNorm.
    from tests.conftest import make_case

    model, data, example = make_case("transformer")
    for bits in (8, 4):
        compress(model, Plan(bits=bits), train_data=data, example_input=example)
    captured = capfd.readouterr()
    assert "out-of-range" not in captured.err + captured.out
    assert captured.err.strip() == "", captured.err[:500]
