"""Mixed precision: `Plan.layer_bits` keeps exactly the named layers at a higher precision, in
every lowering (ONNX Runtime static, dynamic and 4-bit; OpenVINO's NNCF), read back from the
built graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest
import torch

from autoshrink.artifact import Artifact, load_artifact
from autoshrink.data import NamedTensorDataset
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques import CompressionError
from autoshrink.techniques._onnx import layer_precision, module_path
from autoshrink.workloads.huggingface import synthetic_tokens
from tests.conftest import make_case
from tests.transformer_models import SEQ, VOCAB, TokenTransformer

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None


def precision_by_layer(art: Artifact) -> dict[str, set[str]]:
    """Layer (torch module name) -> the precisions of its weight nodes in the built graph."""
    if art.runtime == "openvino":
        from autoshrink.techniques._openvino import layer_precision as ov_precision

        found = ov_precision(art.openvino_model)
    else:
        found = layer_precision(onnx.load_from_string(art.payload))
    out: dict[str, set[str]] = {}
    for node, precision in found.items():
        out.setdefault(module_path(node), set()).add(precision)
    return out


def _cnn(plan: Plan) -> Artifact:
    model, (x, y), example = make_case("rescnn")
    return compress(model, plan, train_data=(x[:256], y[:256]), example_input=example)


RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino"))]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_int8_cnn_keeps_exactly_the_named_layers_in_float(runtime: str) -> None:
    art = _cnn(Plan(bits=8, runtime=runtime, layer_bits={"a2": 32, "head": 32}))
    found = precision_by_layer(art)
    assert found.pop("a2") == {"fp32"} and found.pop("head") == {"fp32"}
    assert found and all(p == {"int8"} for p in found.values()), found  # every other layer int8
    assert sum("kept in fp32 by the plan" in why for why in art.skipped.values()) == 2


def test_a_4bit_cnn_keeps_its_head_at_int8_and_a_conv_in_float() -> None:
    uniform = precision_by_layer(_cnn(Plan(bits=4)))
    assert uniform["head"] == {"4-bit"} and uniform["b1"] == {"int8"}
    found = precision_by_layer(_cnn(Plan(bits=4, layer_bits={"head": 8, "b1": 32})))
    assert found.pop("head") == {"int8"} and found.pop("b1") == {"fp32"}
    assert all(p == {"int8"} for p in found.values()), found


def _encoder() -> tuple[torch.nn.Module, NamedTensorDataset, dict[str, torch.Tensor]]:
    x, y = synthetic_tokens(64, SEQ, VOCAB, 3)
    torch.manual_seed(0)
    return TokenTransformer().eval(), NamedTensorDataset(**x, labels=y), {k: v[:1] for k, v in x.items()}


def test_a_4bit_encoder_keeps_the_named_linear_layers_at_int8_and_the_head_in_float() -> None:
    """4-bit embedding tables with int8 matrix products: the recipe that keeps MiniLM's speed."""
    model, data, example = _encoder()
    linears = {f"encoder.layers.{i}.{name}": 8 for i in range(2) for name in ("linear1", "linear2")}
    plan = Plan(bits=4, layer_bits={**linears, "head": 32})
    found = precision_by_layer(compress(model, plan, train_data=data, example_input=example))
    assert found.pop("embed") == {"4-bit"} and found.pop("head") == {"fp32"}
    assert all(found.pop(name) == {"int8"} for name in linears)
    assert found and all(p == {"4-bit"} for p in found.values()), found  # attention projections stay 4-bit


def test_an_int8_encoder_keeps_a_named_layer_in_float_and_the_plan_travels_with_the_artifact(tmp_path: Path) -> None:
    model, data, example = _encoder()
    plan = Plan(bits=8, layer_bits={"encoder.layers.1": 32})  # a whole block: every layer inside it
    art = compress(model, plan, train_data=data, example_input=example)
    found = precision_by_layer(load_artifact(art.save(tmp_path / "mixed.onnx")))
    inside = {name: p for name, p in found.items() if name.startswith("encoder.layers.1")}
    assert inside and all(p == {"fp32"} for p in inside.values())
    assert all(p == {"int8"} for name, p in found.items() if name not in inside)
    assert load_artifact(tmp_path / "mixed.onnx").plan == plan


def test_a_layer_the_model_does_not_have_is_a_clear_error() -> None:
    with pytest.raises(CompressionError, match=r"layer_bits names layers this model has no weights in: \['a3'\]; its layers: stem.0, a1"):
        _cnn(Plan(bits=8, layer_bits={"a3": 32}))


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (dict(bits=32, layer_bits={"a2": 32}), r"must be one of \(\) in a 32-bit plan"),
        (dict(bits=8, layer_bits={"a2": 8}), r"must be one of \(32,\) in a 8-bit plan"),
        (dict(bits=8, runtime="openvino", layer_bits={"a2": 4}), r"must be one of \(32,\)"),
    ],
)
def test_layer_bits_must_name_a_higher_precision_the_runtime_runs(plan: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plan(**plan)
