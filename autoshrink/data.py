"""Turning the user's data (a Dataset, a DataLoader or a tuple of tensors) into batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Union

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

DataLike = Union[Dataset, DataLoader, tuple, list]


def as_dataset(data: DataLike) -> Dataset:
    """Accept a `Dataset`, a `DataLoader` (its dataset is used) or ``(inputs, labels)`` tensors."""
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        return TensorDataset(*data)
    if isinstance(data, Dataset):
        return data
    raise TypeError(
        "data must be a torch Dataset, a DataLoader or a tuple of tensors (inputs, labels), "
        f"got {type(data).__name__}"
    )


def batches(data: DataLike, batch_size: int = 64, limit: int | None = None) -> Iterator[Any]:
    """Yield batches in order (no shuffling), at most ``limit`` samples in all."""
    dataset = as_dataset(data)
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, labels)`` from a batch that is a tensor or a ``(inputs, labels, ...)`` sequence."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch:
        labels = batch[1] if len(batch) > 1 else None
        return batch[0], labels
    raise TypeError(f"cannot read inputs from a batch of type {type(batch).__name__}")


def stack_inputs(data: DataLike, limit: int | None = None) -> torch.Tensor:
    """All inputs (up to ``limit``) as one tensor."""
    return torch.cat([split_batch(b)[0] for b in batches(data, 256, limit)])
