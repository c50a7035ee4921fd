"""Knowledge distillation: a short fine-tune of the compressed student against the teacher.

The teacher (the original model) is run once over the training data and its outputs are kept,
so each epoch only costs the student's forward and backward passes. No labels are needed: the
teacher's outputs are the target. What "close to the teacher" means follows the task:

* ``classification`` (logits): temperature-softened KL divergence to the teacher, mixed with
  cross-entropy on the labels when the data has them;
* ``embedding`` (vectors, hidden states): mean squared error plus ``1 - cosine`` per vector,
  so both direction (what similarity search uses) and scale are kept;
* ``regression``: mean squared error to the teacher, mixed with the labels' when given.

Only training data is used: never the data candidates are scored on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.data import batches, split_batch
from autoshrink.inputs import Inputs, batch_size, call_model, tree_cat, tree_index
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


def _teacher_outputs(context: Context) -> tuple[Inputs, torch.Tensor, torch.Tensor | None]:
    """Inputs, teacher outputs and labels of the training data, computed once per cache."""
    cached = context.cache.get("teacher_outputs")
    if cached is None:
        cached = context.cache["teacher_outputs"] = _run_teacher(context)
    return cached


def _run_teacher(context: Context) -> tuple[Inputs, torch.Tensor, torch.Tensor | None]:
    inputs, outputs, labels = [], [], []
    context.teacher.eval()
    with torch.no_grad():
        for batch in batches(context.train_data, 256):
            x, y = split_batch(batch)
            inputs.append(x)
            outputs.append(call_model(context.teacher, x))
            if y is not None:
                labels.append(y)
    if not inputs:
        raise CompressionError("distillation needs training data, but train_data is empty")
    return tree_cat(inputs), torch.cat(outputs), torch.cat(labels) if labels else None


def distill_loss(
    out: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None, task: str, config: DistillConfig
) -> torch.Tensor:
    """The distance of the student's outputs to the teacher's for ``task`` (see the module doc).

    Example:
        >>> t = torch.randn(4, 8)
        >>> float(distill_loss(t, t, None, "embedding", DistillConfig(1))) < 1e-6
        True
    """
    if task == "classification":
        temp = config.temperature
        kd = F.kl_div(
            F.log_softmax(out / temp, dim=-1), F.softmax(target / temp, dim=-1), reduction="batchmean"
        ) * (temp * temp)
        if labels is not None and not labels.is_floating_point() and out.dim() == 2:
            return config.alpha * kd + (1 - config.alpha) * F.cross_entropy(out, labels)
        return kd
    if task == "regression":
        kd = F.mse_loss(out, target)
        if labels is not None and labels.is_floating_point() and labels.shape == out.shape:
            return config.alpha * kd + (1 - config.alpha) * F.mse_loss(out, labels)
        return kd
    flat_out, flat_target = out.flatten(1), target.flatten(1)
    cosine = F.cosine_similarity(flat_out, flat_target, dim=-1).mean()
    return F.mse_loss(out, target) + (1 - cosine)


def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[Inputs]) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over ``inputs``.

    Training only moves them by ``momentum`` per step; with few steps, or a small momentum
    (torchvision's MobileNetV3 uses 0.01), they stay near their old values and the model is
    wrong in eval mode (a fine-tuned MobileNetV3 scored chance until this). Returns the number
    of BatchNorm layers recalibrated.
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
    for p in student.parameters():
        p.requires_grad_(True)  # a stage that was lowered before may have been frozen
    x_all, t_all, y_all = _teacher_outputs(context)
    n = batch_size(x_all)
    gen = torch.Generator().manual_seed(context.seed)
    steps_per_epoch = max(1, -(-n // config.batch_size))
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config.epochs * steps_per_epoch))
    student.train()
    losses: list[float] = []
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            out = call_model(student, tree_index(x_all, idx))
            labels = y_all[idx] if y_all is not None else None
            loss = distill_loss(out, t_all[idx], labels, context.task, config)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
    recalibrate_batchnorm(student, (tree_index(x_all, order[i : i + 64]) for i in range(0, min(n, 2048), 64)))
    student.eval()
    report = TechniqueReport(
        technique="distill",
        details={"epochs": config.epochs, "samples": n, "task": context.task, "loss_per_epoch": losses},
    )
    return stage.with_report(report, module=student)
