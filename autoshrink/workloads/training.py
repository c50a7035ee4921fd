"""Fine-tuning a workload's model on its training split before a search (cached on disk).

Random weights, or a pretrained backbone with a new head, mean nothing to a search that scores
accuracy: ``finetune_epochs`` trains the whole model first, once (with `autoshrink.training.fit`),
and caches the weights in `autoshrink.store.cache_dir`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autoshrink.data import split_batch
from autoshrink.inputs import call_model
from autoshrink.store import cache_dir
from autoshrink.training import cached_weights, fit, recipe_key


def finetune_key(*parts: Any) -> str:
    """A cache key from everything that decides the fine-tuned weights."""
    return recipe_key("|".join(str(p) for p in (*parts, torch.__version__, "finetune-v1")))


def cached_finetune(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    *,
    epochs: int,
    key: str,
    seed: int = 0,
    lr: float = 2e-3,
    verbose: bool = True,
) -> nn.Module:
    """Fine-tune ``model`` on ``train`` (cached on disk under ``key``); progress on stderr."""
    path = cache_dir() / f"finetuned-{key}.pt"

    def train_once() -> nn.Module:
        say: Callable[[str], None] | None = (lambda s: print(s, file=sys.stderr, flush=True)) if verbose else None
        if say:
            say(f"fine-tuning for {epochs} epoch(s) on {len(train)} samples (once; cached in {path.parent})")  # type: ignore[arg-type]
        return finetune(model, train, val, epochs=epochs, seed=seed, lr=lr, log=say)

    return cached_weights(model, path, train_once)


def finetune(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    *,
    epochs: int,
    lr: float = 2e-3,
    batch_size: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train every parameter on cross-entropy with AdamW and warm-up + cosine decay.

    ``batch_size`` defaults to a quarter of the training set, between 8 and 64, so that small
    sets still get a few steps per epoch. Gradients are clipped to norm 1, and BatchNorm
    statistics are recomputed after every epoch. One log line per epoch, with the accuracy on ``val``.
    """
    batch_size = batch_size or min(64, max(8, len(train) // 4))  # type: ignore[arg-type]
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))

    def loss(batch: Any) -> tuple[torch.Tensor, int]:
        x, y = split_batch(batch)
        if y is None:
            raise ValueError("fine-tuning needs labelled training data")
        return F.cross_entropy(call_model(model, x), y), len(y)

    fit(
        model,
        loader,
        loss,
        epochs=epochs,
        lr=lr,
        weight_decay=1e-4,
        max_grad_norm=1.0,
        batchnorm_data=lambda: (split_batch(b)[0] for b in DataLoader(train, batch_size=64)),
        val=val,
        log=log,
    )
    return model
