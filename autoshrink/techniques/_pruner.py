"""torch-pruning's dependency graph as autoshrink drives it: which layers and parameters it
must leave whole (output layers, attention it has no head rule for, loose parameters with no
channel dimension, residual streams when asked), BERT-style attention heads, the pruner for a
`autoshrink.techniques.prune.PruneConfig` and the channel groups it may prune.

Example:
    >>> import torch
    >>> from autoshrink.techniques.prune import PruneConfig
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    >>> groups(net, torch.randn(1, 4), PruneConfig(0.5))  # the output layer keeps its classes
    [('0', 32, 8)]
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import torch
import torch_pruning as tp
from torch import nn

from autoshrink.techniques import output_layers
from autoshrink.techniques._importance import ActivationImportance


class PruneSettings(Protocol):
    """What the pruner reads of a `autoshrink.techniques.prune.PruneConfig` (this module and the
    allocation's take one without importing the technique that uses them)."""

    @property
    def ratio(self) -> float: ...
    @property
    def allocation(self) -> str: ...
    @property
    def importance(self) -> str: ...
    @property
    def keep_streams(self) -> bool: ...
    @property
    def reconstruct(self) -> bool: ...
    @property
    def round_to(self) -> int | None: ...

PRUNABLE = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.PReLU, nn.Embedding, nn.LSTM,
)  # fmt: skip


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
        if isinstance(module, PRUNABLE):
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


def update_head_counts(model: nn.Module) -> dict[str, str]:
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


def make_pruner(
    model: nn.Module, example: Any, config: PruneSettings, shares: dict[str, float] | None = None,
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
        width = num_heads.get(root) or out_width(root)
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


def groups(model: nn.Module, example: Any, config: PruneSettings) -> list[tuple[str, int, int]]:
    """The channel groups ``config`` may prune in ``model``: the name of each group's root layer,
    its width (channels, or heads for an attention block) and the step its kept width moves by
    (``round_to`` channels where the group is wider than that, one channel otherwise; one head)."""
    pruner, _ = make_pruner(model, example, config, {})
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
            width = out_width(root)
            out.append((names[id(root)], width, config.round_to if config.round_to and width > config.round_to else 1))
    return out


#: The most of one channel group that global allocation may remove.
MAX_RATIO = 0.9


def step_keeping_track(
    pruner: tp.pruner.MetaPruner, names: dict[int, str], means: dict[str, torch.Tensor] | None = None
) -> dict[str, list[int]]:
    """Prune every group of ``pruner`` and say, for each layer that lost output channels, which
    of its original channels it kept (by layer name). ``means``: the mean of each input channel
    of the Linear / ungrouped conv layers (by name); a layer that loses input channels then takes
    what they contributed on average into its bias (given one if it had none), so that only their
    fluctuation is lost (FLAP's bias compensation, without a refit; exact for Linear layers and
    1x1 convolutions, approximate at the padded border of a wider kernel)."""
    kept: dict[str, list[int]] = {}
    left = {n: m.double() for n, m in (means or {}).items()}  # each layer's inputs' means as they are now
    for group in pruner.step(interactive=True):
        shifts: list[tuple[nn.Module, torch.Tensor]] = []
        for dep, idxs in group:
            module = dep.target.module
            name = names.get(id(module))
            if name is None or not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            if pruner.DG.is_out_channel_pruning_fn(dep.handler):
                current = kept.setdefault(name, list(range(out_width(module))))
                gone = {int(i) for i in idxs}
                kept[name] = [c for i, c in enumerate(current) if i not in gone]
            elif name in left and left[name].numel() == module.weight.shape[1] and getattr(module, "groups", 1) == 1:
                gone_idx = torch.tensor(sorted(int(i) for i in idxs), dtype=torch.long)
                columns = module.weight.detach()[:, gone_idx].flatten(2).sum(-1) if module.weight.dim() > 2 else module.weight.detach()[:, gone_idx]
                shifts.append((module, columns.double() @ left[name][gone_idx]))
                keep = torch.ones(left[name].numel(), dtype=torch.bool)
                keep[gone_idx] = False
                left[name] = left[name][keep]
        group.prune()
        for module, shift in shifts:
            if shift.numel() != out_width(module):  # it lost outputs in the same group: not compensated
                continue
            with torch.no_grad():
                if module.bias is None:
                    module.bias = nn.Parameter(torch.zeros_like(shift, dtype=module.weight.dtype))
                module.bias.add_(shift.to(module.bias.dtype))
    return kept


def out_width(module: nn.Module) -> int:
    return int(module.out_channels if isinstance(module, nn.Conv2d) else getattr(module, "out_features", 0))
