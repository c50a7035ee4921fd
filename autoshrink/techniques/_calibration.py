"""What layers see on calibration data: the Gram matrix of each layer's inputs, in one pass.

An activation-aware factorization (`autoshrink.techniques.lowrank` with ``method="activation"``)
keeps the directions of a layer's weight that its real inputs excite, not those with the most
weight energy: it needs ``X^T X`` over the inputs ``X`` the layer receives. For a Linear layer the
rows of ``X`` are its input vectors (every token of a sequence); for a 1x1 convolution the
channel vectors at every position (a random subset of positions beyond `ROWS_PER_BATCH` a batch).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> grams = input_grams(net, ["0", "2"], torch.randn(64, 4))
    >>> grams["0"].shape, grams["2"].shape
    (torch.Size([4, 4]), torch.Size([3, 3]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autoshrink.inputs import Inputs, batch_size, call_model, tree_index

#: Input vectors of one batch that enter a layer's Gram matrix (a random subset beyond it).
ROWS_PER_BATCH = 4096
BATCH = 32


def _rows(module: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A layer's input as rows of input vectors: channels last for a convolution."""
    rows = x.movedim(1, -1).reshape(-1, x.shape[1]) if isinstance(module, nn.Conv2d) else x.reshape(-1, x.shape[-1])
    if rows.shape[0] > ROWS_PER_BATCH:
        rows = rows[torch.randperm(rows.shape[0], generator=gen)[:ROWS_PER_BATCH]]
    return rows


def input_grams(model: nn.Module, names: Sequence[str], inputs: Inputs, seed: int = 0) -> dict[str, torch.Tensor]:
    """``X^T X`` (float64, divided by the rows counted) of the inputs each layer ``names`` of
    ``model`` receives while ``model`` runs on ``inputs`` (batches of `BATCH`)."""
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Any:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            rows = _rows(module, args[0].detach(), gen).double()
            sums[name] = sums.get(name, 0) + rows.T @ rows
            counts[name] = counts.get(name, 0) + rows.shape[0]

        return pre

    for name in names:
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook(name)))
    total = batch_size(inputs)
    try:
        with torch.no_grad():
            for start in range(0, total, BATCH):
                call_model(model, tree_index(inputs, torch.arange(start, min(start + BATCH, total))))
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / counts[name] for name in sums}
