"""ONNX plumbing shared by the lowering techniques: export, graph rewrites, precision census,
the errors ONNX and ONNX Runtime raise, and a check that a lowered model really runs."""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from autoshrink.inputs import Inputs, InputSpec, Positional, call_model, tensors
from autoshrink.techniques import CompressionError

OUTPUT_NAME = "output"
WEIGHT_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")


def export_onnx(module: nn.Module, example: Inputs, spec: InputSpec) -> onnx.ModelProto:
    """Export with the spec's input names and dynamic axes (batch; sequence for token inputs).

    The TorchScript exporter is tried first (it handles Hugging Face encoders), then dynamo.
    """
    wrapped = Positional(module.eval(), spec).eval()
    args = tuple(tensors(example))
    axes = spec.dynamic_axes() | {OUTPUT_NAME: {0: "batch"}}
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped, args, buffer,  # type: ignore[arg-type]
                dynamo=False, input_names=list(spec.names), output_names=[OUTPUT_NAME],
                dynamic_axes=axes, opset_version=17,
            )  # fmt: skip
        return onnx.load_from_string(buffer.getvalue())
    except (TypeError, RuntimeError, torch.onnx.errors.OnnxExporterError) as legacy_error:
        try:
            dims = tuple({a: torch.export.Dim.AUTO for a in spec.dynamic_axes()[n]} for n in spec.names)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    wrapped, args, dynamo=True, input_names=list(spec.names), output_names=[OUTPUT_NAME],
                    dynamic_shapes=dims, verbose=False,
                )  # fmt: skip
        except Exception as exc:  # the exporter raises many types; report both attempts
            raise CompressionError(
                f"ONNX export failed (TorchScript exporter: {legacy_error}; dynamo: {exc})"
            ) from exc
        return program.model_proto  # type: ignore[union-attr]


def opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def at_least_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """The model converted to ``version`` of the default domain if it is older (nodes rewritten
    to that opset's form: e.g. the Reduce ops' ``axes`` becomes an input at 18), else itself.

    A pass that needs a newer opset (4-bit tables need 21's int4 type) must not just raise the
    declared version: ONNX Runtime then refuses nodes still in the old form.
    """
    if opset(model) >= version:
        return model
    from onnx import version_converter

    converted = version_converter.convert_version(model, version)
    if converted.ir_version < 10 and version >= 21:
        converted.ir_version = 10  # int4 tensors need IR 10, as opset 21 does
    return converted


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` as ``MatMul(A, W^T) + b`` in place.

    ``MatMulNBits`` only replaces MatMul nodes, and a 2-D ``nn.Linear`` exports as Gemm.
    Returns the number of nodes rewritten.
    """
    inits = {t.name: t for t in model.graph.initializer}
    rewritten = 0
    new_nodes = []
    for node in list(model.graph.node):
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


def unshare_weights(model: onnx.ModelProto) -> int:
    """Give every ``Identity`` of a constant its own copy of it, in place; returns how many.

    The exporter stores identical weights once and feeds the other layers through ``Identity``
    (``nn.TransformerEncoder`` deep-copies its first layer, so before training every layer has
    the same weights); a quantizer sees only a constant as a weight, and would leave those
    layers in float.
    """
    inits = {t.name: t for t in model.graph.initializer}
    shared = [n for n in model.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        model.graph.initializer.append(copy)
    if shared:
        drop = {id(n) for n in shared}
        kept = [n for n in model.graph.node if id(n) not in drop]
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return len(shared)


def weight_layers(model: onnx.ModelProto) -> dict[str, int]:
    """How many layers with constant weights are convolutions, and how many are matrix
    products or embedding lookups."""
    constants = {t.name for t in model.graph.initializer}
    counts = {"conv": 0, "matmul": 0}
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1:2] and node.input[1] in constants:
            counts["conv"] += 1
        elif node.op_type in ("MatMul", "Gemm") and node.input[1:2] and node.input[1] in constants:
            counts["matmul"] += 1
        elif node.op_type == "Gather" and node.input[0] in constants:
            counts["matmul"] += 1
    return counts


def layer_precision(model: onnx.ModelProto) -> dict[str, str]:
    """For each weight-bearing node (and embedding lookup): ``"4-bit"``, ``"int8"`` or ``"fp32"``."""
    produced_by_dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    tables = {t.name: t.data_type for t in model.graph.initializer if len(t.dims) == 2}
    constants = {t.name for t in model.graph.initializer}
    integer = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    out = {}
    for node in model.graph.node:
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            out[node.name] = "4-bit"
        elif node.op_type in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"):
            out[node.name] = "int8"
        elif node.op_type in WEIGHT_OPS and len(node.input) > 1:
            if node.input[1] in produced_by_dq:
                out[node.name] = "int8"
            elif node.input[1] in constants:  # a product of two activations has no weight
                out[node.name] = "fp32"
        elif node.op_type == "Gather" and node.input[0] in tables:  # an embedding lookup
            out[node.name] = "int8" if tables[node.input[0]] in integer else "fp32"
        elif node.op_type == "Gather" and node.input[0] in produced_by_dq:
            out[node.name] = "int8"
    return out


#: A node's own name under its module's scopes: the exporter's (``Conv``, ``MatMul_2``), a rewrite's
#: (``Gemm_MatMul``), a quantizer's (``Conv_quant``) or a fusion's (``MatMulAddFusion``). A module
#: attribute such as Inception's ``Conv2d_1a_3x3`` is none of these.
_NODE_NAME = re.compile(r"^(Conv|ConvTranspose|Gemm|MatMul|Gather|Add)(_\d+)?(_MatMul|_Add)?(_quant)?$|^\w*Fusion(_\d+)?$")


def module_path(node_name: str) -> str:
    """The torch module an exported node came from, from the exporter's name scopes.

    The TorchScript exporter names a node ``/<scope>/.../<OpType>``: one scope per module called,
    a child of a ``Sequential`` named ``<attribute>.<index>``; the outer ``module`` is autoshrink's
    export wrapper (so the children of a model that is itself a ``Sequential`` are scoped
    ``module.<index>``, and named ``<index>`` as in ``named_modules()``). A name without scopes
    (the dynamo exporter's) is its own layer name.

    Example:
        >>> module_path("/module/layer4/layer4.0/downsample/downsample.0/Conv")
        'layer4.0.downsample.0'
        >>> module_path("/module/enc/layers.0/self_attn/MatMul"), module_path("node_Conv_3")
        ('enc.layers.0.self_attn', 'node_Conv_3')
        >>> module_path("/module/head/Gemm_MatMul/MatMulAddFusion")  # rewritten, then fused by ORT
        'head'
        >>> module_path("/module/Conv2d_1a_3x3/Conv")  # a module attribute that starts like an op
        'Conv2d_1a_3x3'
        >>> module_path("/module/module.2/Conv"), module_path("/module/module/module.0/Conv")  # a Sequential model; an attribute named module
        ('2', 'module.0')
    """
    scopes = node_name.strip("/").split("/")[:-1]
    while scopes and _NODE_NAME.match(scopes[-1]):  # a rewrite's or fusion's name under the op's
        scopes = scopes[:-1]
    path: list[str] = []
    for i, scope in enumerate(scopes):
        if i and scope.startswith(scopes[i - 1] + "."):
            path[-1] = scope  # a Sequential's child, named after the Sequential's attribute
        else:
            path.append(scope)
    if path and path[0] == "module":  # the export wrapper
        path = path[1:]
    elif path and path[0].startswith("module.") and scopes[0] == "module":  # a child of the wrapped Sequential
        path[0] = path[0].removeprefix("module.")
    return ".".join(path) or node_name


def layers(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Weight-bearing layers (as torch module paths, `module_path`) -> their node names, in graph order."""
    out: dict[str, list[str]] = {}
    for node in layer_precision(model):
        out.setdefault(module_path(node), []).append(node)
    return out


def inside(layer: str, names: Iterable[str]) -> bool:
    """Whether ``layer`` is one of the modules ``names`` or inside one (``fc.0`` is inside ``fc``:
    low rank replaces a layer by two)."""
    return any(layer == n or layer.startswith(n + ".") for n in names)


def nodes_of(model: onnx.ModelProto, names: Iterable[str]) -> list[str]:
    """The weight-bearing nodes of the layers ``names`` (module paths, and what is inside them)."""
    wanted = tuple(names)
    return [n for layer, nodes in layers(model).items() if inside(layer, wanted) for n in nodes]


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


def check_runs(model: onnx.ModelProto, module: nn.Module, example: Inputs, spec: InputSpec) -> None:
    """ONNX's checker must accept the model, and ONNX Runtime load it and run the example with
    the output shape and dtype of torch."""
    import onnxruntime as ort

    onnx.checker.check_model(model)

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(spec.names, tensors(example))}
    out = session.run(None, feed)[0]
    with torch.no_grad():
        expected = call_model(module, example)
    if tuple(out.shape) != tuple(expected.shape):
        raise CompressionError(f"the ONNX model returns shape {tuple(out.shape)}, torch {tuple(expected.shape)}")
    if str(out.dtype) != str(expected.dtype).removeprefix("torch."):
        raise CompressionError(f"the ONNX model returns {out.dtype}, torch {expected.dtype}")


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run a block in ``path``: ONNX Runtime's pre-processing leaves files in the current folder."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
