"""OpenVINO plumbing: ONNX to an OpenVINO model, int8 with NNCF, and the one-file artifact.

An OpenVINO model is two files (the IR's ``.xml`` graph and ``.bin`` weights); an autoshrink
artifact is one file, so they travel together in a zip (``.ovz``) with the artifact's
metadata. The graph's XML text is deflated (it is most of an int8 student's bytes otherwise);
the weights are stored as they are, like the tensors of an ``.onnx`` file, so that sizes compare
across runtimes. Its size is that file's bytes. Needs the ``openvino`` extra
(``pip install 'autoshrink[openvino]'``: ``openvino`` and ``nncf``).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.inputs import Inputs, InputSpec, batch_size, tensors

if TYPE_CHECKING:
    from autoshrink.sessions import SessionOptions
from autoshrink.techniques import CompressionError

SUFFIX = ".ovz"
META = "autoshrink.json"


def openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise CompressionError("the openvino runtime needs OpenVINO: pip install 'autoshrink[openvino]'") from None
    return ov


def from_onnx(onnx_bytes: bytes) -> Any:
    """The OpenVINO model of an ONNX model (fp32, or QDQ int8, which OpenVINO runs in int8), by
    ``ov.convert_model``, whose transformations fold the shape arithmetic that the ONNX frontend
    leaves in: read with ``Core.read_model`` instead, each bias reached its layer through a
    ``Reshape`` of a computed shape, NNCF found no layer with a bias, and its bias correction
    (fast or full) changed nothing (outputs bit-identical to it switched off, on the digits CNN and
    EfficientNet-Lite1)."""
    ov = openvino()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_bytes)
        return ov.convert_model(str(path))


def quantize_nncf(
    model: Any, calibration: Inputs, spec: InputSpec, *, transformer: bool, reduce_range: bool = True,
    ignored: Sequence[str] = (), options: Mapping[str, Any] | None = None,
) -> Any:  # fmt: skip
    """int8 by NNCF post-training quantization, calibrated on ``calibration``.

    Convolutional models get the full bias correction (``fast_bias_correction=False``, slower to
    run, once). Until 2026-12-07 it never ran on them (see `from_onnx`); running, it took
    pretrained EfficientNet-Lite1's int8 agreement with fp32 from 0.840 to 0.856 and Lite2's from
    0.926 to 0.910 (README: a wash), and left the digits CNN at 0.9944 test accuracy, as fast or
    no correction do. Transformers keep NNCF's fast one: the full correction took
    pretrained all-MiniLM-L6-v2 to 0.64 mean cosine with fp32, the fast one kept 0.9965
    (``results/int8-range.md``).
    ``reduce_range``: NNCF's overflow fix on every layer (7-bit weights, for CPUs without VNNI);
    otherwise none (the full 8 bits). ``ignored``: ONNX node names kept in float (NNCF's ignored
    scope; OpenVINO names an op after its ONNX node, with suffixes such as ``/WithoutBiases``).
    ``options``: keyword arguments of ``nncf.quantize`` that replace the ones chosen here (the
    calibration choices ``results/pretrained.md`` compares).
    """
    try:
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
    except ImportError:
        raise CompressionError("OpenVINO int8 needs NNCF: pip install 'autoshrink[openvino]'") from None
    rows = batch_size(calibration)
    items = [{n: t[i : i + 1].numpy() for n, t in zip(spec.names, tensors(calibration))} for i in range(rows)]
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    fix = OverflowFix.ENABLE if reduce_range else OverflowFix.DISABLE
    kwargs: dict[str, Any] = {
        "subset_size": rows, "advanced_parameters": AdvancedQuantizationParameters(overflow_fix=fix),
    }  # fmt: skip
    if ignored:
        patterns = [f"^{re.escape(name)}(/.*)?$" for name in ignored]
        kwargs["ignored_scope"] = nncf.IgnoredScope(patterns=patterns, validate=False)
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    else:
        kwargs["fast_bias_correction"] = False
    return nncf.quantize(model, nncf.Dataset(items), **(kwargs | dict(options or {})))


def pack(model: Any, meta: dict[str, Any]) -> bytes:
    """The model's IR (.xml and .bin) and ``meta`` in one zip."""
    ov = openvino()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, xml, compress_to_fp16=False)
        return _zip(xml.read_bytes(), xml.with_suffix(".bin").read_bytes(), meta)


def _zip(xml: bytes, weights: bytes, meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.xml", xml)
        archive.writestr("model.bin", weights, compress_type=zipfile.ZIP_STORED)
        archive.writestr(META, json.dumps(meta))
    return buffer.getvalue()


def unpack(payload: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """(xml, bin, metadata) of an ``.ovz`` payload."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        return archive.read("model.xml"), archive.read("model.bin"), json.loads(archive.read(META))


def with_meta(payload: bytes, meta: dict[str, Any]) -> bytes:
    """The same IR with new metadata."""
    xml, weights, _ = unpack(payload)
    return _zip(xml, weights, meta)


def compile_model(
    payload: bytes,
    threads: int,
    shapes: dict[str, tuple[int, ...]] | None = None,
    options: SessionOptions | None = None,
) -> Any:
    """Compiled with session ``options`` (`autoshrink.sessions.openvino_config`; by default one
    stream and the latency hint) on ``threads`` inference threads, for fixed input ``shapes``
    (by input name) when given."""
    from autoshrink.sessions import SessionOptions, openvino_config

    ov = openvino()
    xml, weights, _ = unpack(payload)
    core = ov.Core()
    model = core.read_model(model=xml, weights=weights)
    if shapes:
        model.reshape({name: ov.PartialShape(list(shape)) for name, shape in shapes.items()})
    return core.compile_model(model, "CPU", openvino_config(options or SessionOptions(), threads))


#: Ops between a compressed weight constant and the layer that multiplies by it.
_WEIGHT_PATH = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "FakeQuantize")


def layer_precision(model: Any) -> dict[str, str]:
    """For each convolution, matrix product and embedding lookup with a constant weight: ``"int8"``
    when the weight is stored as 8-bit integers (NNCF compresses the weights of the layers it
    quantizes), else ``"fp32"``; keyed by op name (`autoshrink.techniques._onnx.module_path`
    turns it into the layer's name)."""
    out = {}
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul", "Gather") or op.get_input_size() < 2:
            continue
        source = op.input_value(0 if kind == "Gather" else 1).get_node()
        while source.get_type_name() in _WEIGHT_PATH:
            source = source.input_value(0).get_node()
        if source.get_type_name() == "Constant":
            integer = source.get_element_type().get_type_name() in ("i8", "u8")
            out[op.get_friendly_name()] = "int8" if integer else "fp32"
    return out


def precision(model: Any) -> dict[str, int]:
    """Counts of int8 (FakeQuantize / Convert from int8) vs other ops, for the report."""
    ops = [op.get_type_name() for op in model.get_ops()]
    return {"FakeQuantize": ops.count("FakeQuantize"), "ops": len(ops)}
