"""Low-rank factorization: replace a layer by two thinner ones via truncated SVD.

* ``nn.Linear(i, o)`` -> ``Linear(i, r, bias=False)`` then ``Linear(r, o)``.
* 1x1 ``nn.Conv2d`` -> 1x1 conv to ``r`` channels then 1x1 conv.
* kxk ``nn.Conv2d`` -> ``(kh x 1)`` conv to ``r`` channels then ``(1 x kw)`` conv (the
  vertical/horizontal split, which ../shared/DESIGN.md reports faster on CPU than kxk -> 1x1;
  not re-measured here).

``fraction`` is the share of the factorizable weights that is kept, over the whole model; the
rank of each layer is chosen from how much of that layer's output it keeps. Each layer's
singular values say what share of its energy (``sum s_i^2``, what the layer does to inputs
spread evenly) every added rank keeps; ranks are handed out one at a time to whichever layer
gains the most kept energy per parameter, until the budget is spent. A layer whose spectrum
falls fast gets a small rank, one that needs all its directions a large one, instead of one
fraction for all (which factorized every attention and FFN projection of an encoder to the
same rank and lost most of its fidelity). A layer is only replaced when the pair is strictly
smaller; the output layer, grouped/depthwise convs and projections used functionally inside
``nn.MultiheadAttention`` are left whole and listed in the report.

``method="activation"`` makes both the ranks and the factors follow the layer's real inputs
instead of its weights alone (whitened SVD, as in SVD-LLM, Wang et al. 2024): with ``G = X^T X``
the Gram matrix of the inputs the layer receives on `CALIBRATION_SAMPLES` training inputs
(no labels) and ``G = L L^T``, the SVD of ``W L`` is truncated and ``L^-1`` folded back into the
first factor. That truncation minimizes the layer's output error on those inputs (the weight
SVD minimizes the weight error, which spends rank on directions the data never excites), and
its singular values say what share of the layer's *output* energy each rank keeps. It applies
to Linear layers and 1x1 convolutions with at most `MAX_WHITENED` inputs; other layers use the
weight SVD and the report says so.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from autoshrink.inputs import Inputs
from autoshrink.techniques import (
    CompressionError,
    Context,
    Stage,
    TechniqueReport,
    check_forward,
    count_parameters,
    output_layers,
    output_shape,
    register,
)

#: Training inputs whose layer activations an activation-aware factorization is fitted on.
CALIBRATION_SAMPLES = 256
#: Largest layer input an activation-aware factorization whitens (its Gram matrix is inputs^2).
MAX_WHITENED = 4096
#: Damping of the Gram matrix before its Cholesky factor, relative to its mean diagonal.
DAMP = 0.01
METHODS = ("weight", "activation")


@dataclass(frozen=True)
class LowRankConfig:
    """Keep ``fraction`` (0 < fraction < 1) of the factorizable layers' weights.

    ``layers``, a regular expression, restricts the technique to the layers whose module names it
    finds (``re.search``); ``None`` considers every layer. ``method``: ``"weight"`` (SVD of
    the weights) or ``"activation"`` (whitened by the layer's inputs on calibration data; see
    the module doc).
    """

    fraction: float
    layers: str | None = None
    method: str = "weight"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"LowRankConfig.fraction must be in (0, 1), got {self.fraction}")
        if self.method not in METHODS:
            raise ValueError(f"LowRankConfig.method must be one of {METHODS}, got {self.method!r}")
        check_pattern("LowRankConfig", self.layers)


def check_pattern(owner: str, pattern: str | None) -> None:
    """Raise `ValueError` naming ``owner`` when ``pattern`` is not a valid regular expression."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise ValueError(f"{owner}.layers must be a regular expression, got {pattern!r}: {exc}") from None


def _split(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``matrix ~= left @ right`` with ``left: rows x rank``, ``right: rank x cols``."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def _whitened_split(weight: torch.Tensor, chol: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight (out x in) ~= left @ right`` minimizing the output error on inputs whose Gram
    matrix is ``chol @ chol.T``: the SVD of ``weight @ chol``, truncated, ``chol^-1`` folded into ``right``."""
    u, s, vh = torch.linalg.svd(weight.detach().double() @ chol, full_matrices=False)
    root = s[:rank].sqrt()
    right = torch.linalg.solve_triangular(chol, root[:, None] * vh[:rank], upper=False, left=False)
    return (u[:, :rank] * root).float(), right.float()


def factorize_linear(layer: nn.Linear, rank: int, chol: torch.Tensor | None = None) -> nn.Sequential:
    """``layer`` as two thinner Linear layers of ``rank`` (whitened by ``chol`` when given)."""
    left, right = _split(layer.weight, rank) if chol is None else _whitened_split(layer.weight, chol, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    first.weight.data.copy_(right)
    second.weight.data.copy_(left)
    if layer.bias is not None and second.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def factorize_conv(layer: nn.Conv2d, rank: int, chol: torch.Tensor | None = None) -> nn.Sequential:
    """``layer`` as a (kh x 1) then a (1 x kw) convolution through ``rank`` channels (a 1x1
    convolution whitened by ``chol`` when given)."""
    out_c, in_c, kh, kw = layer.weight.shape
    sh, sw = cast("tuple[int, int]", layer.stride)
    ph, pw = cast("tuple[int, int]", layer.padding)  # string padding is skipped before this
    dh, dw = cast("tuple[int, int]", layer.dilation)
    # W[o, i, h, w] ~= sum_r V[r, i, h] * H[o, r, w]: an SVD of W viewed as (i, h) x (o, w).
    matrix = layer.weight.permute(1, 2, 0, 3).reshape(in_c * kh, out_c * kw)
    if chol is None:
        left, right = _split(matrix, rank)
    else:  # a 1x1 convolution: the matrix is the weight transposed
        w_left, w_right = _whitened_split(layer.weight.reshape(out_c, in_c), chol, rank)
        left, right = w_right.t(), w_left.t()
    first = nn.Conv2d(in_c, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False)
    second = nn.Conv2d(rank, out_c, (1, kw), (1, sw), (0, pw), (1, dw), bias=layer.bias is not None)
    first.weight.data.copy_(left.t().reshape(rank, in_c, kh, 1))
    second.weight.data.copy_(right.reshape(rank, out_c, kw).permute(1, 0, 2).unsqueeze(2))
    if layer.bias is not None and second.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _layer_matrix(module: nn.Module) -> tuple[torch.Tensor | None, str | None]:
    """The 2-D matrix a layer is factorized as, or the reason it cannot be."""
    if isinstance(module, nn.Linear):
        return module.weight, None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return None, "grouped/depthwise conv: already thin"
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return None, "conv padding mode not supported by the factorization"
        if type(module).forward is not nn.Conv2d.forward and tuple(module.kernel_size) != (1, 1):
            # e.g. TensorFlow-style "same" padding applied in its own forward: the plain pair would drop it
            return None, f"{type(module).__name__} computes its own forward (padding): kept whole"
        out_c, in_c, kh, kw = module.weight.shape
        return module.weight.permute(1, 2, 0, 3).reshape(in_c * kh, out_c * kw), None
    return None, "not a Linear or Conv2d"


@dataclass(frozen=True)
class _Layer:
    name: str
    rows: int
    cols: int
    energy: torch.Tensor  # share of the layer's energy per singular value, largest first
    cap: int | None = None  # a largest rank set by the caller

    @property
    def cost(self) -> int:
        return self.rows + self.cols

    @property
    def max_rank(self) -> int:
        """Largest rank whose pair is still strictly smaller than the layer (and within ``cap``)."""
        smaller = (self.rows * self.cols - 1) // self.cost
        return smaller if self.cap is None else min(smaller, self.cap)


def allocate_ranks(layers: list[_Layer], budget: float) -> dict[str, int]:
    """Ranks that keep the most energy per parameter within ``budget`` parameters.

    Every layer starts at rank 1; the next rank goes to the layer whose next singular value
    keeps the largest share of its energy per parameter it costs.

    Example:
        >>> fast = _Layer("fast", 8, 8, torch.tensor([0.9, 0.05, 0.03, 0.02]))
        >>> flat = _Layer("flat", 8, 8, torch.tensor([0.25, 0.25, 0.25, 0.25]))
        >>> allocate_ranks([fast, flat], budget=4 * 16)
        {'fast': 1, 'flat': 3}
    """
    ranks = {layer.name: 1 for layer in layers}
    spent = sum(layer.cost for layer in layers)
    heap = [(-float(layer.energy[1]) / layer.cost, i) for i, layer in enumerate(layers) if layer.max_rank > 1]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        layer = layers[i]
        if spent + layer.cost > budget:
            continue  # this layer's next rank does not fit; a cheaper one may
        ranks[layer.name] += 1
        spent += layer.cost
        r = ranks[layer.name]
        if r < layer.max_rank and r < len(layer.energy):
            heapq.heappush(heap, (-float(layer.energy[r]) / layer.cost, i))
    return ranks


def _energy(matrix: torch.Tensor) -> torch.Tensor:
    s = torch.linalg.svdvals(matrix.detach().double()).float()
    squared = s * s
    return squared / squared.sum().clamp(min=1e-30)


def _whitenable(module: nn.Module) -> str | None:
    """Why ``module`` gets the weight SVD under ``method="activation"`` (None: it is whitened)."""
    if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1):
        return "weight SVD: a kxk convolution's split has no activation-aware form here"
    inputs = module.weight.shape[1]
    if inputs > MAX_WHITENED:
        return f"weight SVD: {inputs} inputs, over the {MAX_WHITENED} an activation-aware split whitens"
    return None


def _cholesky(gram: torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor of ``gram`` damped by `DAMP` of its mean diagonal (more if needed)."""
    scale = float(gram.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    for damp in (DAMP, 10 * DAMP, 100 * DAMP):
        factor, info = torch.linalg.cholesky_ex(gram + damp * scale * eye)
        if int(info) == 0:
            return factor
    return torch.linalg.cholesky(gram + scale * eye)


def weight_layers(
    model: nn.Module, example_input: Inputs, pattern: str | None = None
) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The Linear and Conv2d layers a factorization may replace, and those it must leave whole.

    Left whole, with the reason: the output layer (a low-rank head caps the logits' rank) and
    projections used functionally inside ``nn.MultiheadAttention``. Layers whose names
    ``pattern`` does not find are neither returned nor reported.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> found, skipped = weight_layers(net, torch.randn(1, 8))
        >>> [name for name, _ in found], list(skipped)
        (['0'], ['2'])
    """
    attention_parts = {
        id(m)
        for a in model.modules()
        if isinstance(a, nn.MultiheadAttention)
        for m in a.modules()
    }
    heads = {id(m) for m in output_layers(model, example_input)}
    found: list[tuple[str, nn.Module]] = []
    skipped: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if pattern is not None and not re.search(pattern, name):
            continue
        if id(module) in heads:
            skipped[name] = "output layer keeps full rank (a low-rank head caps the logits' rank)"
        elif id(module) in attention_parts:
            skipped[name] = "projection inside nn.MultiheadAttention is used functionally"
        else:
            found.append((name, module))
    return found, skipped


@register(LowRankConfig)
def lowrank(stage: Stage, config: LowRankConfig, context: Context) -> Stage:
    model = stage.module.eval()
    expected = output_shape(model, context.example_input)
    before = count_parameters(model)
    changed: list[str] = []
    layers: list[_Layer] = []
    modules: dict[str, nn.Module] = {}
    candidates, skipped = weight_layers(model, context.example_input, config.layers)
    chols, weight_svd = _whitening(model, candidates, context) if config.method == "activation" else ({}, {})
    for name, module in candidates:
        matrix, reason = _layer_matrix(module)
        if matrix is None:
            skipped[name] = reason or "cannot be factorized"
            continue
        energy = _energy(module.weight.reshape(module.weight.shape[0], -1).double() @ chols[name] if name in chols else matrix)
        layer = _Layer(name, matrix.shape[0], matrix.shape[1], energy)
        if layer.max_rank < 1:
            skipped[name] = "too small: no rank makes the pair smaller"
            continue
        layers.append(layer)
        modules[name] = module
    ranks = allocate_ranks(layers, config.fraction * sum(layer.rows * layer.cols for layer in layers))
    for layer in layers:
        rank, module = ranks[layer.name], modules[layer.name]
        chol = chols.get(layer.name)
        if isinstance(module, nn.Linear):
            pair = factorize_linear(module, rank, chol)
        else:
            pair = factorize_conv(module, rank, chol)  # type: ignore[arg-type]
        _set_submodule(model, layer.name, pair)
        energy = "output energy on the calibration inputs" if chol is not None else "energy"
        changed.append(f"{layer.name} (rank {rank}, keeps {100 * float(layer.energy[:rank].sum()):.0f}% of its {energy})")
    details = {"fraction": config.fraction, **({"layers": config.layers} if config.layers is not None else {})}
    if config.method != "weight":
        details |= {"method": config.method, "weight_svd": weight_svd}
    return factorized(stage, model, context, expected, before=before, technique="lowrank",
                      what=f"low rank at {config.fraction:g}", changed=changed, skipped=skipped,
                      reasons=", ".join(sorted(set(skipped.values()))[:3]), details=details)  # fmt: skip


def _whitening(
    model: nn.Module, candidates: list[tuple[str, nn.Module]], context: Context
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The Cholesky factor of each whitenable layer's input Gram matrix on `CALIBRATION_SAMPLES`
    training inputs, and the layers left to the weight SVD with the reason."""
    weight_svd: dict[str, str] = {}
    names = []
    for name, module in candidates:
        if _layer_matrix(module)[0] is None:
            continue
        reason = _whitenable(module)
        if reason is None:
            names.append(name)
        else:
            weight_svd[name] = reason
    grams, missing = calibration_grams(model, names, context, "weight SVD")
    return {name: _cholesky(gram) for name, gram in grams.items()}, weight_svd | missing


def calibration_grams(
    model: nn.Module, names: list[str], context: Context, instead: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The Gram matrix of the inputs each layer ``names`` receives on `CALIBRATION_SAMPLES`
    training inputs, and the layers never called on them (each left to ``instead``, the reason)."""
    from autoshrink.data import stack_inputs
    from autoshrink.techniques._calibration import input_grams

    if not names:
        return {}, {}
    grams = input_grams(model, names, stack_inputs(context.train_data, CALIBRATION_SAMPLES), seed=context.seed)
    return grams, {name: f"{instead}: the layer was not called on the calibration inputs" for name in names if name not in grams}


def factorized(
    stage: Stage, model: nn.Module, context: Context, expected: torch.Size, *, before: int, technique: str, what: str,
    changed: list[str], skipped: dict[str, str], reasons: str, details: dict[str, Any],
) -> Stage:  # fmt: skip
    """The end of a factorization (low rank, tensor train): one that changed no layer is refused
    with the ``reasons`` layers were skipped for, the model must still run with the same output,
    and the report says what changed, what did not, and the parameters before and after."""
    if not changed:
        raise CompressionError(f"{what} changed no layer of this model ({len(skipped)} considered: {reasons or 'none'})")
    check_forward(model, context.example_input, expected, f"{technique} factorization")
    details = {**details, "params_before": before, "params_after": count_parameters(model)}
    report = TechniqueReport(technique=technique, changed=tuple(changed), skipped=skipped, details=details)
    return stage.with_report(report, module=model)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
    if isinstance(parent, nn.TransformerEncoderLayer):
        # Its fused inference fast path reads linear1.weight/linear2.weight directly; the
        # flag below makes it take the regular path, which calls the replaced modules.
        parent.activation_relu_or_gelu = False
