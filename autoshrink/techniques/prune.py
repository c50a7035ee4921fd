"""Structured pruning: remove whole channels/neurons with torch-pruning's dependency graph.

Layers really shrink (a pruned conv has fewer output channels, and every layer that consumes
them fewer inputs), so parameters, bytes and MACs fall. Channels are ranked by the L2 norm of
their whole dependency group. The output layer keeps its classes.

Transformers: in Hugging Face BERT-style self-attention (``query``/``key``/``value`` with
``num_attention_heads``) whole heads are removed, consistently across q, k, v and the output
projection, and the module's head count is updated; FFN neurons are pruned at the same ratio;
the hidden size (the residual stream) is kept. ``nn.MultiheadAttention`` ties its head width
to the model width, so its heads stay; so do attention blocks of any other kind (a class named
``*Attention*`` with projections inside), which are left whole and listed in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoshrink.techniques import (
    CompressionError,
    Context,
    Stage,
    TechniqueReport,
    check_forward,
    count_parameters,
    output_shape,
    register,
)
from autoshrink.techniques._allocate import PROBE_SHARE, sensitivity_shares
from autoshrink.techniques._importance import SAMPLES, cached_moments
from autoshrink.techniques._pruner import PRUNABLE, make_pruner, step_keeping_track, update_head_counts

#: How a plan's ratio is shared out across channel groups (see `PruneConfig.allocation`).
ALLOCATIONS = ("uniform", "global", "sensitivity")


@dataclass(frozen=True)
class PruneConfig:
    """Remove ``ratio`` of the channels of every prunable group (0 <= ratio <= 0.9); with
    ``reconstruct``, then refit every layer that lost inputs so that its output on the training
    data (up to `autoshrink.techniques._importance.SAMPLES` inputs, no labels) matches the unpruned model's
    (`autoshrink.techniques._reconstruct`)."""

    ratio: float
    reconstruct: bool = True
    #: ``"uniform"``: every channel group loses ``ratio`` of its channels; ``"global"``: ``ratio``
    #: of all prunable channels go, the least important first across the whole model
    #: (torch-pruning's global ranking of normalised group magnitudes), no group past `autoshrink.techniques._pruner.MAX_RATIO`;
    #: ``"sensitivity"``: as many parameters go as ``"uniform"`` would remove, from the groups whose
    #: removal changes the model's output least (each group probed alone once,
    #: `autoshrink.techniques._allocate`).
    allocation: str = "uniform"
    #: Keep every channel group that two or more layers write into (a residual stream: their
    #: outputs are added) whole, and prune only channels one layer produces (a block's
    #: expansion, a CNN's inner widths), as a transformer's hidden size always is (on a BERT-style
    #: encoder this also keeps the coupled q/k/v heads). Off by default: on the pretrained
    #: EfficientNet-Lite1 it did not rescue pruning without retraining (0.023 vs 0.000 top-1
    #: agreement at 0.2 with reconstruction, `results/retraining-free.md` as of commit c2e598e), and on the tests'
    #: residual CNN at 0.5 it leaves twice the parameters (40,698 vs 19,866).
    keep_streams: bool = False
    #: Which channels of a group go: ``"magnitude"`` (the smallest weight norms, torch-pruning's
    #: ranking) or ``"activation"`` (the least output energy on the training inputs,
    #: `autoshrink.techniques._importance`).
    importance: str = "magnitude"
    # Kept channel counts are rounded to a multiple of this: integer kernels are much faster
    # on SIMD-friendly widths (one-off development measurement on digits, ORT int8: 40%
    # pruned to 77 channels ran 1.13 ms vs 0.42 ms for 50% with 64; 0.56 ms once rounded).
    round_to: int | None = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 0.9:
            raise ValueError(f"PruneConfig.ratio must be in [0, 0.9], got {self.ratio}")
        if self.importance not in ("magnitude", "activation"):
            raise ValueError(f"PruneConfig.importance must be magnitude or activation, got {self.importance!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"PruneConfig.allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")


@register(PruneConfig)
def prune(stage: Stage, config: PruneConfig, context: Context) -> Stage:
    model = stage.module
    if config.ratio == 0:
        return stage
    example = context.example_input
    model.eval()
    expected = output_shape(model, example)
    before = count_parameters(model)
    widths_before = {n: _width(m) for n, m in model.named_modules() if _width(m) is not None}
    details: dict[str, Any] = {"allocation": config.allocation, "importance": config.importance}
    try:
        moments = cached_moments(model, context, centered=config.reconstruct) if config.importance == "activation" else None
        shares = None
        if config.allocation == "sensitivity" and config.ratio >= PROBE_SHARE:
            # no group may lose more than the ratio (`autoshrink.techniques._allocate`), so every group loses the ratio
            details["allocation"] = "uniform (no group may lose more than the ratio, so every group loses it)"
        elif config.allocation == "sensitivity":
            shares, details["sensitivity"], details["target_params"] = sensitivity_shares(model, context, config)
        pruner, skipped = make_pruner(model, example, config, shares, moments)
        kept = step_keeping_track(pruner, {id(m): n for n, m in model.named_modules()})
    except (RuntimeError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise CompressionError(f"structured pruning failed: {exc}") from exc
    head_changes = update_head_counts(model)
    check_forward(model, example, expected, "structured pruning")
    details["layer_ratios"] = _layer_ratios(model, kept, widths_before)
    if config.reconstruct:
        details["reconstruction"] = _reconstructed(model, context, kept)
        check_forward(model, example, expected, "reconstruction after pruning")
    after = count_parameters(model)
    if after == before:
        raise CompressionError(
            f"structured pruning at {config.ratio:g} removed nothing: every channel group of this "
            f"model reaches a layer it must leave whole ({', '.join(sorted(skipped)[:5]) or 'none listed'})"
        )
    changed = tuple(
        n for n, m in model.named_modules() if n in widths_before and _width(m) != widths_before[n]
    ) + tuple(f"{n} ({c})" for n, c in head_changes.items())
    report = TechniqueReport(
        technique="prune",
        changed=changed,
        skipped=skipped,
        details={"ratio": config.ratio, "params_before": before, "params_after": after, **details},
    )
    return stage.with_report(report, module=model)


def _layer_ratios(model: nn.Module, kept: dict[str, list[int]], widths_before: dict[str, Any]) -> dict[str, float]:
    """The share of its output channels each pruned conv / Linear layer lost (the table the
    artifact's report carries: the allocation, layer by layer)."""
    return {
        n: round(1 - len(k) / widths_before[n][0], 4)
        for n, k in kept.items()
        if n in widths_before and widths_before[n][0]
    }


def _reconstructed(model: nn.Module, context: Context, kept: dict[str, list[int]]) -> dict[str, list[float]]:
    """Refit, in forward order, every Linear / ungrouped conv layer whose inputs were pruned;
    each layer's relative output error before and after (rounded), for the report."""
    from autoshrink.data import dataset_size, stack_inputs
    from autoshrink.techniques._reconstruct import reconstruct, refittable

    order: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}
    hooks = [m.register_forward_pre_hook(lambda mod, _: order.append(names[id(mod)]))
             for m in model.modules() if refittable(m)]  # fmt: skip
    try:
        with torch.no_grad():
            output_shape(model, context.example_input)
    finally:
        for h in hooks:
            h.remove()
    shrunk = [
        n
        for n in dict.fromkeys(order)
        if _in_width(model.get_submodule(n)) < _in_width(context.teacher.get_submodule(n))
    ]
    if not shrunk or dataset_size(context.train_data) == 0:  # nothing to refit, or nothing to refit it on
        return {}
    inputs = stack_inputs(context.train_data, SAMPLES)
    errors = reconstruct(model, context.teacher, shrunk, kept, inputs, seed=context.seed)
    return {n: [round(b, 4), round(a, 4)] for n, (b, a) in errors.items()}


def _in_width(module: nn.Module) -> int:
    return int(module.in_channels if isinstance(module, nn.Conv2d) else getattr(module, "in_features", 0))


def _width(module: nn.Module) -> tuple[int, ...] | None:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and isinstance(module, PRUNABLE):
        return tuple(weight.shape)
    return None
