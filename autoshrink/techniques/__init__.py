"""Compression techniques: one config dataclass and one registered handler each.

A handler takes the working `Stage` (the model being compressed), its config and the
`Context` (teacher, data, example input) and returns the next `Stage`. `apply` dispatches on
the config's type through the explicit registry below, so a new technique is one module with
a config, a handler decorated with ``@register(Config)`` and an import in `_load_all`.

Example:
    >>> from autoshrink.techniques import registered
    >>> sorted(registered())
    ['DistillConfig', 'LowRankConfig', 'PruneConfig', 'QuantizeConfig', 'TensorTrainConfig']
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import nn

from autoshrink.data import DataLike
from autoshrink.inputs import Inputs, call_model


class CompressionError(RuntimeError):
    """A technique could not produce a working artifact; the message says which and why."""


@dataclass(frozen=True)
class TechniqueReport:
    """What one technique did: layers changed, layers left alone (with the reason), details."""

    technique: str
    changed: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TechniqueReport:
        return cls(
            technique=data["technique"],
            changed=tuple(data.get("changed", ())),
            skipped=dict(data.get("skipped", {})),
            details=dict(data.get("details", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "technique": self.technique,
            "changed": list(self.changed),
            "skipped": dict(self.skipped),
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Context:
    """What handlers may read: the original model (teacher), data, an example input.

    ``cache`` holds what is the same for every candidate of a search (the teacher's outputs
    on the training data); pass one dict to every `compress` call to compute it once.
    """

    teacher: nn.Module
    train_data: DataLike
    example_input: Inputs
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"  # or "embedding" / "regression": what distillation matches
    #: Called after each distillation epoch with the epoch and the student (a search scores it
    #: there and may stop the candidate by raising).
    on_epoch: Callable[[int, nn.Module], None] | None = None


@dataclass(frozen=True)
class Stage:
    """The candidate under construction: a torch module, then (after quantize) an ONNX model."""

    module: nn.Module
    reports: tuple[TechniqueReport, ...] = ()
    onnx_bytes: bytes | None = None
    openvino_bytes: bytes | None = None

    def with_report(self, report: TechniqueReport, **changes: Any) -> Stage:
        return replace(self, reports=self.reports + (report,), **changes)


Handler = Callable[[Stage, Any, Context], Stage]
C = TypeVar("C")
T = TypeVar("T")

_HANDLERS: dict[type, Handler] = {}


def register(config_type: type[C]) -> Callable[[Callable[[Stage, C, Context], Stage]], Handler]:
    """Register ``handler`` as the implementation of ``config_type``."""

    def deco(handler: Callable[[Stage, C, Context], Stage]) -> Handler:
        if config_type in _HANDLERS:
            raise ValueError(f"a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = handler
        return handler

    return deco


def _load_all() -> None:
    from autoshrink.techniques import distill, lowrank, prune, quantize, tensor_train  # noqa: F401


def registered() -> list[str]:
    """Names of the config types that have a handler."""
    _load_all()
    return [t.__name__ for t in _HANDLERS]


def apply(stage: Stage, config: Any, context: Context) -> Stage:
    """Run the handler registered for ``type(config)``."""
    _load_all()
    try:
        handler = _HANDLERS[type(config)]
    except KeyError:
        raise TypeError(f"no technique registered for {type(config).__name__}") from None
    return handler(stage, config, context)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of a torch model's parameters and buffers (names, shapes, dtypes and values).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> before = weights_fingerprint(net)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(1e-3)
        >>> before == weights_fingerprint(net), len(before)
        (False, 16)
    """
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        try:
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # a quantized or sparse tensor: its name and shape only
            continue
    return digest.hexdigest()[:16]


def remembered(cache: dict[str, Any], bucket: str, key: str, make: Callable[[], T], keep: int) -> T:
    """``cache[bucket][key]``, made by ``make()`` on a miss; the bucket keeps the ``keep`` most
    recently used values, in memory (what a search builds once and several candidates reuse).

    Example:
        >>> cache: dict = {}
        >>> [remembered(cache, "squares", k, lambda k=k: k * k, keep=2) for k in (2, 3, 2, 4)]
        [4, 9, 4, 16]
        >>> list(cache["squares"])  # 3 was the least recently used
        [2, 4]
    """
    kept = cache.setdefault(bucket, OrderedDict())
    if key not in kept:
        kept[key] = make()
        while len(kept) > keep:
            kept.popitem(last=False)
    kept.move_to_end(key)
    return kept[key]


def check_forward(module: nn.Module, example_input: Inputs, expected: torch.Size, what: str) -> None:
    """Run one forward pass; raise `CompressionError` if it fails or changes the output shape."""
    try:
        with torch.no_grad():
            out = call_model(module.eval(), example_input)
    except Exception as exc:  # a broken graph can raise anything; name the technique
        raise CompressionError(f"{what} produced a model whose forward pass fails: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.shape != expected:
        got = out.shape if isinstance(out, torch.Tensor) else type(out).__name__
        raise CompressionError(f"{what} changed the output shape from {tuple(expected)} to {got}")


def output_shape(module: nn.Module, example_input: Inputs) -> torch.Size:
    """The shape of the module's (single tensor) output on the example input, in eval mode
    (the module's own mode is restored)."""
    was_training = module.training
    try:
        with torch.no_grad():
            return call_model(module.eval(), example_input).shape
    finally:
        module.train(was_training)


def output_layers(model: nn.Module, example_input: Inputs) -> list[nn.Module]:
    """Weight-bearing leaf modules whose output *is* the model's output (the classifier head).

    The hooks keep every output tensor alive until the comparison, so the identity test cannot
    be fooled by a freed tensor's address being reused (which made this non-deterministic).
    """
    produced: list[tuple[nn.Module, Any]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: produced.append((mod, out)))
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            final = call_model(model, example_input)
    finally:
        for h in hooks:
            h.remove()
    finals = _tensors(final)
    found: list[nn.Module] = []
    for module, out in produced:
        if any(o is f for o in _tensors(out) for f in finals) and module not in found:
            found.append(module)
    return [m for m in found if any(True for _ in m.parameters(recurse=False))]


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors inside a module output (a tensor, or a tuple / list / dict of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []
