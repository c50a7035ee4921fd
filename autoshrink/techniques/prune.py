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

import math
import warnings
from dataclasses import dataclass, replace
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
from autoshrink.techniques._allocate import Group, allocate, budget_of
from autoshrink.techniques._importance import ActivationImportance, input_moments

_PRUNABLE = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.PReLU, nn.Embedding, nn.LSTM,
)  # fmt: skip


#: How a plan's ratio is shared out across channel groups (see `PruneConfig.allocation`).
ALLOCATIONS = ("uniform", "global", "sensitivity")


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
    #: (torch-pruning's global ranking of normalised group magnitudes), no group past `MAX_RATIO`;
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
                skipped[label] = (
                    f"{type(module).__name__} parameter of shape {tuple(param.shape)}: no channel dimension to slice"
                )
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
    num_heads: dict[nn.Module, int] = {p: m.num_attention_heads for m in attention for p in (m.query, m.key, m.value)}
    writers: list[nn.Module] = [
        m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == hidden and id(m) not in qkv
    ]
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
                if isinstance(dep.target.module, nn.Module) and pruner.DG.is_out_channel_pruning_fn(dep.handler)
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


def _pruner(
    model: nn.Module, example: Any, config: PruneConfig, shares: dict[str, float] | None = None,
    moments: dict[str, torch.Tensor] | None = None,
) -> tuple[tp.pruner.MetaPruner, dict[str, str]]:  # fmt: skip
    """torch-pruning's pruner for ``model`` under ``config``, and the layers it leaves whole (by
    name, with the reason). ``shares``: the fraction of each group to remove, by the name of the
    group's root layer (`groups`); the groups not named lose nothing. ``moments``: the inputs'
    mean squares by layer, for ``config.importance == "activation"``."""
    ignored, unwrapped, unknown_params, skipped = _unprunable(model)
    heads = output_layers(model, example)
    names = {id(m): n for n, m in model.named_modules()}
    for head in heads:
        skipped.setdefault(names[id(head)], "output layer keeps its size")
    num_heads, residual_writers = _head_rules(model)
    ratio = config.ratio if shares is None else 0.0
    channel_shares: dict[nn.Module, float] = {}
    head_shares: dict[nn.Module, float] = {}
    for name, share in (shares or {}).items():
        root = model.get_submodule(name)
        width = num_heads.get(root) or _out_width(root)
        # torch-pruning keeps int(width * (1 - r)) channels and removes ceil(r * heads) heads:
        # half a unit below the count keeps both exact
        exact = (round(share * width) - 0.5) / width
        channel_shares[root] = exact
        if root in num_heads:
            attention = next(m for m in model.modules() if _is_head_attention(m) and root in (m.query, m.key, m.value))
            head_shares.update({p: exact for p in (attention.query, attention.key, attention.value)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about unwrapped parameters
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2)
            if moments is None
            else ActivationImportance(moments, names),
            pruning_ratio=ratio,
            pruning_ratio_dict=channel_shares,
            ignored_layers=ignored + heads + residual_writers,
            round_to=None if num_heads or shares is not None else config.round_to,
            unwrapped_parameters=list(unwrapped.items()),
            num_heads=num_heads,
            prune_num_heads=bool(num_heads),
            prune_head_dims=False,
            head_pruning_ratio=ratio if num_heads else 0.0,
            head_pruning_ratio_dict=head_shares,
            global_pruning=config.allocation == "global",
            max_pruning_ratio=MAX_RATIO,
        )
    pruner.ignored_layers.extend(_groups_touching(pruner, unknown_params))
    if config.keep_streams:
        streams = _stream_writers(pruner)
        pruner.ignored_layers.extend(streams)
        for module in streams:
            skipped.setdefault(names[id(module)], "writes a residual stream (outputs added to others'): kept whole")
    return pruner, skipped


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
        moments = _moments(model, context, centered=config.reconstruct) if config.importance == "activation" else None
        shares = None
        if config.allocation == "sensitivity" and config.ratio >= PROBE_SHARE:
            # no group may lose more than the ratio (`_shares_for`), so every group loses the ratio
            details["allocation"] = "uniform (no group may lose more than the ratio, so every group loses it)"
        elif config.allocation == "sensitivity":
            shares, details["sensitivity"], details["target_params"] = _sensitivity_shares(
                model, context, config, moments
            )
        pruner, skipped = _pruner(model, example, config, shares, moments)
        kept = _step_keeping_track(pruner, {id(m): n for n, m in model.named_modules()})
    except (RuntimeError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise CompressionError(f"structured pruning failed: {exc}") from exc
    head_changes = _update_head_counts(model)
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


def groups(model: nn.Module, example: Any, config: PruneConfig) -> list[tuple[str, int, int]]:
    """The channel groups ``config`` may prune in ``model``: the name of each group's root layer,
    its width (channels, or heads for an attention block) and the step its kept width moves by
    (``round_to`` channels where the group is wider than that, one channel otherwise; one head)."""
    pruner, _ = _pruner(model, example, config, {})
    names = {id(m): n for n, m in model.named_modules()}
    num_heads, _ = _head_rules(model)
    out = []
    for group in pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        root = group[0].dep.target.module
        attention = [
            d.target.module
            for d, _ in group
            if d.target.module in num_heads and pruner.DG.is_out_channel_pruning_fn(d.handler)
        ]
        if attention:
            out.append((names[id(attention[0])], num_heads[attention[0]], 1))
        elif id(root) in names and isinstance(root, (nn.Linear, nn.Conv2d)):
            width = _out_width(root)
            out.append((names[id(root)], width, config.round_to if config.round_to and width > config.round_to else 1))
    return out


#: The fraction of a group the sensitivity probe removes.
PROBE_SHARE = 0.5
#: Calibration inputs the probe's output error is measured on.
PROBE_SAMPLES = 32


def _moments(model: nn.Module, context: Context, *, centered: bool) -> dict[str, torch.Tensor]:
    """The variance (``centered``) or mean square of each layer's input channels on up to
    `RECONSTRUCT_SAMPLES` training inputs (`autoshrink.techniques._importance`), once per
    architecture and search."""
    from autoshrink.data import dataset_size, stack_inputs

    if dataset_size(context.train_data) == 0:
        raise CompressionError("activation importance needs calibration inputs (train data), and there are none")
    key = f"prune_moments:{count_parameters(model)}:{centered}"
    if key not in context.cache:
        context.cache[key] = input_moments(
            model, stack_inputs(context.train_data, RECONSTRUCT_SAMPLES), centered=centered
        )
    return context.cache[key]


def probe_key(model: nn.Module, config: PruneConfig) -> str:
    """What the probe's result is kept under in a search's cache (and its study): the
    architecture (its parameter count) and the settings that change which channels a group loses.
    The weights are not in it: a study refuses to resume with other weights
    (`autoshrink.searching.study.check_weights`)."""
    return f"prune_sensitivity:{count_parameters(model)}:{config.keep_streams}:{config.round_to}:{config.importance}"


def probe(context: Context, config: PruneConfig) -> list[Group]:
    """Every channel group of ``context.teacher`` pruned alone (`_probe`): what a search measures
    once, keeps in its study and hands to its candidates' cache under `probe_key`."""
    try:
        moments = _moments(context.teacher, context, centered=config.reconstruct) if config.importance == "activation" else None
        return _probe(context.teacher, context, config, moments)
    except (RuntimeError, ValueError, KeyError, IndexError, AssertionError) as exc:  # as `prune` wraps them
        if isinstance(exc, CompressionError):
            raise
        raise CompressionError(f"the pruning probe failed: {exc}") from exc


def _sensitivity_shares(
    model: nn.Module, context: Context, config: PruneConfig, moments: dict[str, torch.Tensor] | None,
) -> tuple[dict[str, float], dict[str, float], int]:  # fmt: skip
    """Each group's share under the plan's budget, the probe's error by group, and the budget:
    the parameters the model keeps when every group loses ``config.ratio`` (uniform pruning,
    counted on a copy), so that a plan's ratio means the same size whatever its allocation. The
    shares come from `autoshrink.techniques._allocate` (whose additive cost model counts a weight
    shared by two pruned groups twice), scaled by bisection until the pruned copy keeps
    that many parameters, within one step. The probe runs once per architecture and search
    (kept in ``context.cache``)."""
    key = probe_key(model, config)
    if key not in context.cache:
        try:
            context.cache[key] = _probe(model, context, config, moments)
        except CompressionError as exc:  # kept: the next candidate fails at once, not after a probe
            context.cache[key] = exc
    probed = context.cache[key]
    if isinstance(probed, CompressionError):
        raise probed
    if f"{key}:{config.ratio}" not in context.cache:  # a search draws ratios from a grid: once each
        context.cache[f"{key}:{config.ratio}"] = _shares_for(model, context.example_input, config, probed)
    shares, target = context.cache[f"{key}:{config.ratio}"]
    return shares, {g.name: round(g.error, 6) for g in probed}, target


def _shares_for(model: nn.Module, example: Any, config: PruneConfig, probed: list[Group]) -> tuple[dict[str, float], int]:
    """The shares of `_sensitivity_shares` for the groups ``probed``, and the target size."""
    target = _kept_parameters(model, example, replace(config, allocation="uniform"), None)
    # No group loses more than the probe measured or the uniform plan would take: the error model
    # is not trusted beyond what was seen (on digits at 0.7, a cap of 0.9 gave 0.969 test
    # accuracy against uniform's 0.992).
    cap = max(PROBE_SHARE, config.ratio)
    lo, hi = 0.0, 2 * budget_of(probed, cap)
    best: tuple[float, dict[str, float]] = (math.inf, {})
    for _ in range(BISECTIONS):
        budget = (lo + hi) / 2
        shares = allocate(probed, budget, cap)
        kept = _kept_parameters(model, example, config, shares)
        if abs(kept - target) < best[0]:
            best = (abs(kept - target), shares)
        lo, hi = (budget, hi) if kept > target else (lo, budget)
    return best[1], target


#: Rounds of the bisection that matches a sensitivity allocation's size to the uniform plan's.
BISECTIONS = 12


def _kept_parameters(model: nn.Module, example: Any, config: PruneConfig, shares: dict[str, float] | None) -> int:
    """The parameters a copy of ``model`` keeps once pruned as ``config`` (and ``shares``) say."""
    import copy

    trial = copy.deepcopy(model)
    pruner, _ = _pruner(trial, example, config, shares)
    pruner.step()
    return count_parameters(trial)


def _probe(
    model: nn.Module, context: Context, config: PruneConfig, moments: dict[str, torch.Tensor] | None
) -> list[Group]:
    """Every group of `groups` pruned alone by `PROBE_SHARE` on a copy of ``model``: the model's
    squared relative output error on `PROBE_SAMPLES` training inputs, and the parameters removed."""
    import copy

    from autoshrink.data import dataset_size, stack_inputs
    from autoshrink.inputs import call_model

    if dataset_size(context.train_data) == 0:
        raise CompressionError("sensitivity allocation needs calibration inputs (train data), and there are none")
    inputs = stack_inputs(context.train_data, PROBE_SAMPLES)
    with torch.no_grad():
        reference = call_model(model.eval(), inputs)
    found = []
    for name, width, step in groups(model, context.example_input, config):
        removed = max(step, round(PROBE_SHARE * width / step) * step)
        if removed >= width:
            continue  # too narrow to lose a step: left whole
        trial = copy.deepcopy(model)
        pruner, _ = _pruner(trial, context.example_input, config, {name: removed / width}, moments)
        before = count_parameters(trial)
        pruner.step()
        _update_head_counts(trial)
        with torch.no_grad():
            out = call_model(trial.eval(), inputs)
        error = float((out - reference).pow(2).sum() / reference.pow(2).sum().clamp_min(1e-30))
        found.append(Group(name, width, step, removed / width, error, before - count_parameters(trial)))
    return found


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
            if (
                id(module) in names
                and isinstance(module, (nn.Linear, nn.Conv2d))
                and pruner.DG.is_out_channel_pruning_fn(dep.handler)
            ):
                current = kept.setdefault(names[id(module)], list(range(_out_width(module))))
                gone = {int(i) for i in idxs}
                kept[names[id(module)]] = [c for i, c in enumerate(current) if i not in gone]
        group.prune()
    return kept


def _layer_ratios(model: nn.Module, kept: dict[str, list[int]], widths_before: dict[str, Any]) -> dict[str, float]:
    """The share of its output channels each pruned conv / Linear layer lost (the table the
    artifact's report carries: the allocation, layer by layer)."""
    return {
        n: round(1 - len(k) / widths_before[n][0], 4)
        for n, k in kept.items()
        if n in widths_before and widths_before[n][0]
    }


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
    shrunk = [
        n
        for n in dict.fromkeys(order)
        if _in_width(model.get_submodule(n)) < _in_width(context.teacher.get_submodule(n))
    ]
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
