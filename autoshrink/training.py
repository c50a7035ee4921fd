"""The package's one training loop: `fit`, its learning-rate schedules, BatchNorm recalibration
and weights cached on disk.

Distillation (`autoshrink.techniques.distill`), the fine-tuning of a workload's model
(`autoshrink.workloads.training`) and the built-in digits model all train through `fit`: AdamW,
one scheduler step per batch, an optional gradient-norm clip and one progress line per epoch.
What differs between them is passed in: the batches, the loss, the schedule. Nothing here knows
where files live: `cached_weights` takes a path (callers put it in `autoshrink.store.cache_dir`).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from torch.utils.data import DataLoader, Dataset

from autoshrink.data import split_batch
from autoshrink.inputs import Inputs, call_model

B = TypeVar("B")
B_co = TypeVar("B_co", covariant=True)

Schedule = Callable[[torch.optim.Optimizer, int], LRScheduler]
"""Builds the scheduler of an optimizer from the total number of steps; stepped once per batch."""


class Batches(Protocol[B_co]):
    """What `fit` trains on: iterated once per epoch, with the number of batches in one (a
    ``DataLoader`` or a list of batches is one)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[B_co]: ...


def warmup_cosine(total_steps: int, warmup: float = 0.2, floor: float = 0.04) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then cosine decay to ``floor``.

    Unlike ``OneCycleLR`` it is defined for any number of steps, one included.

    Example:
        >>> f = warmup_cosine(10)
        >>> [round(f(s), 2) for s in (0, 1, 2, 9)]
        [0.5, 1.0, 1.0, 0.04]
        >>> warmup_cosine(1)(0)
        1.0
    """
    warm = int(warmup * total_steps) if total_steps >= 5 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        span = max(1, total_steps - warm - 1)
        progress = min(1.0, (step - warm) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def warmup_cosine_lr(optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """`warmup_cosine` as a scheduler: the default `Schedule` of `fit`."""
    return LambdaLR(optimizer, warmup_cosine(total_steps))


def one_cycle_lr(optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """PyTorch's ``OneCycleLR`` peaking at the optimizer's learning rate (needs ``total_steps >= 2``).

    Example:
        >>> opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=3e-3)
        >>> sched = one_cycle_lr(opt, 10)
        >>> round(opt.param_groups[0]["lr"] * 25 / 3e-3, 6)  # starts at max_lr / 25
        1.0
    """
    return OneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps)


def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[Inputs]) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over ``inputs``.

    Training only moves them by ``momentum`` per step; with few steps, or a small momentum
    (torchvision's MobileNetV3 uses 0.01), they stay near their old values and the model is
    wrong in eval mode (a fine-tuned MobileNetV3 scored chance until this). Leaves the model in
    eval mode and returns the number of BatchNorm layers recalibrated.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        >>> recalibrate_batchnorm(model, [torch.randn(8, 3) for _ in range(4)])
        1
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch seen
        m.train()
    with torch.no_grad():
        for x in inputs:
            call_model(model, x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return len(norms)


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


def fit(
    model: nn.Module,
    batches: Batches[B],
    loss: Callable[[B], tuple[torch.Tensor, int]],
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    schedule: Schedule = warmup_cosine_lr,
    max_grad_norm: float | None = None,
    batchnorm_data: Callable[[], Iterable[Inputs]] | None = None,
    val: Dataset | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """Train every parameter of ``model`` for ``epochs`` passes over ``batches`` with AdamW.

    Args:
        model: trained in place, and left in eval mode.
        batches: iterated once per epoch; shuffling, if any, is its own (a ``DataLoader``'s
            generator), so the caller owns every random draw and the seeds.
        loss: a batch's loss and its number of samples (the epoch's loss is the sample mean).
        epochs, lr, weight_decay: of the loop and of ``torch.optim.AdamW``.
        schedule: the learning-rate schedule over ``epochs * len(batches)`` steps.
        max_grad_norm: clip the gradients' total norm to this before each step.
        batchnorm_data: after every epoch, recompute BatchNorm statistics over these inputs
            (`recalibrate_batchnorm`), before the progress line's validation accuracy.
        val: with ``log``, the progress line also shows the top-1 `accuracy` on ``val``.
        log: receives one line per epoch: loss, validation accuracy, seconds per epoch and the
            estimated time left.
        on_epoch: called with the epoch number (from 1) after each epoch, the model in eval
            mode; what it raises stops the training (a search's early stop).

    Returns:
        The mean loss of each epoch.

    Example:
        >>> import torch.nn.functional as F
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(2, 2)
        >>> data = [(torch.randn(8, 2), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> losses = fit(model, data, lambda b: (F.cross_entropy(model(b[0]), b[1]), len(b[1])), epochs=2, lr=1e-2)
        >>> len(losses), model.training
        (2, False)
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = schedule(opt, epochs * len(batches))
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for batch in batches:
            opt.zero_grad()
            value, n = loss(batch)
            value.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            sched.step()
            total, seen = total + value.item() * n, seen + n
        losses.append(total / max(seen, 1))
        if batchnorm_data is not None:
            recalibrate_batchnorm(model, batchnorm_data())
        if log is not None:
            elapsed = time.perf_counter() - start
            left = elapsed / epoch * (epochs - epoch)
            acc = f", val acc {100 * accuracy(model, val):.1f}%" if val is not None else ""
            log(
                f"  epoch {epoch}/{epochs}: loss {losses[-1]:.3f}{acc}, "
                f"{elapsed / epoch:.1f} s/epoch, ~{left:.0f} s left"
            )
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch)
    model.eval()
    return losses


def recipe_key(recipe: str) -> str:
    """A short file-name key for a recipe: the string of everything that decides some weights.

    Example:
        >>> recipe_key("digits-v1|(32, 64, 128)|10|0|0|32|2.5.1+cpu")
        '7a95cea72acf'
    """
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def cached_weights(model: nn.Module, path: Path, train: Callable[[], nn.Module], *, retrain: bool = False) -> nn.Module:
    """``model`` with the weights saved at ``path``; without them (or with ``retrain``), ``train()``'s.

    Trained weights are saved through a temporary file and a rename, so no reader ever loads half
    a file, and two processes training at once each write a whole one. Returns in eval mode.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "linear.pt"
        >>> trained = cached_weights(nn.Linear(2, 2), path, lambda: nn.Linear(2, 2))
        >>> again = cached_weights(nn.Linear(2, 2), path, lambda: 1 / 0)  # loaded, not trained
        >>> bool(torch.equal(trained.weight, again.weight))
        True
    """
    if path.is_file() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    trained = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(trained.state_dict(), tmp)
    tmp.replace(path)
    return trained.eval()
