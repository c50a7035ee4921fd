"""Turning the user's data (a Dataset, a DataLoader or a tuple of tensors) into batches.

A batch is read as inputs and (optional) labels:

* a tensor: inputs, no labels;
* ``(inputs, labels)`` or ``(inputs,)``, where inputs is a tensor, a tuple of tensors or a dict;
* a dict of named tensors: the inputs, except ``labels`` / ``label``, which are the labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Union

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from autoshrink.inputs import Inputs, repeat_to, tree_cat

DataLike = Union[Dataset, DataLoader, tuple, list]
LABEL_KEYS = ("labels", "label")


class NamedTensorDataset(Dataset):
    """A dataset of dicts of named tensors (token ids, attention masks, labels, ...).

    Example:
        >>> ds = NamedTensorDataset(input_ids=torch.ones(4, 8, dtype=torch.long), labels=torch.zeros(4))
        >>> sorted(ds[0]), len(ds)
        (['input_ids', 'labels'], 4)
    """

    def __init__(self, **tensors: torch.Tensor) -> None:
        sizes = {t.shape[0] for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"all tensors need the same first dimension, got {sorted(sizes)}")
        self.tensors = tensors

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}


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


def dataset_size(data: DataLike) -> int:
    """Number of samples (0 when the dataset cannot say)."""
    dataset = as_dataset(data)
    return len(dataset) if hasattr(dataset, "__len__") else 0


def batches(data: DataLike, batch_size: int = 64, limit: int | None = None) -> Iterator[Any]:
    """Yield batches in order (no shuffling), at most ``limit`` samples in all."""
    dataset = as_dataset(data)
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)


def split_batch(batch: Any) -> tuple[Inputs, torch.Tensor | None]:
    """``(inputs, labels)`` of a batch (see the module doc for the forms accepted)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        named = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
        if not named:
            raise TypeError("a batch dict holds only labels, no inputs")
        return named, next((batch[k] for k in LABEL_KEYS if k in batch), None)
    if isinstance(batch, (tuple, list)) and batch:
        inputs = tuple(batch[0]) if isinstance(batch[0], list) else batch[0]
        return inputs, batch[1] if len(batch) > 1 else None
    raise TypeError(f"cannot read inputs from a batch of type {type(batch).__name__}")


def has_labels(data: DataLike) -> bool:
    """Whether the first batch of ``data`` carries labels (an empty dataset counts as labelled).

    Example:
        >>> import torch
        >>> has_labels((torch.randn(4, 2), torch.zeros(4))), has_labels((torch.randn(4, 2),))
        (True, False)
    """
    try:
        return split_batch(next(iter(batches(data, 2))))[1] is not None
    except StopIteration:
        return True


#: Seed of the samples `stack_inputs` draws when the data has more than it takes.
SPREAD_SEED = 0


def spread(data: DataLike, limit: int) -> Dataset:
    """``data``'s dataset, or ``limit`` of its samples drawn at random (seeded by `SPREAD_SEED`,
    kept in dataset order) from the whole of it when it holds more: not the first ones, so data
    sorted by class (an image folder) gives every class its share of any statistic or score
    computed on the subset.

    Example:
        >>> x = torch.arange(1000.0).unsqueeze(1)  # sorted, like an image folder's classes
        >>> chosen = [float(spread((x,), 100)[i][0]) for i in range(100)]
        >>> len(chosen), max(chosen) > 900, chosen == sorted(chosen)
        (100, True, True)
    """
    dataset = as_dataset(data)
    if not hasattr(dataset, "__len__") or len(dataset) <= limit:
        return dataset
    generator = torch.Generator().manual_seed(SPREAD_SEED)
    chosen = torch.randperm(len(dataset), generator=generator)[:limit].sort().values
    return torch.utils.data.Subset(dataset, chosen.tolist())


def stack_inputs(data: DataLike, limit: int | None = None) -> Inputs:
    """All inputs as one batch of the inputs' structure; with ``limit``, that many drawn from the
    whole dataset (`spread`).

    Example:
        >>> stack_inputs((torch.arange(1000.0).unsqueeze(1),), 100).shape
        torch.Size([100, 1])
    """
    dataset = spread(data, limit) if limit is not None else as_dataset(data)
    return tree_cat([split_batch(b)[0] for b in batches(dataset, 256, limit)])


def first_batch(data: DataLike, size: int) -> Inputs:
    """A real batch of exactly ``size`` samples from ``data`` (repeated if the data is short)."""
    inputs, _ = split_batch(next(iter(batches(data, size))))
    return repeat_to(inputs, size)
