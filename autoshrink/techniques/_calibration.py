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

from collections.abc import Callable, Sequence
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


def _each_input(
    model: nn.Module, names: Sequence[str], inputs: Inputs, seed: int, take: Callable[[str, torch.Tensor], None]
) -> None:
    """Run ``model`` on ``inputs`` (batches of `BATCH`) and hand every batch's input rows of each
    layer ``names`` to ``take(name, rows)`` (float64)."""
    gen = torch.Generator().manual_seed(seed)

    def hook(name: str) -> Any:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            take(name, _rows(module, args[0].detach(), gen).double())

        return pre

    handles = [model.get_submodule(name).register_forward_pre_hook(hook(name)) for name in names]
    total = batch_size(inputs)
    try:
        with torch.no_grad():
            for start in range(0, total, BATCH):
                call_model(model, tree_index(inputs, torch.arange(start, min(start + BATCH, total))))
    finally:
        for handle in handles:
            handle.remove()


def input_grams(model: nn.Module, names: Sequence[str], inputs: Inputs, seed: int = 0) -> dict[str, torch.Tensor]:
    """``X^T X`` (float64, divided by the rows counted) of the inputs each layer ``names`` of
    ``model`` receives while ``model`` runs on ``inputs`` (batches of `BATCH`)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def take(name: str, rows: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0) + rows.T @ rows
        counts[name] = counts.get(name, 0) + rows.shape[0]

    _each_input(model, names, inputs, seed, take)
    return {name: sums[name] / counts[name] for name in sums}


def input_means(model: nn.Module, names: Sequence[str], inputs: Inputs, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The mean and the mean square (float64) of each input channel of the layers ``names`` on
    ``inputs``: the diagonal of `input_grams`, and the first moments, without the cost of the rest.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> mean, square = input_means(net, ["0"], torch.tensor([[1.0, 3.0], [1.0, -3.0]]))["0"]
        >>> mean.tolist(), square.tolist()
        ([1.0, 0.0], [1.0, 9.0])
    """
    sums: dict[str, list[Any]] = {}

    def take(name: str, rows: torch.Tensor) -> None:
        total = sums.setdefault(name, [0, 0, 0])
        total[0], total[1], total[2] = total[0] + rows.sum(0), total[1] + rows.pow(2).sum(0), total[2] + rows.shape[0]

    _each_input(model, names, inputs, seed, take)
    return {name: (first / count, second / count) for name, (first, second, count) in sums.items()}
