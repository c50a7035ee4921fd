"""`Workload`: a trained model plus the data splits autoshrink needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Workload:
    """A model and its data.

    ``train`` is for fine-tuning and calibration, ``val`` for scoring candidates during a
    search, ``test`` for the accuracy finally reported. ``example_input`` is one batch
    (batch size 1) with the model's input shape.
    """

    name: str
    model: nn.Module
    train: Dataset
    val: Dataset
    test: Dataset
    example_input: torch.Tensor
