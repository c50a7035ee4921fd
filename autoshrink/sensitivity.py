"""Per-layer sensitivity: how much of the workload's score each layer loses when it alone is quantized.

For each weight layer of the model (the names of ``model.named_modules()``), a candidate is built
with only that layer quantized (`Plan.layer_bits` keeps every other one in float; ops without
weights, such as residual additions and pooling, are quantized in every candidate, so each row
includes their common share: about 0.0016 of output deviation on EfficientNet-Lite1) and scored with
the workload's own metric on a fixed subset of its validation split; the loss is the float
model's score minus that score. The same outputs also give the layer's ``deviation``: how far
the outputs moved from the float model's (mean squared distance relative to the float outputs'
squared norm). Layers are ranked by deviation, not loss: on a few hundred samples a loss moves
in steps of one sample (1/128 of the score) and the top layers' losses differ by one to three
samples, so the loss ranking is mostly sampling noise, while the deviation ranking names the
same layers on disjoint samples (``results/sensitivity-ranking.md``). The layers that move the
outputs most are the ones to keep in float (mixed precision). Every candidate is built for
real, in the runtime asked for.

Each row names its ``technique`` (``int8``, ``int4``), so that other per-layer analyses add rows
of their own to the same table. A search that keeps layers at a higher precision
(`autoshrink.space.SearchSpace.mixed`) measures this once, keeps it in its study (a resumed
search reuses it) and logs it on its MLflow parent run as ``sensitivity.json`` and
``sensitivity.png``.

Example:
    >>> from autoshrink.sensitivity import LayerSensitivity, table
    >>> print(table([LayerSensitivity("features.0", 0.91, 0.08, deviation=0.012, macs=2_000_000),
    ...              LayerSensitivity("head", 0.99, 0.0, deviation=0.0004, macs=12_800)]))
    | layer | score, quantized alone | loss | output deviation | MACs |
    |---|---|---|---|---|
    | features.0 | 0.9100 | 0.0800 | 0.01200 | 2M |
    | head | 0.9900 | 0.0000 | 0.00040 | 0.013M |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch

from autoshrink.artifact import Artifact
from autoshrink.data import DataLike, batches, split_batch, spread
from autoshrink.inputs import Inputs, call_model
from autoshrink.measuring.accuracy import score
from autoshrink.plan import Plan
from autoshrink.techniques._onnx import layers
from autoshrink.workloads.base import Workload


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer: the workload's score with only this layer quantized, the loss against float,
    and how far the outputs moved (`deviation`; NaN in rows measured before it was recorded)."""

    layer: str
    score: float
    loss: float
    error: str = ""  # why this layer's candidate could not be built or scored (score and loss NaN)
    technique: str = "int8"  # what was applied to the layer alone: int8, int4
    deviation: float = math.nan
    macs: int = 0  # the layer's multiply-accumulates per input (0: not counted, as in rows stored before)

    def to_dict(self) -> dict[str, object]:
        return {"technique": self.technique, "layer": self.layer, "score": self.score, "loss": self.loss,
                "deviation": self.deviation, "macs": self.macs, "error": self.error}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LayerSensitivity:
        return cls(str(data["layer"]), float(data["score"]), float(data["loss"]), str(data.get("error", "")),  # type: ignore[arg-type]
                   str(data.get("technique", "int8")), float(data.get("deviation", math.nan)),  # type: ignore[arg-type]
                   int(data.get("macs", 0)))  # type: ignore[call-overload]  # fmt: skip


def technique_of(bits: int) -> str:
    """The technique name of a ``bits``-bit row: ``int8`` or ``int4``."""
    return f"int{bits}"


def ranking(rows: list[LayerSensitivity]) -> list[str]:
    """The layers of ``rows`` that were scored, in their order: `layer_sensitivity` returns its
    rows most sensitive first (what mixed precision keeps), so a search that resumes with the
    rows it stored ranks its layers as it did when it measured them, even where this version's
    rule (`most_sensitive_first`) would order them otherwise.

    Example:
        >>> ranking([LayerSensitivity("b", 0.99, 0.0, deviation=0.02), LayerSensitivity("a", 0.99, 0.0, deviation=0.001),
        ...          LayerSensitivity("c", math.nan, math.nan, "ValueError: x")])
        ['b', 'a']
    """
    return [r.layer for r in rows if not r.error and not math.isnan(r.loss)]


def per_mac_ranking(rows: list[LayerSensitivity]) -> list[str]:
    """The scored layers of ``rows`` by output deviation per multiply-accumulate, highest first:
    what a layer kept in float buys for what it costs. The deviation counted is the part above the
    smallest of the rows (the share every row has from the ops without weights, see the module's
    docstring). On EfficientNet-Lite2 (AMD EPYC, AVX2 only) 20 layers chosen so kept 0.953
    agreement at 0.80 of uniform int8's speed-up where the deviation ranking gave 0.949 at 0.84
    with 16 and 0.973 at 0.76 with 20 (``results/amd-avx2/mixed-selection.md``): a different
    trade, not a better default, so the search draws it (`autoshrink.space.SearchSpace.mixed_by`).
    Layers without a MAC count (not a Conv or Linear module, such as an embedding table in a
    4-bit plan, or rows stored before MACs were counted) follow in `ranking`'s order.

    Example:
        >>> rows = [LayerSensitivity("big", 0.9, 0.1, deviation=0.012, macs=1000),
        ...         LayerSensitivity("small", 0.95, 0.05, deviation=0.006, macs=100),
        ...         LayerSensitivity("floor", 0.99, 0.0, deviation=0.002, macs=10),
        ...         LayerSensitivity("old", 0.97, 0.03, deviation=0.008)]
        >>> per_mac_ranking(rows)
        ['small', 'big', 'floor', 'old']
    """
    names = set(ranking(rows))
    scored = [r for r in rows if r.layer in names]
    counted = [r for r in scored if r.macs > 0 and not math.isnan(r.deviation)]
    floor = min((r.deviation for r in counted), default=0.0)
    first = sorted(counted, key=lambda r: -(r.deviation - floor) / r.macs)
    return [r.layer for r in first] + [r.layer for r in scored if r not in counted]


def layer_macs(model: torch.nn.Module, example: Inputs) -> dict[str, int]:
    """Multiply-accumulates per input of each Conv1d/Conv2d and Linear of ``model``, by module
    name, counted on ``example`` (outputs batch first).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 2))
        >>> layer_macs(net, torch.zeros(4, 3, 4, 4))
        {'0': 3456, '2': 256}
    """
    macs: dict[str, int] = {}

    def counter(name: str, per_output: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: object, out: torch.Tensor) -> None:
            macs[name] = out.numel() // max(1, out.shape[0]) * per_output
        return hook

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
            per = math.prod(module.kernel_size) * module.in_channels // module.groups
        elif isinstance(module, torch.nn.Linear):
            per = module.in_features
        else:
            continue
        hooks.append(module.register_forward_hook(counter(name, per)))
    training = model.training
    try:
        with torch.no_grad():
            call_model(model.eval(), example)  # in eval mode: counting must not move BatchNorm's statistics
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return macs


def most_sensitive_first(rows: list[LayerSensitivity]) -> list[LayerSensitivity]:
    """``rows`` ranked: by output deviation, equal deviations by loss, failed rows last (rows
    recorded before deviation was measured, whose deviation is NaN, rank by loss alone).

    Example:
        >>> rows = [LayerSensitivity("a", 0.95, 0.04, deviation=0.001), LayerSensitivity("b", 0.98, 0.01, deviation=0.02),
        ...         LayerSensitivity("c", math.nan, math.nan, "ValueError: x")]
        >>> [r.layer for r in most_sensitive_first(rows)]
        ['b', 'a', 'c']
        >>> [r.layer for r in most_sensitive_first([LayerSensitivity("a", 0.99, 0.0), LayerSensitivity("b", 0.9, 0.09)])]
        ['b', 'a']
    """
    return sorted(rows, key=_most_sensitive_first)


def _most_sensitive_first(row: LayerSensitivity) -> tuple[bool, float, float]:
    """The sort key of `most_sensitive_first`."""
    return (math.isnan(row.loss), -_or_zero(row.deviation), -row.loss)


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def outputs(artifact: Artifact, data: DataLike) -> torch.Tensor:
    """``artifact``'s outputs on ``data``, one flattened float row per input."""
    with torch.no_grad():
        return torch.cat([call_model(artifact, split_batch(b)[0]).flatten(1).float() for b in batches(data, 64)])


def deviation(out: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean over inputs of ``|out - reference|^2 / |reference|^2`` (rows: inputs).

    Example:
        >>> deviation(torch.tensor([[1.0, 0.0], [0.0, 2.2]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        0.005
    """
    per_input = (out - reference).pow(2).sum(1) / reference.pow(2).sum(1).clamp_min(1e-12)
    return round(float(per_input.mean()), 6)


def layer_sensitivity(
    wl: Workload, *, bits: int = 8, runtime: str = "onnxruntime", samples: int = 128, int8_range: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> list[LayerSensitivity]:  # fmt: skip
    """Every weight layer of ``wl.model``, most sensitive first (see the module's docstring).

    ``samples``: the first that many inputs of the validation split are scored, the same for
    every layer. One build per layer, so a model with 80 layers costs 80 quantizations; in ONNX
    Runtime the activation ranges are calibrated once (on the uniform build) and reused by every
    layer's build, which is what made the analysis affordable on a pretrained CNN
    (``results/pretrained.md``). OpenVINO (NNCF) calibrates each build again.
    """
    from autoshrink.pipeline import compress
    from autoshrink.searching.trial import candidate_errors

    subset = spread(wl.val, samples)
    shared: dict[str, object] = {}  # the calibrated ranges, reused by every build (quantize_static)

    def build(plan: Plan) -> Artifact:
        return compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input, task=wl.task,
                        output=wl.output, int8_range=int8_range, cache=shared)  # fmt: skip

    floated = build(Plan())
    baseline, reference = score(floated, subset, wl.evaluate), outputs(floated, subset)
    uniform = build(Plan(bits=bits, runtime=runtime))
    macs = layer_macs(wl.model, wl.example_input)
    names = list(layers(onnx.load_from_string(uniform.payload))) if uniform.runtime == "onnxruntime" else _ov_layers(uniform)
    if bits == 4:
        names = _four_bit_layers(uniform)
    out = []
    for i, name in enumerate(names):
        others = tuple((other, 32) for other in names if other != name)
        try:
            candidate = build(Plan(bits=bits, runtime=runtime, layer_bits=others))
            quantized = score(candidate, subset, wl.evaluate)
            moved = deviation(outputs(candidate, subset), reference)
            row = LayerSensitivity(name, quantized, baseline - quantized, technique=technique_of(bits), deviation=moved,
                                   macs=macs.get(name, 0))
        except candidate_errors() as exc:  # one layer that cannot be built alone does not end the analysis
            row = LayerSensitivity(name, math.nan, math.nan, f"{type(exc).__name__}: {exc}"[:300], technique_of(bits))
        out.append(row)
        if progress is not None:
            progress(f"[{i + 1}/{len(names)}] {name}: "
                     + (row.error or f"{row.score:.4f} ({row.loss:+.4f}, output deviation {row.deviation:.3g})"))
    return most_sensitive_first(out)


def _four_bit_layers(artifact: Artifact) -> list[str]:
    from autoshrink.techniques._onnx import layer_precision, module_path

    precision = layer_precision(onnx.load_from_string(artifact.payload))
    return list(dict.fromkeys(module_path(node) for node, p in precision.items() if p == "4-bit"))


def _ov_layers(artifact: Artifact) -> list[str]:
    from autoshrink.techniques._onnx import module_path
    from autoshrink.techniques._openvino import layer_precision

    return list(dict.fromkeys(module_path(op) for op in layer_precision(artifact.openvino_model)))


def chart(rows: list[LayerSensitivity], path: str, top: int = 30) -> None:
    """A bar chart of the ``top`` most sensitive layers of each technique, saved as a PNG at
    ``path``: the loss of the score and, below it where measured, the output deviation (which
    still shows the layers that move the outputs when no score changes)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: draw to a file
    import matplotlib.pyplot as plt

    techniques = list(dict.fromkeys(r.technique for r in rows))
    shown = {t: [r for r in rows if r.technique == t and not r.error][:top] for t in techniques}
    panels = [("loss", "loss of the score, this layer alone quantized", "float score - score with the layer quantized")]
    if any(not math.isnan(r.deviation) for r in rows):
        panels.append(("deviation", "output deviation, this layer alone quantized", "|out - float out|^2 / |float out|^2"))
    height = max(len(v) for v in shown.values()) if shown else 1
    columns = max(1, len(techniques))
    fig, axes = plt.subplots(len(panels), columns, figsize=(6 * columns, len(panels) * (1 + 0.28 * height)),
                             squeeze=False)  # fmt: skip
    for row, (field, title, label) in enumerate(panels):
        for ax, technique in zip(axes[row], techniques):
            picked = sorted(shown[technique], key=lambda r: _or_zero(getattr(r, field)))  # largest at the top
            ax.barh([r.layer for r in picked], [_or_zero(getattr(r, field)) for r in picked], color="#c0392b")
            ax.set_title(f"{technique}: {title}", fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_xlabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[LayerSensitivity]) -> str:
    """A markdown table of ``rows``, in their order."""
    lines = ["| layer | score, quantized alone | loss | output deviation | MACs |", "|---|---|---|---|---|"]
    lines += [f"| {r.layer} | {r.score:.4f} | {r.loss:.4f} | {r.deviation:.5f} | {r.macs / 1e6:.2g}M |" if not r.error
              else f"| {r.layer} | failed: {r.error} | | | |" for r in rows]  # fmt: skip
    return "\n".join(lines)
