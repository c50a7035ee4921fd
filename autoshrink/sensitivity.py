"""Per-layer sensitivity: how much of the workload's score each layer loses when it alone is quantized.

For each weight layer of the model (the names of ``model.named_modules()``), a candidate is built
with only that layer quantized (`Plan.layer_bits` keeps every other one in float) and scored with
the workload's own metric on a fixed subset of its validation split; the loss is the float
model's score minus that score. The layers that lose most are the ones to keep in float
(mixed precision). Every candidate is built for real, in the runtime asked for.

Example:
    >>> from autoshrink.sensitivity import LayerSensitivity, table
    >>> print(table([LayerSensitivity("features.0", 0.91, 0.08), LayerSensitivity("head", 0.99, 0.0)]))
    | layer | score, quantized alone | loss |
    |---|---|---|
    | features.0 | 0.9100 | 0.0800 |
    | head | 0.9900 | 0.0000 |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from torch.utils.data import Subset

from autoshrink.artifact import Artifact
from autoshrink.data import as_dataset, dataset_size
from autoshrink.measuring.accuracy import score
from autoshrink.plan import Plan
from autoshrink.techniques._onnx import layers
from autoshrink.workloads.base import Workload


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer: the workload's score with only this layer quantized, and the loss against float."""

    layer: str
    score: float
    loss: float
    error: str = ""  # why this layer's candidate could not be built or scored (score and loss NaN)


def layer_sensitivity(
    wl: Workload, *, bits: int = 8, runtime: str = "onnxruntime", samples: int = 128, int8_range: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> list[LayerSensitivity]:  # fmt: skip
    """Every weight layer of ``wl.model``, most sensitive first (see the module's docstring).

    ``samples``: the first that many inputs of the validation split are scored, the same for
    every layer. One build per layer, so a model with 80 layers costs 80 quantizations.
    """
    from autoshrink.pipeline import compress
    from autoshrink.searching.trial import candidate_errors

    subset = Subset(as_dataset(wl.val), range(min(samples, dataset_size(wl.val))))

    def build(plan: Plan) -> Artifact:
        return compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input, task=wl.task,
                        output=wl.output, int8_range=int8_range)  # fmt: skip

    baseline = score(build(Plan()), subset, wl.evaluate)
    uniform = build(Plan(bits=bits, runtime=runtime))
    names = list(layers(onnx.load_from_string(uniform.payload))) if uniform.runtime == "onnxruntime" else _ov_layers(uniform)
    out = []
    for i, name in enumerate(names):
        others = tuple((other, 32) for other in names if other != name)
        try:
            quantized = score(build(Plan(bits=bits, runtime=runtime, layer_bits=others)), subset, wl.evaluate)
            row = LayerSensitivity(name, quantized, baseline - quantized)
        except candidate_errors() as exc:  # one layer that cannot be built alone does not end the analysis
            row = LayerSensitivity(name, math.nan, math.nan, f"{type(exc).__name__}: {exc}"[:300])
        out.append(row)
        if progress is not None:
            progress(f"[{i + 1}/{len(names)}] {name}: " + (row.error or f"{row.score:.4f} ({row.loss:+.4f})"))
    return sorted(out, key=lambda s: (math.isnan(s.loss), -s.loss))  # failed layers last


def _ov_layers(artifact: Artifact) -> list[str]:
    from autoshrink.techniques._onnx import module_path
    from autoshrink.techniques._openvino import layer_precision

    return list(dict.fromkeys(module_path(op) for op in layer_precision(artifact.openvino_model)))


def table(rows: list[LayerSensitivity]) -> str:
    """A markdown table of ``rows``, in their order."""
    lines = ["| layer | score, quantized alone | loss |", "|---|---|---|"]
    lines += [f"| {r.layer} | {r.score:.4f} | {r.loss:.4f} |" if not r.error else f"| {r.layer} | failed: {r.error} | |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)
