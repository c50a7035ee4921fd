"""Lowering to a runtime, with real integer kernels for 8 and 4 bits.

* 32 bits: the torch module as it is, or (``runtime="onnxruntime"``) its fp32 ONNX export.
* 8 bits: ONNX Runtime static quantization in QDQ format (uint8 activations, int8 per-channel
  weights with 7-bit range) calibrated on training data. ORT fuses the QDQ pairs into integer Conv/MatMul
  kernels; ../shared/DESIGN.md found it the fastest int8 path for convolutions on this kind of
  CPU (and dynamic int8 for convs slower than fp32); autoshrink offers only this path.
* 4 bits: Linear/MatMul weights become ONNX Runtime ``MatMulNBits`` (4-bit blocks, int8
  compute); everything else (convolutions) gets the 8-bit path. The report lists which
  layers ended at 4, 8 and 32 bits.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from autoshrink._quiet import quiet_onnxruntime, root_logging_to_debug
from autoshrink.data import stack_inputs
from autoshrink.techniques import CompressionError, Context, Stage, TechniqueReport, register

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CALIBRATION_SAMPLES = 256
WEIGHT_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")


@dataclass(frozen=True)
class QuantizeConfig:
    """Lower the model to ``runtime`` at ``bits`` (32, 8 or 4)."""

    bits: int
    runtime: str = "onnxruntime"

    def __post_init__(self) -> None:
        if self.bits not in (32, 8, 4):
            raise ValueError(f"QuantizeConfig.bits must be 32, 8 or 4, got {self.bits}")
        if self.runtime not in ("torch", "onnxruntime"):
            raise ValueError(f"QuantizeConfig.runtime must be torch or onnxruntime, got {self.runtime}")
        if self.runtime == "torch" and self.bits != 32:
            raise ValueError("QuantizeConfig: integer kernels need runtime='onnxruntime'")


def export_onnx(module: nn.Module, example_input: torch.Tensor) -> onnx.ModelProto:
    """Export to ONNX with a dynamic batch axis (TorchScript exporter, dynamo as fallback)."""
    module = module.eval()
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example_input,),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=17,
            )
        return onnx.load_from_string(buffer.getvalue())
    except (TypeError, RuntimeError, torch.onnx.errors.OnnxExporterError) as legacy_error:
        try:
            program = torch.onnx.export(
                module,
                (example_input,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; report both attempts
            raise CompressionError(
                f"ONNX export failed (TorchScript exporter: {legacy_error}; dynamo: {exc})"
            ) from exc
        return program.model_proto  # type: ignore[union-attr]


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` as ``MatMul(A, W^T) + b`` in place.

    ``MatMulNBits`` only replaces MatMul nodes, and a 2-D ``nn.Linear`` exports as Gemm.
    Returns the number of nodes rewritten.
    """
    inits = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    rewritten = 0
    new_nodes = []
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0) or not plain:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        w_name = f"{node.input[1]}_kxn"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), w_name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_mm" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{node.name}_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return rewritten


def quantize_int8(model: onnx.ModelProto, calibration: torch.Tensor, op_types: list[str] | None = None) -> onnx.ModelProto:
    """Static QDQ int8 (uint8 activations, per-channel int8 weights) calibrated on ``calibration``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: b.numpy()} for b in calibration.split(32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    reader = Reader()
    with tempfile.TemporaryDirectory() as tmp, root_logging_to_debug():
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the raw graph instead
            pre = src
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # 7-bit weights: x86 CPUs without VNNI accumulate u8 x s8 products in int16,
            # which saturates with full-range weights (a one-off development measurement on
            # digits, prune 0.5 + KD3: 99.2% -> 95.6% without this; not in the benchmark).
            reduce_range=True,
        )
        return onnx.load(str(dst))


def quantize_4bit(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace constant-weight MatMuls by ONNX Runtime ``MatMulNBits`` (4-bit, block 32)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    gemm_to_matmul(model)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, accuracy_level=4)
    with warnings.catch_warnings(), root_logging_to_debug():
        warnings.simplefilter("ignore")
        quantizer.process()
    return quantizer.model.model


def layer_precision(model: onnx.ModelProto) -> dict[str, str]:
    """For each weight-bearing node: ``"4-bit"``, ``"int8"`` or ``"fp32"``."""
    produced_by_dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            out[node.name] = "4-bit"
        elif node.op_type in WEIGHT_OPS:
            quantized = len(node.input) > 1 and node.input[1] in produced_by_dq
            out[node.name] = "int8" if quantized else "fp32"
        elif node.op_type in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"):
            out[node.name] = "int8"
    return out


def onnx_errors() -> tuple[type[Exception], ...]:
    """What ONNX and ONNX Runtime raise; none of these derives from RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return (
        onnx.checker.ValidationError,
        onnx.shape_inference.InferenceError,
        ort_state.Fail,
        ort_state.InvalidArgument,
        ort_state.InvalidGraph,
        ort_state.NotImplemented,
        ort_state.RuntimeException,
    )


def _check_runs(model: onnx.ModelProto, module: nn.Module, example_input: torch.Tensor) -> None:
    """Load the model in ONNX Runtime and run one batch: the output shape must match torch's."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: example_input.numpy()})[0]
    with torch.no_grad():
        expected = tuple(module(example_input).shape)
    if tuple(out.shape) != expected:
        raise CompressionError(f"the ONNX model returns shape {tuple(out.shape)}, torch {expected}")


@register(QuantizeConfig)
def quantize(stage: Stage, config: QuantizeConfig, context: Context) -> Stage:
    if config.runtime == "torch":
        return stage
    quiet_onnxruntime()
    model = export_onnx(stage.module, context.example_input)
    try:
        if config.bits == 4:
            model = quantize_4bit(model)
        if config.bits in (8, 4):
            calibration = stack_inputs(context.train_data, CALIBRATION_SAMPLES)
            ops = None if config.bits == 8 else [op for op in WEIGHT_OPS if op not in ("MatMul", "Gemm")]
            model = quantize_int8(model, calibration, ops)
        _check_runs(model, stage.module, context.example_input)
    except onnx_errors() as exc:
        raise CompressionError(f"{config.bits}-bit ONNX Runtime lowering failed: {exc}") from exc
    precision = layer_precision(model)
    counts = Counter(precision.values())
    if config.bits != 32 and counts.get("int8", 0) + counts.get("4-bit", 0) == 0:
        raise CompressionError(f"{config.bits}-bit quantization changed no layer of this model")
    skipped = {name: "left in fp32 (no integer kernel used)" for name, p in precision.items() if p == "fp32"}
    changed = tuple(f"{name} ({p})" for name, p in precision.items() if p != "fp32")
    report = TechniqueReport(
        technique="quantize",
        changed=changed,
        skipped=skipped if config.bits != 32 else {},
        details={"bits": config.bits, "runtime": "onnxruntime", "layers_by_precision": dict(counts)},
    )
    return stage.with_report(report, onnx_bytes=model.SerializeToString())
