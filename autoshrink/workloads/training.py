"""Fine-tuning a workload's model on its training split before a search (cached on disk).

Random weights, or a pretrained backbone with a new head, mean nothing to a search that scores
accuracy: ``finetune_epochs`` trains the whole model first, once, and caches the weights.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autoshrink.data import split_batch
from autoshrink.inputs import call_model


def finetune_key(*parts: Any) -> str:
    """A cache key from everything that decides the fine-tuned weights."""
    recipe = "|".join(str(p) for p in (*parts, torch.__version__, "finetune-v1"))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


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
    from autoshrink.workloads.digits import cache_dir

    path = cache_dir() / f"finetuned-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    say: Callable[[str], None] | None = (lambda s: print(s, file=sys.stderr, flush=True)) if verbose else None
    if say:
        say(f"fine-tuning for {epochs} epoch(s) on {len(train)} samples (once; cached in {path.parent})")  # type: ignore[arg-type]
    finetune(model, train, val, epochs=epochs, seed=seed, lr=lr, log=say)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()


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
    sets still get a few steps per epoch. One log line per epoch.
    """
    from autoshrink.techniques.distill import recalibrate_batchnorm, warmup_cosine

    batch_size = batch_size or min(64, max(8, len(train) // 4))  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(epochs * len(loader)))
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for batch in loader:
            x, y = split_batch(batch)
            if y is None:
                raise ValueError("fine-tuning needs labelled training data")
            opt.zero_grad()
            loss = F.cross_entropy(call_model(model, x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        recalibrate_batchnorm(model, (split_batch(b)[0] for b in DataLoader(train, batch_size=64)))
        if log is not None:
            elapsed = time.perf_counter() - start
            log(
                f"  epoch {epoch}/{epochs}: loss {total / max(seen, 1):.3f}, val acc "
                f"{100 * accuracy(model, val):.1f}%, ~{elapsed / epoch * (epochs - epoch):.0f} s left"
            )
    return model.eval()


def accuracy(model: nn.Module, data: Dataset) -> float:
    """Top-1 accuracy of a torch model (for progress lines; searches score artifacts)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in DataLoader(data, batch_size=128):
            x, y = split_batch(batch)
            correct += int((call_model(model, x).argmax(-1) == y).sum())
            total += len(y)  # type: ignore[arg-type]
    return correct / max(total, 1)
