"""Knowledge distillation: a short fine-tune of the compressed student against the teacher.

The teacher (the original model) is run once over the training data and its logits are kept,
so each epoch only costs the student's forward and backward passes. The loss mixes the
temperature-softened KL divergence to the teacher with cross-entropy on the labels (when the
data has labels). Only training data is used: never the data candidates are scored on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autoshrink.data import batches, split_batch
from autoshrink.techniques import CompressionError, Context, Stage, TechniqueReport, register


@dataclass(frozen=True)
class DistillConfig:
    """``epochs`` of distillation (0 = none) with AdamW, linear warm-up and cosine decay."""

    epochs: int
    lr: float = 2e-3
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"DistillConfig.epochs must be >= 0, got {self.epochs}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"DistillConfig.alpha must be in [0, 1], got {self.alpha}")


def _teacher_outputs(context: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inputs, teacher outputs and labels of the training data, computed once per cache."""
    cached = context.cache.get("teacher_outputs")
    if cached is None:
        cached = context.cache["teacher_outputs"] = _run_teacher(context)
    return cached


def _run_teacher(context: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    inputs, logits, labels = [], [], []
    context.teacher.eval()
    with torch.no_grad():
        for batch in batches(context.train_data, 256):
            x, y = split_batch(batch)
            inputs.append(x)
            logits.append(context.teacher(x))
            if y is not None:
                labels.append(y)
    if not inputs:
        raise CompressionError("distillation needs training data, but train_data is empty")
    return torch.cat(inputs), torch.cat(logits), torch.cat(labels) if labels else None


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


@register(DistillConfig)
def distill(stage: Stage, config: DistillConfig, context: Context) -> Stage:
    if config.epochs == 0:
        return stage
    student = stage.module
    x_all, t_all, y_all = _teacher_outputs(context)
    gen = torch.Generator().manual_seed(context.seed)
    steps_per_epoch = max(1, -(-len(x_all) // config.batch_size))
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config.epochs * steps_per_epoch))
    temp = config.temperature
    use_labels = y_all is not None and t_all.dim() == 2 and y_all.dtype == torch.long
    student.train()
    losses: list[float] = []
    for _ in range(config.epochs):
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            out = student(x_all[idx])
            if t_all.dim() == 2:
                kd = F.kl_div(
                    F.log_softmax(out / temp, dim=1),
                    F.softmax(t_all[idx] / temp, dim=1),
                    reduction="batchmean",
                ) * (temp * temp)
            else:
                kd = F.mse_loss(out, t_all[idx])
            loss = config.alpha * kd
            if use_labels:
                loss = loss + (1 - config.alpha) * F.cross_entropy(out, y_all[idx])  # type: ignore[index]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
    student.eval()
    report = TechniqueReport(
        technique="distill",
        details={"epochs": config.epochs, "samples": len(x_all), "loss_per_epoch": losses},
    )
    return stage.with_report(report, module=student)
