"""Low-rank factorization: replace a layer by two thinner ones via truncated SVD.

* ``nn.Linear(i, o)`` -> ``Linear(i, r, bias=False)`` then ``Linear(r, o)``.
* 1x1 ``nn.Conv2d`` -> 1x1 conv to ``r`` channels then 1x1 conv.
* kxk ``nn.Conv2d`` -> ``(kh x 1)`` conv to ``r`` channels then ``(1 x kw)`` conv (the
  vertical/horizontal split, which ../shared/DESIGN.md reports faster on CPU than kxk -> 1x1;
  not re-measured here).

``fraction`` is the share of the layer's weights the pair keeps: the rank is the largest
``r`` with ``r * (rows + cols) <= fraction * rows * cols``. A layer is only replaced when the
pair is strictly smaller; the output layer, grouped/depthwise convs and projections used
functionally inside attention are left whole and listed in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from autoshrink.techniques import (
    CompressionError,
    Context,
    Stage,
    TechniqueReport,
    check_forward,
    count_parameters,
    output_layers,
    register,
)


@dataclass(frozen=True)
class LowRankConfig:
    """Keep ``fraction`` (0 < fraction < 1) of each factorizable layer's weights."""

    fraction: float

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"LowRankConfig.fraction must be in (0, 1), got {self.fraction}")


def rank_for(rows: int, cols: int, fraction: float) -> int:
    """Largest rank whose two factors hold at most ``fraction`` of a ``rows x cols`` matrix.

    Example:
        >>> rank_for(64, 64, 0.5)
        16
    """
    return min(rows, cols, math.floor(fraction * rows * cols / (rows + cols)))


def _split(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``matrix ~= left @ right`` with ``left: rows x rank``, ``right: rank x cols``."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    left, right = _split(layer.weight, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    first.weight.data.copy_(right)
    second.weight.data.copy_(left)
    if layer.bias is not None and second.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def factorize_conv(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    out_c, in_c, kh, kw = layer.weight.shape
    sh, sw = cast("tuple[int, int]", layer.stride)
    ph, pw = cast("tuple[int, int]", layer.padding)  # string padding is skipped before this
    dh, dw = cast("tuple[int, int]", layer.dilation)
    # W[o, i, h, w] ~= sum_r V[r, i, h] * H[o, r, w]: an SVD of W viewed as (i, h) x (o, w).
    matrix = layer.weight.permute(1, 2, 0, 3).reshape(in_c * kh, out_c * kw)
    left, right = _split(matrix, rank)
    first = nn.Conv2d(in_c, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False)
    second = nn.Conv2d(rank, out_c, (1, kw), (1, sw), (0, pw), (1, dw), bias=layer.bias is not None)
    first.weight.data.copy_(left.t().reshape(rank, in_c, kh, 1))
    second.weight.data.copy_(right.reshape(rank, out_c, kw).permute(1, 0, 2).unsqueeze(2))
    if layer.bias is not None and second.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _plan_layer(module: nn.Module, fraction: float) -> tuple[int, int, str | None]:
    """(rank, params of the pair, reason it is skipped or None)."""
    if isinstance(module, nn.Linear):
        rows, cols = module.out_features, module.in_features
    elif isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return 0, 0, "grouped/depthwise conv: already thin"
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return 0, 0, "conv padding mode not supported by the factorization"
        out_c, in_c, kh, kw = module.weight.shape
        rows, cols = in_c * kh, out_c * kw
    else:
        return 0, 0, "not a Linear or Conv2d"
    rank = rank_for(rows, cols, fraction)
    pair = rank * (rows + cols)
    if rank < 1 or pair >= module.weight.numel():
        return 0, 0, f"too small to gain at fraction {fraction:g}"
    return rank, pair, None


@register(LowRankConfig)
def lowrank(stage: Stage, config: LowRankConfig, context: Context) -> Stage:
    model = stage.module.eval()
    with torch.no_grad():
        expected = model(context.example_input).shape
    before = count_parameters(model)
    changed: list[str] = []
    skipped: dict[str, str] = {}
    attention_parts = {
        id(m)
        for a in model.modules()
        if isinstance(a, nn.MultiheadAttention)
        for m in a.modules()
    }
    heads = {id(m) for m in output_layers(model, context.example_input)}
    for name, module in list(model.named_modules()):
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if id(module) in heads:
            skipped[name] = "output layer keeps full rank (a low-rank head caps the logits' rank)"
            continue
        if id(module) in attention_parts:
            skipped[name] = "projection inside nn.MultiheadAttention is used functionally"
            continue
        rank, _, reason = _plan_layer(module, config.fraction)
        if reason is not None:
            skipped[name] = reason
            continue
        pair = factorize_linear(module, rank) if isinstance(module, nn.Linear) else factorize_conv(module, rank)
        _set_submodule(model, name, pair)
        changed.append(f"{name} (rank {rank})")
    if not changed:
        raise CompressionError(
            f"low rank at {config.fraction:g} changed no layer of this model "
            f"({len(skipped)} considered: {', '.join(sorted(set(skipped.values()))[:3]) or 'none'})"
        )
    check_forward(model, context.example_input, expected, "low-rank factorization")
    report = TechniqueReport(
        technique="lowrank",
        changed=tuple(changed),
        skipped=skipped,
        details={
            "fraction": config.fraction,
            "params_before": before,
            "params_after": count_parameters(model),
        },
    )
    return stage.with_report(report, module=model)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
    if isinstance(parent, nn.TransformerEncoderLayer):
        # Its fused inference fast path reads linear1.weight/linear2.weight directly; the
        # flag below makes it take the regular path, which calls the replaced modules.
        parent.activation_relu_or_gelu = False
