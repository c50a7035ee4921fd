"""The int8 weight range follows the CPU: checked on the built graphs, not on a flag."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from autoshrink import host
from autoshrink.artifact import SaturationWarning, load_artifact
from autoshrink.data import NamedTensorDataset
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from tests.conftest import count_calibrations, float_layer_case
from tests.transformer_models import SEQ, VOCAB, TokenTransformer

AVX2 = {"model": "AMD EPYC (test)", "int8_isa": ["avx2"]}
VNNI = {"model": "AMD EPYC (test)", "int8_isa": ["avx2", "avx512f", "avx512_vnni"]}


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()  # fmt: skip
    return model, torch.randn(64, 3, 8, 8)


def _encoder() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (64, SEQ))
    return TokenTransformer().eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _build(kind: str, cpu: dict, monkeypatch: pytest.MonkeyPatch, **options: str):
    monkeypatch.setattr(host, "cpu", lambda *a, **k: cpu)
    if kind == "cnn":
        model, x = _cnn()
        return compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1], **options)
    model, tokens = _encoder()
    return compress(
        model, Plan(bits=8), train_data=NamedTensorDataset(**tokens), example_input={k: v[:1] for k, v in tokens.items()},
        task="embedding", **options,
    )  # fmt: skip


def _int8_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The int8 weights multiplied by activations (Conv / MatMul inputs, through their
    DequantizeLinear where the graph is QDQ); embedding tables are left out."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq_source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) > 1:
            name = dq_source.get(node.input[1], node.input[1])
        elif node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul"):
            name = node.input[1]
        else:
            continue
        if name in inits and inits[name].dtype == np.int8:
            out[node.name] = inits[name]
    return out


@pytest.mark.parametrize("kind", ["cnn", "encoder"])
def test_a_cpu_without_vnni_gets_7_bit_weights_and_one_with_vnni_the_full_range(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reduced = _int8_weights(_build(kind, AVX2, monkeypatch).onnx_model)
    full = _int8_weights(_build(kind, VNNI, monkeypatch).onnx_model)
    assert reduced and full.keys() == reduced.keys()
    assert max(int(np.abs(w).max()) for w in reduced.values()) <= 64  # 7 bits: int16 sums cannot saturate
    assert min(int(np.abs(w).max()) for w in full.values()) >= 120  # every layer uses the 8th bit


def test_depthwise_convolutions_keep_the_full_range_where_other_weights_get_7_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host, "cpu", lambda *a, **k: AVX2)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Conv2d(16, 8, 1),
    ).eval()  # fmt: skip
    x = torch.randn(64, 3, 8, 8)
    art = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1])
    largest = {n.split("/")[-2]: int(np.abs(w).max()) for n, w in _int8_weights(art.onnx_model).items()}
    assert largest.keys() == {"module.0", "module.2", "module.4"}, largest
    assert largest["module.2"] >= 120  # the depthwise one: MLAS sums its products in int32
    assert largest["module.0"] <= 64 and largest["module.4"] <= 64
    assert art.int8_weight_range == "reduced"


def _integer_vs_simulated(groups: int, int8_range: str, out: int = 16) -> tuple[float, float]:
    """A conv built to saturate u8 x s8 pairs (every weight 1.0, activations near the top of their
    range), run by ONNX Runtime's integer kernels on this CPU and by the same QDQ graph without
    fusion (float arithmetic on the dequantized values): the largest difference and the output's
    largest value."""
    import onnxruntime as ort

    torch.manual_seed(0)
    conv = nn.Conv2d(16, out, 3, padding=1, groups=groups, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    model, x = nn.Sequential(nn.ReLU(), conv).eval(), torch.rand(64, 16, 8, 8) * 0.1 + 0.9
    art = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1], int8_range=int8_range)
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(art.onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x[:8].numpy()})[0])
    return float(np.abs(outputs[0] - outputs[1]).max()), float(np.abs(outputs[1]).max())


@pytest.mark.parametrize("out", [16, 32])
def test_full_range_depthwise_weights_do_not_saturate_on_this_cpu(out: int) -> None:
    """16: depthwise, full-range weights; 32 (two output channels per group): the GEMM path, which
    must keep 7 bits (it saturated on an AVX2-only EPYC when it had the full range)."""
    difference, largest = _integer_vs_simulated(groups=16, int8_range="auto", out=out)
    assert difference <= 0.02 * largest


@pytest.mark.skipif(host.int8_weight_range("auto") == "full", reason="this CPU sums int8 products in int32")
def test_the_saturation_check_sees_full_range_weights_saturate_where_the_cpu_does() -> None:
    """The check above can fail: a regular conv with full-range weights on a CPU without VNNI."""
    difference, largest = _integer_vs_simulated(groups=1, int8_range="full")
    assert difference > 0.2 * largest
    difference, largest = _integer_vs_simulated(groups=1, int8_range="auto")  # 7 bits: no saturation
    assert difference <= 0.02 * largest


def test_embedding_tables_keep_the_full_range_on_any_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _build("encoder", AVX2, monkeypatch).onnx_model
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    tables = [inits[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    int8_tables = [t for t in tables if t.dtype in (np.int8, np.uint8) and t.ndim == 2]
    assert int8_tables, "the embedding table was not quantized"
    assert all(int(t.max()) - int(t.min()) > 200 for t in int8_tables)


def test_a_forced_range_overrides_the_cpu_and_travels_with_the_artifact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    art = _build("cnn", AVX2, monkeypatch, int8_range="full")
    assert min(int(np.abs(w).max()) for w in _int8_weights(art.onnx_model).values()) >= 120
    assert art.int8_weight_range == "full"
    path = art.save(tmp_path / f"model{art.suffix}")
    with warnings.catch_warnings(record=True) as seen:  # loaded on a CPU that saturates
        warnings.simplefilter("always")
        loaded = load_artifact(path)
    assert loaded.int8_weight_range == "full"
    assert [w for w in seen if issubclass(w.category, SaturationWarning)]
    monkeypatch.setattr(host, "cpu", lambda *a, **k: VNNI)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        load_artifact(path)  # and no warning where it cannot saturate


def test_a_hardware_profile_forces_the_range() -> None:
    from autoshrink.config import ConfigError, HardwareProfile

    assert HardwareProfile(int8_range="reduced").to_dict()["int8_range"] == "reduced"
    assert "int8_range" not in HardwareProfile().to_dict()  # the default keeps stored studies matching
    with pytest.raises(ConfigError, match="int8_range"):
        HardwareProfile(int8_range="7bit")


def test_a_shared_cache_calibrates_once_and_builds_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    calibrations = count_calibrations(monkeypatch)
    model, x = _cnn()

    def build(plan: Plan, cache: dict | None) -> onnx.ModelProto:
        return compress(model, plan, train_data=(x,), example_input=x[:1], cache=cache).onnx_model

    fresh = build(Plan(bits=8, layer_bits={"0": 32}), None)
    assert len(calibrations) == 1
    shared: dict = {}
    build(Plan(bits=8), shared)
    reused = build(Plan(bits=8, layer_bits={"0": 32}), shared)  # other layers in float: the same ranges
    assert len(calibrations) == 2, "the second build with the shared cache calibrated again"
    scales = {t.name: numpy_helper.to_array(t) for t in fresh.graph.initializer if t.name.endswith("_scale")}
    again = {t.name: numpy_helper.to_array(t) for t in reused.graph.initializer if t.name.endswith("_scale")}
    assert scales and scales.keys() == again.keys()
    assert all(np.array_equal(scales[k], again[k]) for k in scales)


def _input_scale(model: onnx.ModelProto) -> float:
    """The scale of the QuantizeLinear that quantizes the graph's input."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == model.graph.input[0].name)
    return float(inits[first.input[1]])


def test_percentile_calibration_clips_an_outlier_that_minmax_keeps(capsys: pytest.CaptureFixture[str]) -> None:
    from autoshrink.pipeline import prepare, run_techniques
    from autoshrink.techniques import Stage
    from autoshrink.techniques.quantize import QuantizeConfig

    model, x = _cnn()
    x = x.clone()
    x[0, 0, 0, 0] = 1000.0  # 1 value in 12288 (under 0.01%), far outside the rest

    def scale(calibration: str) -> float:
        context = prepare(model, train_data=(x,), example_input=x[:1])
        stage = run_techniques(Stage(module=model), [QuantizeConfig(bits=8, calibration=calibration)], context)
        assert stage.onnx_bytes is not None
        return _input_scale(onnx.load_from_string(stage.onnx_bytes))

    minmax = scale("minmax")
    assert minmax > 1000 / 255 * 0.99  # every value seen fits
    assert scale("percentile-99.99") < minmax / 10
    assert capsys.readouterr().out == ""  # the histogram calibrators print progress: kept for DEBUG
    with pytest.raises(ValueError, match="calibration must be one of"):
        QuantizeConfig(bits=8, calibration="kl")


def test_an_export_is_reused_for_the_same_weights_and_redone_for_changed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.techniques import quantize

    exports: list[int] = []
    original = quantize.export_onnx
    monkeypatch.setattr(quantize, "export_onnx", lambda *a, **k: exports.append(1) or original(*a, **k))
    model, x = _cnn()
    cache: dict = {}
    first = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1], cache=cache)
    compress(model, Plan(bits=32, runtime="onnxruntime"), train_data=(x,), example_input=x[:1], cache=cache)
    assert len(exports) == 2  # the float weights, once for int8 and fp32, and the int8 model's rounded ones
    with torch.no_grad():
        model[0].weight.mul_(0.5)
    again = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1], cache=cache)
    assert len(exports) == 4  # other weights: exported again, and the artifact follows them
    assert not torch.allclose(first(x[:4]), again(x[:4]))


@pytest.mark.parametrize("rewrites", ["off", "on"])
def test_a_layer_kept_in_float_runs_in_float_in_onnx_runtime(monkeypatch: pytest.MonkeyPatch, rewrites: str) -> None:
    """ONNX Runtime's WeightBiasQuantization rewrite would quantize a float layer that sits
    between quantized ones, with one scale for all its channels: the session must run the graph
    as written (``on``: the rewrite let through, to show this test sees it)."""
    import onnxruntime as ort

    from autoshrink import sessions

    if rewrites == "on":
        monkeypatch.setattr(sessions, "DISABLED_ORT_REWRITES", ())
    art, x = float_layer_case()
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    written = ort.InferenceSession(art.payload, plain, providers=["CPUExecutionProvider"])
    expected = written.run(None, {written.get_inputs()[0].name: x[64:].numpy()})[0]
    with torch.no_grad():
        got = art(x[64:]).numpy()
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert (error < 1e-3) == (rewrites == "off"), error


def test_the_layers_of_a_sequential_model_keep_their_torch_names() -> None:
    """The export wrapper scoped a ``Sequential`` model's children ``module.<i>``: `layer_bits` had to
    say ``module.2`` where ``named_modules()`` says ``2``."""
    from autoshrink.techniques._onnx import layers

    model, x = _cnn()
    art = compress(model, Plan(bits=8, layer_bits={"2": 32}), train_data=(x,), example_input=x[:1])
    weight_layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(layers(onnx.load_from_string(art.payload))) == weight_layers == ["0", "2", "6"]
    assert [node for node, why in art.skipped.items() if "plan" in why] == ["quantize: /module/module.2/Conv"]  # layer 2's node
