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

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

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

_PRUNABLE = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.PReLU, nn.Embedding, nn.LSTM,
)  # fmt: skip


@dataclass(frozen=True)
class PruneConfig:
    """Remove ``ratio`` of the channels of every prunable group (0 <= ratio <= 0.9); with
    ``reconstruct``, then refit every layer that lost inputs so that its output on the training
    data (up to `RECONSTRUCT_SAMPLES` inputs, no labels) matches the unpruned model's
    (`autoshrink.techniques._reconstruct`)."""

    ratio: float
    reconstruct: bool = True
    #: ``"uniform"``: every channel group loses ``ratio`` of its channels; ``"global"``: ``ratio``
    #: of all prunable channels go, the least important first across the whole model
    #: (torch-pruning's global ranking of normalised group magnitudes), no group past `MAX_RATIO`.
    allocation: str = "uniform"
    #: Keep every channel group that two or more layers write into (a residual stream: their
    #: outputs are added) whole, and prune only channels one layer produces (a block's
    #: expansion, a CNN's inner widths), as a transformer's hidden size always is (on a BERT-style
    #: encoder this also keeps the coupled q/k/v heads). Off by default: on the pretrained
    #: EfficientNet-Lite1 it did not rescue pruning without retraining (0.023 vs 0.000 top-1
    #: agreement at 0.2 with reconstruction, `results/retraining-free.md`), and on the tests'
    #: residual CNN at 0.5 it leaves twice the parameters (40,698 vs 19,866).
    keep_streams: bool = False
    # Kept channel counts are rounded to a multiple of this: integer kernels are much faster
    # on SIMD-friendly widths (one-off development measurement on digits, ORT int8: 40%
    # pruned to 77 channels ran 1.13 ms vs 0.42 ms for 50% with 64; 0.56 ms once rounded).
    round_to: int | None = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 0.9:
            raise ValueError(f"PruneConfig.ratio must be in [0, 0.9], got {self.ratio}")
        if self.allocation not in ("uniform", "global"):
            raise ValueError(f"PruneConfig.allocation must be uniform or global, got {self.allocation!r}")


def _unprunable(
    model: nn.Module,
) -> tuple[list[nn.Module], dict[nn.Parameter, int], set[int], dict[str, str]]:
    """What torch-pruning must be told about layers it has no rule for.

    Returns the modules to leave whole, the loose parameters it can slice along a channel
    dimension (a layer scale of shape (C, 1, 1), a class token of shape (1, 1, D)), the ids of
    the parameters it cannot slice, and the reasons by layer name.
    """
    ignored: list[nn.Module] = []
    unwrapped: dict[nn.Parameter, int] = {}
    params: set[int] = set()
    skipped: dict[str, str] = {}
    whole: set[int] = set()
    widths = _channel_widths(model)
    for name, module in model.named_modules():
        if id(module) in whole:
            continue
        reason = _attention_kept_whole(module)
        if reason is not None:
            ignored.append(module)
            whole.update(id(m) for m in module.modules())
            skipped[name] = reason
            continue
        if isinstance(module, _PRUNABLE):
            continue
        for pname, param in module.named_parameters(recurse=False):
            dim = _channel_dim(param, widths)
            label = f"{name}.{pname}" if name else pname
            if dim is None:
                params.add(id(param))
                skipped[label] = f"{type(module).__name__} parameter of shape {tuple(param.shape)}: no channel dimension to slice"
            else:
                unwrapped[param] = dim
    return ignored, unwrapped, params, skipped


def _is_head_attention(module: nn.Module) -> bool:
    """Hugging Face BERT-style self-attention, whose heads autoshrink knows how to remove."""
    return (
        all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value"))
        and isinstance(getattr(module, "num_attention_heads", None), int)
        and isinstance(getattr(module, "attention_head_size", None), int)
    )


def _attention_kept_whole(module: nn.Module) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        return "nn.MultiheadAttention: its head width is the model width, so heads are kept whole"
    if _is_head_attention(module):
        return None
    projections = sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in module.children())
    if "attention" in type(module).__name__.lower() and projections >= 2:
        return f"{type(module).__name__}: no head-pruning rule for this attention, kept whole"
    return None


def _head_rules(model: nn.Module) -> tuple[dict[nn.Module, int], list[nn.Module]]:
    """Head counts of the q/k/v projections, and the layers that write the residual stream
    (whose width, the hidden size, is kept)."""
    attention: list[Any] = [m for m in model.modules() if _is_head_attention(m)]
    if not attention:
        return {}, []
    hidden = attention[0].query.in_features
    qkv = {id(p) for m in attention for p in (m.query, m.key, m.value)}
    num_heads: dict[nn.Module, int] = {
        p: m.num_attention_heads for m in attention for p in (m.query, m.key, m.value)
    }
    writers: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == hidden and id(m) not in qkv]
    return num_heads, writers


def _update_head_counts(model: nn.Module) -> dict[str, str]:
    """After pruning: head counts read from the pruned weights; returns 'name: before -> after'."""
    changed = {}
    for name, m in model.named_modules():
        if _is_head_attention(m):
            heads = m.query.out_features // m.attention_head_size
            if heads != m.num_attention_heads:
                changed[name] = f"heads {m.num_attention_heads} -> {heads}"
            m.num_attention_heads = heads
            if hasattr(m, "all_head_size"):
                m.all_head_size = m.query.out_features
    return changed


def _channel_widths(model: nn.Module) -> set[int]:
    widths: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            widths.update((m.in_features, m.out_features))
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            widths.update((m.in_channels, m.out_channels))
    return widths


def _channel_dim(param: nn.Parameter, widths: set[int]) -> int | None:
    """The one dimension of a loose parameter that runs along channels, if there is one.

    Example:
        >>> _channel_dim(nn.Parameter(torch.ones(96, 1, 1)), {96, 384})
        0
        >>> _channel_dim(nn.Parameter(torch.ones(1, 197, 768)), {768, 3072})
        2
        >>> _channel_dim(nn.Parameter(torch.ones(5, 7)), {64}) is None
        True
    """
    candidates = [d for d, size in enumerate(param.shape) if size > 1 and size in widths]
    return candidates[-1] if len(candidates) == 1 else None


def _groups_touching(pruner: tp.pruner.MetaPruner, params: set[int]) -> list[nn.Module]:
    """Root layers of every channel group that reaches a parameter we must not slice."""
    roots: list[nn.Module] = []
    for group in pruner.DG.get_all_groups(root_module_types=pruner.root_module_types):
        if any(id(dep.target.module) in params for dep, _ in group):
            roots.extend(
                dep.target.module
                for dep, _ in group
                if isinstance(dep.target.module, nn.Module)
                and pruner.DG.is_out_channel_pruning_fn(dep.handler)
            )
    return roots


def _stream_writers(pruner: tp.pruner.MetaPruner) -> list[nn.Module]:
    """The layers of every channel group that two or more (non-depthwise) layers write into:
    their outputs are added, so the group is a residual stream."""
    found: dict[int, nn.Module] = {}
    for group in pruner.DG.get_all_groups(root_module_types=pruner.root_module_types):
        writers = {
            id(dep.target.module): dep.target.module
            for dep, _ in group
            if isinstance(dep.target.module, (nn.Linear, nn.Conv2d))
            and pruner.DG.is_out_channel_pruning_fn(dep.handler)
            and not (isinstance(dep.target.module, nn.Conv2d) and dep.target.module.groups > 1)
        }
        if len(writers) >= 2:
            found |= writers
    return list(found.values())


@register(PruneConfig)
def prune(stage: Stage, config: PruneConfig, context: Context) -> Stage:
    model = stage.module
    if config.ratio == 0:
        return stage
    example = context.example_input
    model.eval()
    expected = output_shape(model, example)
    before = count_parameters(model)
    ignored, unwrapped, unknown_params, skipped = _unprunable(model)
    heads = output_layers(model, example)
    names = {id(m): n for n, m in model.named_modules()}
    for head in heads:
        skipped.setdefault(names[id(head)], "output layer keeps its size")
    num_heads, residual_writers = _head_rules(model)
    widths_before = {n: _width(m) for n, m in model.named_modules() if _width(m) is not None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning warns about unwrapped parameters
            pruner = tp.pruner.MetaPruner(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=config.ratio,
                ignored_layers=ignored + heads + residual_writers,
                round_to=None if num_heads else config.round_to,
                unwrapped_parameters=list(unwrapped.items()),
                num_heads=num_heads,
                prune_num_heads=bool(num_heads),
                prune_head_dims=False,
                head_pruning_ratio=config.ratio if num_heads else 0.0,
                global_pruning=config.allocation == "global",
                max_pruning_ratio=MAX_RATIO,
            )
            pruner.ignored_layers.extend(_groups_touching(pruner, unknown_params))
            if config.keep_streams:
                streams = _stream_writers(pruner)
                pruner.ignored_layers.extend(streams)
                for module in streams:
                    skipped.setdefault(names[id(module)], "writes a residual stream (outputs added to others'): kept whole")
            kept = _step_keeping_track(pruner, {id(m): n for n, m in model.named_modules()})
    except (RuntimeError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise CompressionError(f"structured pruning failed: {exc}") from exc
    head_changes = _update_head_counts(model)
    check_forward(model, example, expected, "structured pruning")
    details: dict[str, Any] = {"allocation": config.allocation, "layer_ratios": _layer_ratios(model, kept, widths_before)}
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


#: The most of one channel group that global allocation may remove.
MAX_RATIO = 0.9
#: Training inputs the layers that lost inputs are refitted on.
RECONSTRUCT_SAMPLES = 256


def _step_keeping_track(pruner: tp.pruner.MetaPruner, names: dict[int, str]) -> dict[str, list[int]]:
    """Prune every group of ``pruner`` and say, for each layer that lost output channels, which
    of its original channels it kept (by layer name)."""
    kept: dict[str, list[int]] = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            module = dep.target.module
            if id(module) in names and isinstance(module, (nn.Linear, nn.Conv2d)) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                current = kept.setdefault(names[id(module)], list(range(_out_width(module))))
                gone = {int(i) for i in idxs}
                kept[names[id(module)]] = [c for i, c in enumerate(current) if i not in gone]
        group.prune()
    return kept


def _layer_ratios(model: nn.Module, kept: dict[str, list[int]], widths_before: dict[str, Any]) -> dict[str, float]:
    """The share of its output channels each pruned conv / Linear layer lost (the table the
    artifact's report carries: the allocation, layer by layer)."""
    return {n: round(1 - len(k) / widths_before[n][0], 4) for n, k in kept.items() if n in widths_before and widths_before[n][0]}


def _out_width(module: nn.Module) -> int:
    return int(module.out_channels if isinstance(module, nn.Conv2d) else getattr(module, "out_features", 0))


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
    shrunk = [n for n in dict.fromkeys(order) if _in_width(model.get_submodule(n)) < _in_width(context.teacher.get_submodule(n))]
    if not shrunk or dataset_size(context.train_data) == 0:  # nothing to refit, or nothing to refit it on
        return {}
    inputs = stack_inputs(context.train_data, RECONSTRUCT_SAMPLES)
    errors = reconstruct(model, context.teacher, shrunk, kept, inputs, seed=context.seed)
    return {n: [round(b, 4), round(a, 4)] for n, (b, a) in errors.items()}


def _in_width(module: nn.Module) -> int:
    return int(module.in_channels if isinstance(module, nn.Conv2d) else getattr(module, "in_features", 0))


def _width(module: nn.Module) -> tuple[int, ...] | None:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and isinstance(module, _PRUNABLE):
        return tuple(weight.shape)
    return None
