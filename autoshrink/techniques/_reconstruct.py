"""Least-squares reconstruction of layers after structured pruning, without labels.

After channels are removed, a layer that consumed them (a convolution or Linear layer with
fewer inputs now) computes something else. Its weights and bias are refitted so that, on a
few hundred calibration inputs, its output matches the unpruned model's output of the same
layer (only the output channels it kept), by ridge-regularised least squares on the normal
equations (He et al., ICCV 2017, channel pruning with reconstruction, done here in closed form
for all the remaining weights). Layers are refitted in forward order, each on the inputs the
already-refitted student gives it, so errors do not pile up. Grouped and depthwise
convolutions (no mixing across channels) are left as they are.

Example:
    >>> import torch
    >>> teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> student = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    >>> with torch.no_grad():  # the student: the teacher with its last 4 hidden units pruned
    ...     _ = student[0].weight.copy_(teacher[0].weight[:12]), student[0].bias.copy_(teacher[0].bias[:12])
    ...     _ = student[2].weight.copy_(teacher[2].weight[:, :12]), student[2].bias.copy_(teacher[2].bias)
    >>> errors = reconstruct(student, teacher, ["2"], {}, torch.randn(256, 8))
    >>> errors["2"][1] < errors["2"][0]
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.inputs import Inputs, batch_size, call_model, tree_index

#: Rows (samples x positions) of one batch that enter the normal equations; a random subset
#: of a convolution's output positions beyond it.
ROWS_PER_BATCH = 2048
#: Rows per unknown (weights of one output channel) after which no more batches are read: a
#: large input gives many positions per image, so a few images are enough.
ROWS_PER_UNKNOWN = 20
BATCH = 32
#: Ridge term, relative to the mean diagonal of the inputs' Gram matrix.
RIDGE = 1e-4


def refittable(module: nn.Module) -> bool:
    """A layer reconstruction can refit: a Linear layer or an ungrouped 2-D convolution. A
    subclass with its own ``forward`` (a convolution that pads itself first) is refitted as its
    parent computes; the refit is checked on the layer's real output and undone if it is worse."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _rows(module: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's input and target output as matching rows: (rows, inputs) and (rows, outputs)."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (N, d, L)
        x2 = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        y2 = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    else:
        x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if x2.shape[0] > ROWS_PER_BATCH:
        keep = torch.randperm(x2.shape[0], generator=gen)[:ROWS_PER_BATCH]
        x2, y2 = x2[keep], y2[keep]
    return x2, y2


class _Reached(Exception):
    """Raised by a hook once the layer's tensor is captured: the rest of the forward is not needed."""


def _captured(model: nn.Module, name: str, inputs: Inputs, *, output: bool) -> torch.Tensor:
    """The input (or output) of ``model``'s layer ``name`` when ``model`` runs on ``inputs``; the
    forward stops there (the layers after it are not run)."""
    module = model.get_submodule(name)
    seen: list[torch.Tensor] = []

    def pre(_: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0].detach())
        raise _Reached

    def post(_: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        seen.append(out.detach())
        raise _Reached

    handle = module.register_forward_hook(post) if output else module.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            call_model(model, inputs)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"layer {name!r} was not called by the model's forward")
    return seen[0]


def _refit(module: nn.Module, gram: torch.Tensor, cross: torch.Tensor, check: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Set ``module``'s weights to the ridge solution of the normal equations, if that lowers its
    real output error on ``check`` (an input batch and the teacher's output for it); the
    relative output error there before and after."""
    x, y = check

    def error() -> float:  # ``y`` holds the teacher's output channels the student kept
        with torch.no_grad():
            out = module(x)
        return float((out - y).norm() / y.norm().clamp_min(1e-30))

    before = error()
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    ridge = RIDGE * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=gram.dtype)
    solution = torch.linalg.solve(gram + ridge, cross).T  # (out, d)
    cols = module.weight[0].numel()
    with torch.no_grad():
        module.weight.copy_(solution[:, :cols].reshape(module.weight.shape).to(module.weight.dtype))
        if module.bias is not None:
            module.bias.copy_(solution[:, cols].to(module.bias.dtype))
    after = error()
    if not after < before:  # the refit did not help (or the layer computes otherwise): undone
        module.load_state_dict(saved)
        return before, before
    return before, after


def reconstruct(
    student: nn.Module,
    teacher: nn.Module,
    names: Sequence[str],
    kept_outputs: dict[str, list[int]],
    inputs: Inputs,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Refit each layer ``names`` of ``student`` (in forward order) so that its output on
    ``inputs`` matches the same-named layer of ``teacher``, restricted to the output channels
    the student kept (``kept_outputs[name]``, all of them if absent).

    Returns each layer's relative output error (``||student - teacher|| / ||teacher||`` on the
    last calibration batch, its real output, held out of the fit when there are two batches or
    more) before and after; a layer is changed only where that held-out error falls, so a layer
    with more unknowns than calibration rows (a classifier after pooling) is not overfitted.
    """
    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, tuple[float, float]] = {}
    total = batch_size(inputs)
    for name in names:
        module = student.get_submodule(name)
        gram: torch.Tensor | None = None
        cross: torch.Tensor | None = None
        check: tuple[torch.Tensor, torch.Tensor] | None = None
        kept = torch.tensor(kept_outputs[name]) if name in kept_outputs else None
        rows = 0
        starts = list(range(0, total, BATCH))
        held_out = starts.pop() if len(starts) > 1 else None
        for start in ([held_out] if held_out is not None else []) + starts:
            if gram is not None and rows >= ROWS_PER_UNKNOWN * gram.shape[0]:
                break  # the normal equations are well determined already
            part = tree_index(inputs, torch.arange(start, min(start + BATCH, total)))
            x = _captured(student, name, part, output=False)
            y = _captured(teacher, name, part, output=True)
            if kept is not None:  # channels are dim 1 of a convolution's output, the last of a Linear's
                y = y.index_select(1 if isinstance(module, nn.Conv2d) else -1, kept)
            if check is None:
                check = (x, y)
                if held_out is not None:
                    continue  # the check batch is not fitted on
            x2, y2 = _rows(module, x, y, gen)
            if module.bias is not None:
                x2 = torch.cat([x2, torch.ones(x2.shape[0], 1, dtype=x2.dtype)], 1)
            # float32 products of one batch, summed in float64 over the batches
            rows += x2.shape[0]
            g, c = (x2.T @ x2).double(), (x2.T @ y2).double()
            gram, cross = (g, c) if gram is None else (gram + g, cross + c)
        assert gram is not None and cross is not None and check is not None
        errors[name] = _refit(module, gram, cross, check)
    return errors
