"""`Workload`: a trained model plus the data splits autoshrink needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autoshrink.config import ConfigError
from autoshrink.data import DataLike, as_dataset
from autoshrink.measuring import Evaluate


@dataclass(frozen=True)
class Workload:
    """A model and its data: everything a search needs besides the budget.

    ``train`` is for distillation and int8 calibration only, ``val`` for scoring candidates
    during a search, ``test`` for the accuracy finally reported. ``example_input`` is one
    batch (batch size 1) with the model's input shape. ``evaluate(artifact, data) -> float``
    (higher is better) replaces top-1 accuracy where the model is scored otherwise.
    ``family`` (``"cnn"``, ``"transformer"``, ...) picks the default search space.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        >>> wl = Workload("toy", torch.nn.Linear(4, 2), (x, y), (x, y), (x, y), x[:1])
        >>> wl.name, wl.family
        ('toy', None)
        >>> Workload("toy", "not a model", (x, y), (x, y), (x, y), x[:1])
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: workload 'toy': model must be a torch.nn.Module, got str
    """

    name: str
    model: nn.Module
    train: DataLike
    val: DataLike
    test: DataLike
    example_input: torch.Tensor
    evaluate: Evaluate | None = None
    family: str | None = None

    def __post_init__(self) -> None:
        where = f"workload {self.name!r}"
        if not isinstance(self.model, nn.Module):
            raise ConfigError(f"{where}: model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not isinstance(self.example_input, torch.Tensor):
            raise ConfigError(
                f"{where}: example_input must be a tensor with the model's input shape (batch 1), "
                f"got {type(self.example_input).__name__}"
            )
        for split in ("train", "val", "test"):
            try:
                dataset = as_dataset(getattr(self, split))
            except TypeError as exc:
                raise ConfigError(f"{where}: {split} {exc}") from None
            if hasattr(dataset, "__len__") and len(dataset) == 0:
                raise ConfigError(f"{where}: the {split} split is empty")
        if self.evaluate is not None and not callable(self.evaluate):
            raise ConfigError(f"{where}: evaluate must be callable(artifact, data) -> float")
