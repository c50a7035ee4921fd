"""`compress`: build one candidate for real, in the order prune -> low rank -> distill -> quantize."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from autoshrink.artifact import Artifact, onnx_payload, torch_payload
from autoshrink.data import DataLike
from autoshrink.plan import Plan
from autoshrink.techniques import Context, Stage, apply, count_parameters
from autoshrink.techniques.distill import DistillConfig
from autoshrink.techniques.lowrank import LowRankConfig
from autoshrink.techniques.prune import PruneConfig
from autoshrink.techniques.quantize import QuantizeConfig


def technique_configs(plan: Plan) -> list[Any]:
    """The technique configs a plan stands for, in the order they are applied.

    Example:
        >>> [type(c).__name__ for c in technique_configs(Plan(prune=0.5, bits=8))]
        ['PruneConfig', 'QuantizeConfig']
    """
    configs: list[Any] = []
    if plan.prune > 0:
        configs.append(PruneConfig(ratio=plan.prune))
    if plan.rank is not None:
        configs.append(LowRankConfig(fraction=plan.rank))
    if plan.distill_epochs > 0:
        configs.append(DistillConfig(epochs=plan.distill_epochs))
    configs.append(QuantizeConfig(bits=plan.bits, runtime=plan.resolved_runtime))
    return configs


def compress(
    model: nn.Module,
    plan: Plan,
    *,
    train_data: DataLike,
    example_input: torch.Tensor,
    seed: int = 0,
) -> Artifact:
    """Build the artifact ``plan`` describes; ``model`` itself is never modified.

    Args:
        model: the trained model (the teacher for distillation).
        plan: the knobs of this candidate.
        train_data: data for distillation and int8 calibration (never the scoring data).
        example_input: one input batch, used to trace the model.
        seed: seeds distillation's shuffling.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        >>> art = compress(net, Plan(prune=0.5), train_data=(torch.randn(8, 16),),
        ...                example_input=torch.randn(1, 16))
        >>> art.num_parameters < sum(p.numel() for p in net.parameters())
        True
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be an autoshrink.Plan, got {type(plan).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError("example_input must be a tensor with the model's input shape (batch 1)")
    teacher = model.eval()
    torch.manual_seed(seed)
    stage = Stage(module=copy.deepcopy(model).eval())
    context = Context(teacher=teacher, train_data=train_data, example_input=example_input, seed=seed)
    for config in technique_configs(plan):
        stage = apply(stage, config, context)
    module = stage.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    params = count_parameters(module)
    if stage.onnx_bytes is not None:
        payload = onnx_payload(stage.onnx_bytes, plan, stage.reports, params)
        return Artifact(plan, "onnxruntime", payload, params, stage.reports)
    payload = torch_payload(module, plan, stage.reports)
    return Artifact(plan, "torch", payload, params, stage.reports, module=module)
