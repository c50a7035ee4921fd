"""Knowledge distillation: a short fine-tune of the compressed student against the teacher.

The teacher (the original model) is run once over the training data and its outputs are kept,
so each epoch only costs the student's forward and backward passes. No labels are needed: the
teacher's outputs are the target. What "close to the teacher" means follows the task:

* ``classification`` (logits): temperature-softened KL divergence to the teacher, mixed with
  cross-entropy on the labels when the data has them;
* ``embedding`` (vectors, hidden states): mean squared error plus ``1 - cosine`` per vector,
  so both direction (what similarity search uses) and scale are kept;
* ``regression``: mean squared error to the teacher, mixed with the labels' when given.

Only training data is used: never the data candidates are scored on. An eighth of it (at most
64 inputs) is held out of the fit and judges it: the student keeps the weights of the epoch
closest to the teacher there, the ones from before distillation included, so a few epochs on
a few hundred inputs cannot leave a model worse than they found it (development run, fp32: on
all-MiniLM-L6-v2 pruned by 0.3, one epoch on 300 sentences at the default learning rate took the
embeddings' cosine from 0.972 to 0.639; at 1e-5 it changed nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autoshrink.data import batches, split_batch
from autoshrink.inputs import Inputs, batch_size, call_model, tree_cat, tree_index
from autoshrink.techniques import CompressionError, Context, Stage, TechniqueReport, register
from autoshrink.training import fit, recalibrate_batchnorm


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


class _Shuffled:
    """Index batches over ``n`` samples in a fresh random order each epoch; ``order`` is the last one."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.order = torch.arange(n)

    def __len__(self) -> int:
        return max(1, -(-self.n // self.batch_size))

    def __iter__(self) -> Iterator[torch.Tensor]:
        self.order = torch.randperm(self.n, generator=self.generator)
        for start in range(0, self.n, self.batch_size):
            yield self.order[start : start + self.batch_size]


#: Training inputs held out of distillation to judge it: this share of them, at most `HELD_OUT_MAX`.
HELD_OUT_SHARE = 1 / 8
HELD_OUT_MAX = 64


@register(DistillConfig)
def distill(stage: Stage, config: DistillConfig, context: Context) -> Stage:
    if config.epochs == 0:
        return stage
    student = stage.module
    for p in student.parameters():
        p.requires_grad_(True)  # a stage that was lowered before may have been frozen
    x_all, t_all, y_all = _teacher_outputs(context)
    n = batch_size(x_all)
    held = min(HELD_OUT_MAX, int(n * HELD_OUT_SHARE)) if n >= 16 else 0
    fitted = n - held
    # a seeded random split: data in class order (an image folder) must not lose its last class
    split = torch.randperm(n, generator=torch.Generator().manual_seed(context.seed + 1))
    fit_idx, held_out = split[:fitted], split[fitted:]
    shuffled = _Shuffled(fitted, config.batch_size, torch.Generator().manual_seed(context.seed))

    def loss(positions: torch.Tensor) -> tuple[torch.Tensor, int]:
        idx = fit_idx[positions]
        out = call_model(student, tree_index(x_all, idx))
        labels = y_all[idx] if y_all is not None else None
        return distill_loss(out, t_all[idx], labels, context.task, config), len(idx)

    def judged() -> float:  # the student's distance to the teacher on the inputs it is not fitted on
        with torch.no_grad():
            return float(distill_loss(call_model(student.eval(), tree_index(x_all, held_out)), t_all[held_out], None,
                                      context.task, config))  # fmt: skip

    history = [judged()] if held else []
    best = (history[0], 0, _snapshot(student)) if held else None
    watch = context.on_epoch

    def after_epoch(epoch: int) -> None:
        nonlocal best
        if best is not None:
            history.append(judged())
            if history[-1] < best[0]:
                best = (history[-1], epoch, _snapshot(student))
        if watch is not None:
            watch(epoch, student)

    losses = fit(student, shuffled, loss, epochs=config.epochs, lr=config.lr, on_epoch=after_epoch)
    details = {"epochs": config.epochs, "samples": fitted, "task": context.task, "loss_per_epoch": losses}
    if best is not None:
        details |= {"held_out": held, "held_out_loss": [round(v, 6) for v in history], "kept_epoch": best[1]}
        if best[1] != config.epochs:  # a later epoch (or distillation itself) was worse on held-out inputs
            student.load_state_dict(best[2])
    if best is None or best[1] > 0:  # (where distillation was undone, the model is left exactly as it was)
        order = torch.cat([fit_idx[shuffled.order], held_out])  # statistics only: the held-out inputs may count
        recalibrate_batchnorm(student, (tree_index(x_all, order[i : i + 64]) for i in range(0, min(n, 2048), 64)))
    return stage.with_report(TechniqueReport(technique="distill", details=details), module=student)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
