"""Lowering to a runtime, with real integer kernels for 8 and 4 bits.

* 32 bits: the torch module as it is, or (``runtime="onnxruntime"``) its fp32 ONNX export.
* 8 bits, two recipes, chosen from the model's kind of layers (``scheme="auto"``):

  - **static** (convolutional models): ONNX Runtime static quantization in QDQ format, uint8
    activations and per-channel int8 weights, calibrated on training data (MinMax ranges by
    default; ``QuantizeConfig.calibration`` picks Percentile or Entropy, `CALIBRATIONS`). The
    ranges are kept in the search's cache, so a candidate that only keeps other layers in float
    is not calibrated again.
    ORT fuses the QDQ pairs into integer Conv/MatMul kernels; ../shared/DESIGN.md found it the
    fastest int8 path for convolutions on this kind of CPU (and dynamic int8 for convs slower
    than fp32).
  - **dynamic** (models whose layers are mostly matrix products and embeddings:
    transformers, MLPs): per-channel int8 weights for every MatMul/Gemm and int8 embedding
    tables (Gather), activations quantized per call. Pretrained encoders have activation
    outliers that a calibrated static range clips. On pretrained all-MiniLM-L6-v2
    (``results/transformers.md``, from ``python -m benchmarks transformers``) the mean cosine to
    the fp32 embeddings was 0.53 for static QDQ, 0.95 for static on MatMul only, 0.966 for
    dynamic per tensor and 0.992 for dynamic per channel, the last two at the same speed.

* The int8 weight range (``int8_range``): x86 CPUs without VNNI add pairs of u8 x s8 products
  in int16, which saturates with full-range weights, so there every int8 product (static,
  dynamic, the convolutions of 4-bit plans, OpenVINO) gets 7-bit weights; CPUs with VNNI or
  AMX get the full range. ``auto`` decides from the CPU the model is built on
  (`autoshrink.host.int8_weight_range`); a hardware profile can force either for another
  target. Embedding tables are looked up, never multiplied in int8, and keep the full range;
  so do depthwise convolutions' weights (`depthwise_weights`): ONNX Runtime's depthwise
  kernels widen both operands to int16 and sum in int32, so nothing saturates there. On
  pretrained EfficientNet-Lite1 on an AVX2-only EPYC that took int8's top-1 agreement with fp32
  from 0.754 to 0.797 at the same speed (13.7 / 13.4 ms, timed in one process; README).
  ``results/int8-range.md`` measures both ranges on both kinds of CPU.

* Weight rounding (``rounding``): in the static recipe, each int8 layer's weights are put on the
  runtime's grid before export by error-compensating rounding with bias correction
  (`autoshrink.techniques._rounding`, GPTQ), so that the layer's output on the calibration
  inputs, not each weight, stays close; the runtime's own rounding then changes nothing
  (`rounding_tops` says which layers, on which grid: in OpenVINO, not the depthwise ones, and
  none with 7-bit weights). ``nearest`` leaves it to the runtime. On pretrained
  EfficientNet-Lite1, int8's top-1 agreement with fp32 went from 0.797 to 0.8945 in ONNX Runtime
  (AVX2-only EPYC, 7-bit weights) and from 0.856 to 0.898 in OpenVINO (AVX-512 VNNI EPYC; README).

* 4 bits: MatMul weights become ONNX Runtime ``MatMulNBits`` (asymmetric 4-bit blocks of 32,
  int8 compute); with the dynamic recipe embedding tables become 4-bit ``GatherBlockQuantized``
  too; convolutions get the static 8-bit path. The report lists every layer's precision.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import tempfile
import warnings
from collections import Counter
from collections.abc import Collection, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from autoshrink._quiet import output_to_debug, quiet_onnxruntime, root_logging_to_debug
from autoshrink.data import stack_inputs
from autoshrink.host import INT8_RANGES, int8_weight_range
from autoshrink.inputs import Inputs, InputSpec, batch_size, tensors
from autoshrink.plan import CALIBRATION_METHODS, ROUNDINGS
from autoshrink.runtimes import RUNTIME_BITS
from autoshrink.techniques import (
    CompressionError,
    Context,
    Stage,
    TechniqueReport,
    register,
    remembered,
    weights_fingerprint,
)
from autoshrink.techniques._onnx import (
    WEIGHT_OPS,
    at_least_opset,
    check_runs,
    export_onnx,
    gemm_to_matmul,
    inside,
    layer_precision,
    layers,
    module_path,
    nodes_of,
    onnx_errors,
    unshare_weights,
    weight_layers,
    working_dir,
)

CALIBRATION_SAMPLES = 256
#: Prefix of the `Context.cache` keys that hold ONNX Runtime activation ranges (`quantize_static`).
CALIBRATION_CACHE = "ort-calibration"
#: ONNX Runtime's ways to choose each activation's int8 range from the calibration inputs: name ->
#: (``CalibrationMethod`` member, ``extra_options``). MinMax covers every value seen; Percentile
#: clips the top 0.001% (or 0.01%) of magnitudes; Entropy picks the range whose quantized histogram
#: keeps the most information (KL divergence). ``results/pretrained.md`` measures them.
CALIBRATIONS: dict[str, tuple[str, dict[str, Any]]] = {  # keyed by `Plan.calibration`'s names
    "minmax": ("MinMax", {}),
    "percentile": ("Percentile", {"CalibPercentile": 99.999}),
    "percentile-99.99": ("Percentile", {"CalibPercentile": 99.99}),
    "entropy": ("Entropy", {}),
}
# MinMax stays the default: on pretrained EfficientNet-Lite (README, "Which int8 calibration") no
# method won on both models and both CPUs, and the histogram methods take 2.5-3x longer to
# calibrate; so the method is a knob (`Plan.calibration`) that the CNN space searches.
DEFAULT_CALIBRATION = CALIBRATION_METHODS[0]
#: The report detail (and artifact metadata) that says which int8 weight range a model was built with.
INT8_RANGE_KEY = "int8_weight_range"
INT4_OPSET = 21  # the first opset with an int4 tensor type
SCHEMES = ("auto", "static", "dynamic")


@dataclass(frozen=True)
class QuantizeConfig:
    """Lower the model to ``runtime`` at ``bits`` (32, 8 or 4) with the int8 ``scheme``."""

    bits: int
    runtime: str = "onnxruntime"
    scheme: str = "auto"
    openvino_int8: str = "nncf"  # or "qdq": OpenVINO runs ONNX Runtime's QDQ model
    int8_range: str = "auto"  # "full", "reduced" (7-bit weights) or "auto" (from this CPU)
    #: Mixed precision: (layer, bits) pairs, layers kept at 32 (float) or, in a 4-bit plan, 8 (`Plan.layer_bits`).
    layer_bits: tuple[tuple[str, int], ...] = ()
    #: How ONNX Runtime's static int8 picks activation ranges: a name of `CALIBRATIONS`.
    calibration: str = DEFAULT_CALIBRATION
    #: Keyword arguments for ``nncf.quantize`` (OpenVINO int8) that replace autoshrink's, e.g.
    #: ``(("fast_bias_correction", True),)`` or ``(("preset", nncf.QuantizationPreset.MIXED),)``.
    nncf_options: tuple[tuple[str, Any], ...] = ()
    #: How the static recipe's int8 weights are rounded: ``gptq`` (`autoshrink.techniques._rounding`) or ``nearest``.
    rounding: str = ROUNDINGS[0]

    def __post_init__(self) -> None:
        if self.bits not in (32, 8, 4):
            raise ValueError(f"QuantizeConfig.bits must be 32, 8 or 4, got {self.bits}")
        if self.runtime not in RUNTIME_BITS:
            raise ValueError(f"QuantizeConfig.runtime must be one of {tuple(RUNTIME_BITS)}, got {self.runtime}")
        if self.bits not in RUNTIME_BITS[self.runtime]:
            raise ValueError(f"QuantizeConfig: {self.runtime} runs bits in {RUNTIME_BITS[self.runtime]}, not {self.bits}")
        if self.openvino_int8 not in ("nncf", "qdq"):
            raise ValueError(f"QuantizeConfig.openvino_int8 must be nncf or qdq, got {self.openvino_int8!r}")
        if self.int8_range not in INT8_RANGES:
            raise ValueError(f"QuantizeConfig.int8_range must be one of {INT8_RANGES}, got {self.int8_range!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"QuantizeConfig.calibration must be one of {tuple(CALIBRATIONS)}, got {self.calibration!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"QuantizeConfig.scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"QuantizeConfig.rounding must be one of {ROUNDINGS}, got {self.rounding!r}")


def choose_scheme(model: onnx.ModelProto) -> str:
    """``static`` when most weight layers are convolutions, else ``dynamic``.

    Layers are counted, not weights: a CNN with a large classifier (EfficientNet-B0 with 1000
    classes, its convolutions pruned and factorized) has most of its *weights* in one Linear,
    and the dynamic recipe would leave all of its convolutions in fp32.
    """
    layers = weight_layers(model)
    return "static" if layers["conv"] >= layers["matmul"] and layers["conv"] > 0 else "dynamic"


def _calibration_key(
    graph: bytes, chunks: list[dict[str, np.ndarray]], op_types: list[str] | None, calibration: str
) -> str:
    """What the activation ranges of a calibration depend on: graph, inputs, op types and method."""
    digest = hashlib.sha1(graph)
    for chunk in chunks:
        for name in sorted(chunk):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(chunk[name]).data)
    digest.update(repr((sorted(op_types) if op_types is not None else None, calibration)).encode())
    return f"{CALIBRATION_CACHE}:{digest.hexdigest()}"


def _caches_calibration() -> bool:
    """Whether this ONNX Runtime's ``quantize_static`` takes a calibration cache
    (``calibration_cache_path``, added in 2026 by onnxruntime pull request 28221; older versions
    calibrate every build)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _reader(chunks: list[dict[str, np.ndarray]]) -> Any:
    """An ONNX Runtime calibration reader over ``chunks`` that the calibrator reads a range of at
    a time (``CalibStridedMinMax``), so that it never holds every intermediate tensor of every
    input at once: Percentile and Entropy ran out of 22 GB on EfficientNet-Lite1 otherwise."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(chunks))

        def __len__(self) -> int:
            return len(chunks)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._batches = iter(chunks[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()


def quantize_static(
    model: onnx.ModelProto,
    calibration: Inputs,
    spec: InputSpec,
    op_types: list[str] | None = None,
    *,
    reduce_range: bool = True,
    keep: Collection[str] = (),
    only: Collection[str] | None = None,
    cache: MutableMapping[str, Any] | None = None,
    method: str = DEFAULT_CALIBRATION,
    ranges_from: onnx.ModelProto | None = None,
    _ranges_key: str | None = None,
) -> onnx.ModelProto:
    """Static QDQ int8 (uint8 activations, per-channel int8 weights, 7-bit with ``reduce_range``
    except `depthwise_weights`) calibrated on ``calibration`` with ``method`` (a name of `CALIBRATIONS`); the layers ``keep``
    (module names) stay as they are, and with ``only`` only those layers change.

    ``cache`` (a dict shared by several calls, such as a search's or a sensitivity analysis'
    `Context.cache`): the activation ranges of a graph calibrated on the same inputs are
    computed once and reused. They cover every tensor of ``op_types``, whatever ``keep`` and
    ``only`` say, so that a model built again with other layers in float (mixed precision, one
    layer at a time) is only quantized again, not calibrated again: the slow half on a
    pretrained CNN (``results/pretrained.md``). ``ranges_from``: the float graph that ``model``'s
    weights were rounded from (`rounded`); its ranges are the ones used, so that every
    mixed-precision table, each rounded a little differently, gets the same ranges, and a build
    is the same whichever was calibrated first.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATIONS:
        raise ValueError(f"calibration method must be one of {tuple(CALIBRATIONS)}, got {method!r}")
    calibrate, options = CALIBRATIONS[method]
    rows = batch_size(calibration)
    chunks = [
        {n: t[i : i + 32].numpy() for n, t in zip(spec.names, tensors(calibration))} for i in range(0, rows, 32)
    ]
    if ranges_from is not None and cache is not None and _caches_calibration():
        _ranges_key = f"float graph {hashlib.sha1(ranges_from.SerializeToString()).hexdigest()}"
        if _calibration_key(_ranges_key.encode(), chunks, op_types, method) not in cache:  # the float graph, once
            quantize_static(ranges_from, calibration, spec, op_types, reduce_range=reduce_range, cache=cache,
                            method=method, _ranges_key=_ranges_key)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, working_dir(Path(tmp)), root_logging_to_debug(), output_to_debug():
        # (the histogram calibrators print their progress)
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimization; quantize the raw graph
            logging.getLogger("autoshrink").debug("quant_pre_process failed (%s); quantizing as exported", exc)
            pre = src
        graph = onnx.load(str(pre))  # node names as the quantizer sees them, after pre-processing
        overrides = {w: [{"reduce_range": False, "axis": 0}] for w in depthwise_weights(graph)} if reduce_range else {}
        cached: dict[str, Any] = {}
        if cache is not None and _caches_calibration():
            key = _calibration_key(_ranges_key.encode() if _ranges_key else pre.read_bytes(), chunks, op_types, method)
            ranges = Path(tmp) / "ranges.json"
            if key in cache:
                ranges.write_text(cache[key])
            cached["calibration_cache_path"] = str(ranges)
        ort_quantize_static(
            str(pre), str(dst), _reader(chunks), quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            reduce_range=reduce_range, nodes_to_exclude=nodes_of(graph, keep) if keep else None,
            nodes_to_quantize=nodes_of(graph, only) if only is not None else None,
            calibrate_method=getattr(CalibrationMethod, calibrate),
            extra_options={"CalibStridedMinMax": 1, **options, **({"TensorQuantOverrides": overrides} if overrides else {})},
            **cached,
        )  # fmt: skip
        if cached and cache is not None:
            cache[key] = ranges.read_text()
        return onnx.load(str(dst))


def depthwise_weights(model: onnx.ModelProto) -> list[str]:
    """The weight initializers of ``model``'s depthwise convolutions (one input and one output
    channel per group), which ONNX Runtime multiplies in its depthwise kernels (operands widened to
    int16, products summed in int32) rather than in the u8 x s8 pairs that saturate without VNNI;
    so they keep the full int8 range even where other weights get 7 bits. A grouped conv with more
    output channels than groups goes through the GEMM and keeps 7 bits: with full-range weights it
    saturated on an AVX2-only EPYC (``tests/techniques/test_quantize.py`` runs both on the CPU).

    >>> from onnx import TensorProto, helper
    >>> def conv(name, shape, group):
    ...     return (helper.make_node("Conv", ["x", name], [name + "_y"], group=group),
    ...             helper.make_tensor(name, TensorProto.FLOAT, shape, [0.0] * int(np.prod(shape))))
    >>> (dw, w1), (pw, w2) = conv("dw", [8, 1, 3, 3], 8), conv("pw", [8, 8, 1, 1], 1)
    >>> twice, w3 = conv("x2", [16, 1, 3, 3], 8)  # two output channels per group
    >>> graph = helper.make_graph([dw, pw, twice], "g", [], [], initializer=[w1, w2, w3])
    >>> depthwise_weights(helper.make_model(graph))
    ['dw']
    """
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else ""
        if group > 1 and len(shapes.get(weight, [])) > 1 and shapes[weight][:2] == [group, 1]:
            found.append(weight)
    return found


def quantize_dynamic(
    model: onnx.ModelProto,
    *,
    per_channel: bool = True,
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather"),
    reduce_range: bool = True,
    keep: Collection[str] = (),
    only: Collection[str] | None = None,
) -> onnx.ModelProto:
    """Dynamic int8: int8 MatMul/Gemm weights (per channel by default; 7-bit with
    ``reduce_range``) and int8 embedding tables (full range: a lookup multiplies nothing).
    The layers ``keep`` (module names) stay as they are; with ``only``, only those layers change."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    constants = {t.name for t in model.graph.initializer}
    tables = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in constants}
    overrides = {name: [{"reduce_range": False}] for name in sorted(tables)}
    with tempfile.TemporaryDirectory() as tmp, working_dir(Path(tmp)), root_logging_to_debug():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=list(op_types), per_channel=per_channel,
            reduce_range=reduce_range, weight_type=QuantType.QInt8,
            nodes_to_exclude=_as_quantized(nodes_of(model, keep)) if keep else None,
            nodes_to_quantize=_as_quantized(nodes_of(model, only)) if only is not None else None,
            extra_options={"TensorQuantOverrides": overrides} if overrides else None,
        )  # fmt: skip
        return onnx.load(str(dst))


def _as_quantized(nodes: list[str]) -> list[str]:
    """Node names as ONNX Runtime's dynamic quantizer sees them: it first rewrites each Gemm as a
    MatMul named ``<gemm>_MatMul``, then matches the names it was given."""
    return [*nodes, *(f"{n}_MatMul" for n in nodes)]


def has_embedding_tables(model: onnx.ModelProto) -> bool:
    """Whether the graph looks rows up in constant tables (``nn.Embedding``)."""
    tables = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    return any(n.op_type == "Gather" and n.input[0] in tables for n in model.graph.node)


def quantize_4bit(
    model: onnx.ModelProto, *, embeddings: bool, matmuls: bool = True, keep: Collection[str] = ()
) -> onnx.ModelProto:
    """MatMul weights (and, with ``embeddings``, Gather tables) to 4-bit blocks of 32; the
    layers ``keep`` (module names) stay as they are."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    gemm_to_matmul(model)
    if embeddings:  # int4 tables need opset 21; the quantizer would only raise the declared version
        model = at_least_opset(model, INT4_OPSET)
    ops = (("MatMul",) if matmuls else ()) + (("Gather",) if embeddings else ())
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    # Asymmetric blocks (a zero point each): on pretrained all-MiniLM-L6-v2 they kept 0.974 mean
    # cosine where symmetric ones kept 0.965, for 2% more bytes (results/minilm.md).
    quantizer = MatMulNBitsQuantizer(
        model, bits=4, block_size=32, is_symmetric=False, accuracy_level=4, op_types_to_quantize=ops,
        nodes_to_exclude=nodes_of(model, keep),
    )
    with warnings.catch_warnings(), root_logging_to_debug():
        warnings.simplefilter("ignore")
        quantizer.process()
    return quantizer.model.model


def lower(
    model: onnx.ModelProto, bits: int, scheme: str, context: Context, spec: InputSpec, *, reduce_range: bool = True,
    layer_bits: Mapping[str, int] | None = None, calibration: str = DEFAULT_CALIBRATION, ranges_from: onnx.ModelProto | None = None,
) -> onnx.ModelProto:  # fmt: skip
    """The exported fp32 model at ``bits`` with the given int8 ``scheme`` (7-bit int8 weights
    with ``reduce_range``; 4-bit blocks multiply within int16's range either way) and static
    ``calibration`` method.

    ``layer_bits`` (module name -> 32 or 8): layers kept in float, or at int8 in a 4-bit model.
    ``ranges_from``: see `quantize_static`.
    """
    table = dict(layer_bits or {})
    floats = [name for name, b in table.items() if b == 32]
    int8 = [name for name, b in table.items() if b == 8]
    if bits == 32:
        return model
    if scheme == "dynamic":
        if bits == 4:
            model = quantize_4bit(model, embeddings=has_embedding_tables(model), keep=floats + int8)
            return quantize_dynamic(model, reduce_range=reduce_range, only=int8) if int8 else model
        return quantize_dynamic(model, reduce_range=reduce_range, keep=floats)
    calibration_inputs = stack_inputs(context.train_data, CALIBRATION_SAMPLES)
    if bits == 4:
        model = quantize_4bit(model, embeddings=False, keep=floats + int8)
        convs = [op for op in WEIGHT_OPS if op not in ("MatMul", "Gemm")]
        if not int8:
            return quantize_static(model, calibration_inputs, spec, convs, reduce_range=reduce_range, keep=floats,
                                   cache=context.cache, method=calibration, ranges_from=ranges_from)  # fmt: skip
        # int8 for the convolutions and for the Linear layers named 8, and no other product
        chosen = [layer for layer in layers(model) if inside(layer, int8) or not _is_matmul_layer(model, layer)]
        return quantize_static(model, calibration_inputs, spec, [*convs, "MatMul", "Gemm"], reduce_range=reduce_range,
                               keep=floats, only=chosen, cache=context.cache, method=calibration,
                               ranges_from=ranges_from)  # fmt: skip
    return quantize_static(model, calibration_inputs, spec, reduce_range=reduce_range, keep=floats, cache=context.cache,
                           method=calibration, ranges_from=ranges_from)  # fmt: skip


def _is_matmul_layer(model: onnx.ModelProto, layer: str) -> bool:
    """Whether ``layer``'s weight nodes are matrix products (MatMul, Gemm or already 4-bit)."""
    ops = {n.name: n.op_type for n in model.graph.node}
    return all(ops[n] in ("MatMul", "Gemm", "MatMulNBits") for n in layers(model)[layer])


def lower_openvino(
    exported: onnx.ModelProto,
    config: QuantizeConfig,
    scheme: str,
    context: Context,
    spec: InputSpec,
    *,
    reduce_range: bool = True,
    keep: Collection[str] = (),
) -> tuple[Any, str]:
    """The OpenVINO model at ``config.bits`` and how its int8 was made; the layers ``keep``
    (module names) stay in float."""
    from autoshrink.techniques import _openvino

    if config.bits == 32:
        return _openvino.from_onnx(exported.SerializeToString()), "fp32"
    calibration = stack_inputs(context.train_data, CALIBRATION_SAMPLES)
    if config.openvino_int8 == "qdq":
        qdq = quantize_static(exported, calibration, spec, reduce_range=reduce_range, keep=keep, cache=context.cache,
                              method=config.calibration)  # fmt: skip
        return _openvino.from_onnx(qdq.SerializeToString()), "ONNX QDQ model (ONNX Runtime calibration)"
    with root_logging_to_debug(), output_to_debug():
        model = _openvino.quantize_nncf(
            _openvino.from_onnx(exported.SerializeToString()), calibration, spec,
            transformer=scheme == "dynamic", reduce_range=reduce_range, ignored=nodes_of(exported, keep),
            options=dict(config.nncf_options),
        )  # fmt: skip
    return model, "NNCF post-training quantization"


def _check_openvino(payload: bytes, stage: Stage, context: Context, spec: InputSpec) -> None:
    from autoshrink.inputs import call_model
    from autoshrink.techniques import _openvino

    compiled = _openvino.compile_model(payload, 1)
    out = compiled({n: t.numpy() for n, t in zip(spec.names, tensors(context.example_input))})[0]
    import torch

    with torch.no_grad():
        expected = call_model(stage.module, context.example_input)
    if tuple(out.shape) != tuple(expected.shape):
        raise CompressionError(f"the OpenVINO model returns shape {tuple(out.shape)}, torch {tuple(expected.shape)}")


def _checked_table(exported: onnx.ModelProto, config: QuantizeConfig) -> dict[str, int]:
    """``config.layer_bits`` as a mapping, each layer checked against the model's weight layers."""
    table = dict(config.layer_bits)
    if table and config.bits == 32:
        raise CompressionError("layer_bits (mixed precision) needs an int8 or 4-bit plan")
    found = list(layers(exported))
    unknown = sorted(name for name in table if not any(inside(layer, [name]) for layer in found))
    if unknown:
        shown = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "")
        raise CompressionError(f"layer_bits names layers this model has no weights in: {unknown}; its layers: {shown}")
    return table


#: Exported graphs `exported` keeps in a search's cache (the most recently used), in memory.
KEPT_EXPORTS = 2


def exported(stage: Stage, context: Context, spec: InputSpec) -> onnx.ModelProto:
    """``stage.module`` exported to ONNX (`export_onnx`), once per structure and weights in
    ``context.cache``: every bit width and mixed-precision setting of one model, and each layer of
    the per-layer sensitivity analysis (65 builds of the same EfficientNet-Lite1, about 0.8 s an
    export), lowers the same graph. The key hashes the module's printed structure, its weights
    (`weights_fingerprint`) and the example's shapes, so a distilled or otherwise changed module
    is exported again. A fresh copy is returned (lowering changes it).

    Example:
        >>> import torch
        >>> net, ctx = torch.nn.Linear(4, 2), Context(teacher=None, train_data=None, example_input=torch.randn(1, 4))
        >>> first = exported(Stage(net), ctx, InputSpec.of(ctx.example_input))
        >>> again = exported(Stage(net), ctx, InputSpec.of(ctx.example_input))
        >>> again is not first and again == first, len(ctx.cache["exports"])
        (True, 1)
    """
    example = context.example_input
    digest = hashlib.sha1(repr((str(stage.module), spec, [(tuple(t.shape), str(t.dtype)) for t in tensors(example)])).encode())
    key = f"{weights_fingerprint(stage.module)}:{digest.hexdigest()[:16]}"
    made = remembered(context.cache, "exports", key, lambda: export_onnx(stage.module, example, spec).SerializeToString(),
                      keep=KEPT_EXPORTS)  # fmt: skip
    return onnx.load_from_string(made)


#: Weight roundings `rounded` keeps in a search's cache (the most recently used), in memory.
KEPT_ROUNDINGS = 2


def rounding_tops(module: Any, runtime: str, reduce_range: bool) -> dict[str, int]:
    """The Conv2d and Linear layers of ``module`` whose int8 weights ``runtime`` puts on one
    symmetric grid per output channel (step ``max|w| / top``), with each one's ``top``.

    * ONNX Runtime: 127, or 64 with the reduced range (`quantize_static`; depthwise weights keep
      127, `depthwise_weights`).
    * OpenVINO (NNCF): 127, on full-range CPUs only. Depthwise convolutions are not listed:
      NNCF gives their weights a range per channel *and* kernel column, a finer grid than one
      per channel. With NNCF's overflow fix (7-bit weights, for CPUs without VNNI) nothing is:
      its step is ``max|w| / 63.5``, so a channel's largest weight is never on its grid and NNCF
      rounds any weights it is given again (the levels move by half a step).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.Linear(8, 2))
        >>> rounding_tops(net, "onnxruntime", True), rounding_tops(net, "openvino", False), rounding_tops(net, "openvino", True)
        ({'0': 64, '1': 127, '3': 64}, {'0': 127, '3': 127}, {})
    """
    from torch import nn

    from autoshrink.techniques._rounding import depthwise

    found = {n: m for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if runtime == "openvino":
        return {} if reduce_range else {n: 127 for n, m in found.items() if not depthwise(m)}
    return {n: 64 if reduce_range and not depthwise(m) else 127 for n, m in found.items()}


def rounded(
    module: Any, context: Context, table: Mapping[str, int], bits: int, tops: Mapping[str, int]
) -> tuple[Any, dict[str, Any]]:
    """A copy of ``module`` whose layers that the static recipe makes int8 (every layer of
    ``tops`` not kept in float; in a 4-bit plan, the convolutions and the layers named 8) have
    their weights on the runtime's grid (`rounding_tops`), rounded by
    `autoshrink.techniques._rounding` from the calibration inputs, and a summary for the report.
    The rounding of every layer is computed once per model, weights and grid in
    ``context.cache`` and reused by each mixed-precision table (a sensitivity analysis builds
    one layer at a time)."""
    import copy

    from torch import nn

    from autoshrink.techniques._rounding import round_layers

    found = {n: m for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    key = f"{weights_fingerprint(module)}:{sorted(tops.items())}"
    calibration = stack_inputs(context.train_data, CALIBRATION_SAMPLES)
    rounding = remembered(context.cache, "roundings", key, lambda: round_layers(module, calibration, tops),
                          keep=KEPT_ROUNDINGS)  # fmt: skip
    floats = [n for n, b in table.items() if b == 32]
    int8 = [n for n, b in table.items() if b == 8]
    chosen = [n for n, m in found.items()
              if n in rounding.layers and not inside(n, floats) and (bits == 8 or isinstance(m, nn.Conv2d) or inside(n, int8))]  # fmt: skip
    twin = copy.deepcopy(module)
    rounding.apply(twin, chosen)
    ratios = sorted(rounding.layers[n].error / rounding.layers[n].nearest_error
                    for n in chosen if rounding.layers[n].nearest_error > 0)  # fmt: skip
    summary: dict[str, Any] = {"method": "gptq", "layers": len(chosen)}
    if ratios:
        summary["median_output_error_vs_nearest"] = round(ratios[len(ratios) // 2], 3)
    left = {n: why for n, why in rounding.left.items() if not inside(n, floats)}
    if left:
        summary["nearest"] = left
    return twin, summary


@register(QuantizeConfig)
def quantize(stage: Stage, config: QuantizeConfig, context: Context) -> Stage:
    if config.runtime == "torch":
        return stage
    quiet_onnxruntime()
    spec = InputSpec.of(context.example_input)
    exported_graph = exported(stage, context, spec)
    if config.bits != 32:
        unshare_weights(exported_graph)  # each layer quantized on its own, as it will be once trained
    scheme = choose_scheme(exported_graph) if config.scheme == "auto" else config.scheme
    weight_range = int8_weight_range(config.int8_range)
    reduce_range = weight_range == "reduced"
    table = _checked_table(exported_graph, config)
    mixed = {"layer_bits": table} if table else {}
    rounding: dict[str, Any] = {}
    ranges_from = None
    if config.bits != 32 and scheme == "static" and config.rounding == "gptq":
        grid = "openvino" if config.runtime == "openvino" and config.openvino_int8 == "nncf" else "onnxruntime"
        tops = rounding_tops(stage.module, grid, reduce_range)
        if tops:
            module, rounding = rounded(stage.module, context, table, config.bits, tops)
            ranges_from, exported_graph = exported_graph, exported(Stage(module=module), context, spec)
            unshare_weights(exported_graph)
    if config.runtime == "openvino":
        from autoshrink.techniques import _openvino

        errors: tuple[type[Exception], ...] = (RuntimeError, *onnx_errors())
        try:
            model, how = lower_openvino(exported_graph, config, scheme, context, spec, reduce_range=reduce_range,
                                        keep=list(table))  # fmt: skip
            payload = _openvino.pack(model, {})
            _check_openvino(payload, stage, context, spec)
        except errors as exc:
            raise CompressionError(f"{config.bits}-bit OpenVINO lowering failed: {exc}") from exc
        counts = _openvino.precision(model)
        if config.bits == 8 and counts["FakeQuantize"] == 0:
            raise CompressionError("8-bit OpenVINO quantization changed no layer of this model")
        report = TechniqueReport(
            technique="quantize",
            details={"bits": config.bits, "runtime": "openvino", "int8": how, "fake_quantize_ops": counts["FakeQuantize"]}
            | ({INT8_RANGE_KEY: weight_range, "rounding": rounding or {"method": "nearest"}} if config.bits != 32 else {})
            | mixed,
            skipped={
                name: "kept in fp32 by the plan (layer_bits)"
                for name, p in _openvino.layer_precision(model).items() if p == "fp32" and inside(module_path(name), table)
            },  # fmt: skip
        )
        return stage.with_report(report, openvino_bytes=payload)
    try:
        model = lower(exported_graph, config.bits, scheme, context, spec, reduce_range=reduce_range, layer_bits=table,
                      calibration=config.calibration, ranges_from=ranges_from)  # fmt: skip
        check_runs(model, stage.module, context.example_input, spec)
    except onnx_errors() as exc:
        raise CompressionError(f"{config.bits}-bit ONNX Runtime lowering failed: {exc}") from exc
    precision = layer_precision(model)
    counts = Counter(precision.values())
    if config.bits != 32 and counts.get("int8", 0) + counts.get("4-bit", 0) == 0:
        raise CompressionError(f"{config.bits}-bit quantization changed no layer of this model")
    skipped = {
        name: "kept in fp32 by the plan (layer_bits)" if inside(module_path(name), table) else "left in fp32 (no integer kernel used)"
        for name, p in precision.items() if p == "fp32"
    }  # fmt: skip
    changed = tuple(f"{name} ({p})" for name, p in precision.items() if p != "fp32")
    details: dict[str, Any] = {"bits": config.bits, "runtime": "onnxruntime", "layers_by_precision": dict(counts)}
    if config.bits != 32:
        details["scheme"] = scheme
        details[INT8_RANGE_KEY] = weight_range
        details["rounding"] = rounding or {"method": "nearest"}
        details |= mixed
    report = TechniqueReport(
        technique="quantize", changed=changed, skipped=skipped if config.bits != 32 else {}, details=details
    )
    return stage.with_report(report, onnx_bytes=model.SerializeToString())

