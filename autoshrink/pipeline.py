"""`compress`: build one candidate for real, in the order prune -> low rank -> distill -> quantize."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autoshrink.artifact import Artifact, onnx_payload, openvino_payload, torch_payload
from autoshrink.data import DataLike
from autoshrink.inputs import Inputs, InputSpec, call_model, is_inputs
from autoshrink.outputs import OutputKey, single_output
from autoshrink.phases import phase
from autoshrink.plan import Plan
from autoshrink.techniques import Context, Stage, apply, count_parameters, remembered
from autoshrink.techniques.distill import DistillConfig
from autoshrink.techniques.lowrank import LowRankConfig
from autoshrink.techniques.prune import PruneConfig
from autoshrink.techniques.quantize import QuantizeConfig
from autoshrink.techniques.tensor_train import TensorTrainConfig


def technique_configs(plan: Plan, *, int8_range: str = "auto") -> list[Any]:
    """The technique configs a plan stands for, in the order they are applied (``int8_range``:
    see `QuantizeConfig`).

    Example:
        >>> [type(c).__name__ for c in technique_configs(Plan(prune=0.5, bits=8))]
        ['PruneConfig', 'QuantizeConfig']
        >>> [type(c).__name__ for c in technique_configs(Plan(rank=0.5, rank_method="tt", distill_epochs=1))]
        ['TensorTrainConfig', 'DistillConfig', 'QuantizeConfig']
    """
    configs: list[Any] = []
    if plan.prune > 0:
        uniform = plan.prune_method == "uniform"
        configs.append(PruneConfig(ratio=plan.prune, allocation="uniform" if uniform else "sensitivity",
                                   importance="magnitude" if uniform else "activation"))  # fmt: skip
    if plan.rank is not None and plan.rank_method in ("tt", "att"):
        configs.append(TensorTrainConfig(fraction=plan.rank, method="activation" if plan.rank_method == "att" else "weight"))
    elif plan.rank is not None:
        configs.append(LowRankConfig(fraction=plan.rank, method="activation" if plan.rank_method == "asvd" else "weight"))
    if plan.distill_epochs > 0:
        configs.append(DistillConfig(epochs=plan.distill_epochs))
    configs.append(
        QuantizeConfig(bits=plan.bits, runtime=plan.resolved_runtime, int8_range=int8_range, layer_bits=plan.layer_bits,
                       calibration=plan.calibration, rounding=plan.rounding)  # fmt: skip
    )
    return configs


def compress(
    model: nn.Module,
    plan: Plan,
    *,
    train_data: DataLike,
    example_input: Inputs,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
    task: str | None = None,
    output: OutputKey = None,
    int8_range: str = "auto",
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> Artifact:
    """Build the artifact ``plan`` describes; ``model`` itself is never modified.

    Args:
        model: the trained model (the teacher for distillation), on the CPU; its train/eval
            mode is restored afterwards.
        plan: the knobs of this candidate.
        train_data: data for distillation and int8 calibration (never the scoring data).
        example_input: one input batch in the form the model is called with: a tensor, a
            tuple of tensors, or a dict of named tensors (``input_ids``, ``attention_mask``).
        seed: seeds distillation's shuffling (the global torch RNG is left as it was).
        cache: a dict shared by the candidates of one search, so that what they have in
            common (the teacher's outputs) is computed once.
        task: what the output is, for distillation: ``"classification"`` (logits),
            ``"embedding"`` or ``"regression"``; by default read from the training labels.
        output: which output to keep when the model returns several (a key of a dict /
            ``ModelOutput`` or an index of a tuple); by default ``logits`` or the first.
        int8_range: int8 weights over their ``"full"`` range or a ``"reduced"`` 7-bit one,
            which CPUs without VNNI need (they saturate otherwise); ``"auto"`` chooses for the
            CPU this runs on. Set it when the artifact will run on another kind of CPU.
        on_epoch: called after each distillation epoch with the epoch (from 1) and the student
            in eval mode; an exception it raises stops the build and propagates.

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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not is_inputs(example_input):
        raise TypeError(
            "example_input must be one batch in the form the model takes: a tensor, a tuple of "
            f"tensors or a dict of named tensors; got {type(example_input).__name__}"
        )
    if isinstance(example_input, list):
        example_input = tuple(example_input)
    check_on_cpu(model)
    check_runs(model, example_input)
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            context = prepare(model, train_data=train_data, example_input=example_input, seed=seed,
                              cache=cache, task=task, output=output)  # fmt: skip
            context = replace(context, on_epoch=on_epoch)
            configs = technique_configs(plan, int8_range=int8_range)
            first = next((i for i, c in enumerate(configs) if not isinstance(c, STRUCTURAL)), len(configs))
            stage = architecture(configs[:first], context)
            torch.manual_seed(seed)  # what follows starts from the same state, whether the architecture was built or reused
            stage = run_techniques(stage, configs[first:], context)
    finally:
        model.train(was_training)
    return to_artifact(stage, plan, InputSpec.of(example_input))


def prepare(
    model: nn.Module,
    *,
    train_data: DataLike,
    example_input: Inputs,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
    task: str | None = None,
    output: OutputKey = None,
) -> Context:
    """What every plan of one model shares: the teacher (the model, in eval mode, with one
    chosen output), the data, the task. The model's train/eval mode is the caller's to restore."""
    teacher = single_output(model.eval(), example_input, output)
    return Context(
        teacher=teacher, train_data=train_data, example_input=example_input, seed=seed,
        cache=cache if cache is not None else {}, task=task or infer_task(teacher, train_data),
    )  # fmt: skip


#: Techniques that change the architecture (applied first, in this order), whose result depends only
#: on the teacher, its training data and their config: `architecture` keeps it per search.
STRUCTURAL = (PruneConfig, LowRankConfig, TensorTrainConfig)
#: Architectures `architecture` keeps in a search's cache (the most recently used).
KEPT_ARCHITECTURES = 4


def architecture(configs: list[Any], context: Context) -> Stage:
    """The teacher with the `STRUCTURAL` ``configs`` applied: built once per search and reused
    (a copy) by every candidate that shares it, from ``context.cache``.

    A search builds an architecture several times: timed first without distillation (to screen
    it against the budget), then again to distil it, and once per bit width or mixed-precision
    setting. Pruning with reconstruction took minutes on a pretrained CNN (the first
    pruned candidate of an EfficientNet-Lite1 search spent 1306 s in two prunings; 10-20 s each
    since reconstruction runs each batch once), so the `KEPT_ARCHITECTURES` most recent ones are
    kept, in memory only.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        >>> ctx = prepare(net, train_data=(torch.randn(32, 16),), example_input=torch.randn(1, 16))
        >>> first = architecture([PruneConfig(ratio=0.5)], ctx)
        >>> again = architecture([PruneConfig(ratio=0.5)], ctx)  # reused: a copy of the first
        >>> again.module is not first.module, again.reports == first.reports
        (True, True)
    """
    if not configs:
        return Stage(module=copy.deepcopy(context.teacher).eval())
    built = remembered(
        context.cache, "architectures", repr((context.seed, configs)),
        lambda: run_techniques(Stage(module=copy.deepcopy(context.teacher).eval()), configs, context),
        keep=KEPT_ARCHITECTURES,
    )  # fmt: skip
    return replace(built, module=copy.deepcopy(built.module))


def run_techniques(stage: Stage, configs: list[Any], context: Context) -> Stage:
    """Apply ``configs`` in order to a stage (a copy of the teacher, or a stage built before);
    each is timed as a phase named after it (``PruneConfig`` -> ``prune``, `autoshrink.phases`)."""
    for config in configs:
        with phase(type(config).__name__.removesuffix("Config").lower()):
            stage = apply(stage, config, context)
    return stage


def to_artifact(stage: Stage, plan: Plan, spec: InputSpec) -> Artifact:
    """The deployable artifact of a finished stage (its ONNX model, or its torch module)."""
    module = stage.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    params = count_parameters(module)
    if stage.openvino_bytes is not None:
        payload = openvino_payload(stage.openvino_bytes, plan, stage.reports, params, spec)
        return Artifact(plan, "openvino", payload, params, stage.reports, spec=spec)
    if stage.onnx_bytes is not None:
        payload = onnx_payload(stage.onnx_bytes, plan, stage.reports, params, spec)
        return Artifact(plan, "onnxruntime", payload, params, stage.reports, spec=spec)
    payload = torch_payload(module, plan, stage.reports, spec)
    return Artifact(plan, "torch", payload, params, stage.reports, module=module, spec=spec)


TASKS = ("classification", "embedding", "regression")


def infer_task(model: nn.Module, train_data: DataLike) -> str:
    """``classification`` for integer labels, ``regression`` for float ones, ``embedding``
    (match the teacher's outputs) when the data has no labels."""
    from autoshrink.data import batches, split_batch

    try:
        _, labels = split_batch(next(iter(batches(train_data, 2))))
    except StopIteration:
        return "classification"
    if labels is None:
        return "embedding"
    return "regression" if labels.is_floating_point() else "classification"


def check_runs(model: nn.Module, example_input: Inputs) -> None:
    """The model must run on ``example_input``; otherwise say so before any technique does."""
    was_training = model.training
    try:
        with torch.no_grad():
            call_model(model.eval(), example_input)
    except Exception as exc:  # whatever the user's forward raises, it is their model's error
        spec = InputSpec.of(example_input)
        raise ValueError(
            f"the model does not run on example_input ({_describe(spec)}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)


def _describe(spec: InputSpec) -> str:
    return ", ".join(f"{n} {tuple(s)} {d}" for n, s, d in zip(spec.names, spec.shapes, spec.dtypes))


def check_on_cpu(model: nn.Module) -> None:
    """autoshrink builds and measures on the CPU: refuse, with a clear message, anything else.

    Example:
        >>> check_on_cpu(torch.nn.Linear(2, 2, device="meta"))
        Traceback (most recent call last):
        ...
        ValueError: the model has parameters on meta (weights not loaded); autoshrink compresses and measures on the CPU: load the weights and call model.cpu() first
    """
    devices = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if devices - {"cpu"}:
        where = ", ".join(sorted(devices - {"cpu"}))
        hint = " (weights not loaded)" if "meta" in devices else ""
        raise ValueError(
            f"the model has parameters on {where}{hint}; autoshrink compresses and measures on "
            "the CPU: load the weights and call model.cpu() first"
        )
