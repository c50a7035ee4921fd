"""Model inputs of any shape: one tensor, a tuple of tensors, or a dict of named tensors.

A model is called the way its inputs say: ``model(x)``, ``model(*xs)`` or ``model(**named)``.
`InputSpec` records names, dtypes and which axes may change size (the batch axis, and the
sequence axis of token inputs), and travels from the example input through export,
calibration, the artifact and timing. Dtypes are never changed on the way: token ids stay int64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...], dict[str, torch.Tensor]]


def is_inputs(value: Any) -> bool:
    """A tensor, a non-empty tuple/list of tensors, or a non-empty dict of named tensors."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return bool(value) and all(isinstance(v, torch.Tensor) for v in value)
    if isinstance(value, Mapping):
        return bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    return False


def call_model(model: Callable[..., Any], inputs: Inputs) -> Any:
    """``model(x)``, ``model(*xs)`` or ``model(**named)``, as the inputs are given."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def tensors(inputs: Inputs) -> list[torch.Tensor]:
    """The input tensors in a fixed order (dict order for named inputs)."""
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], inputs: Inputs) -> Inputs:
    """Apply ``fn`` to every tensor, keeping the structure."""
    if isinstance(inputs, Mapping):
        return {k: fn(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(fn(v) for v in inputs)
    return fn(inputs)


def tree_cat(parts: Sequence[Inputs]) -> Inputs:
    """Concatenate batches of the same structure along the batch axis."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in first}  # type: ignore[index, call-overload]
    if isinstance(first, (tuple, list)):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))  # type: ignore[index]
    return torch.cat(list(parts))  # type: ignore[arg-type]


def tree_index(inputs: Inputs, index: torch.Tensor) -> Inputs:
    """The rows ``index`` of every tensor."""
    return tree_map(lambda t: t[index], inputs)


def batch_size(inputs: Inputs) -> int:
    return int(tensors(inputs)[0].shape[0])


def repeat_to(inputs: Inputs, size: int) -> Inputs:
    """Exactly ``size`` rows: repeated when there are fewer, cut when there are more."""
    n = batch_size(inputs)
    times = -(-size // n)
    return tree_map(lambda t: t.repeat(times, *([1] * (t.dim() - 1)))[:size].contiguous(), inputs)


@dataclass(frozen=True)
class InputSpec:
    """Names, dtypes and dynamic axes of a model's inputs, from one example.

    ``kind`` says how the model is called: ``"tensor"``, ``"tuple"`` or ``"dict"``. Axis 0 is
    the batch; integer inputs of rank >= 2 (token ids, attention masks) also get a dynamic
    sequence axis 1.

    Example:
        >>> ids = torch.ones(1, 16, dtype=torch.long)
        >>> spec = InputSpec.of({"input_ids": ids, "attention_mask": ids})
        >>> spec.names, spec.dtypes, spec.dynamic_axes()["input_ids"]
        (('input_ids', 'attention_mask'), ('int64', 'int64'), {0: 'batch', 1: 'sequence'})
        >>> InputSpec.from_dict(spec.to_dict()) == spec
        True
    """

    kind: str
    names: tuple[str, ...]
    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, inputs: Inputs) -> InputSpec:
        if isinstance(inputs, Mapping):
            kind, names = "dict", tuple(inputs)
        elif isinstance(inputs, (tuple, list)):
            kind, names = "tuple", tuple(f"input_{i}" for i in range(len(inputs)))
        else:
            kind, names = "tensor", ("input",)
        ts = tensors(inputs)
        return cls(kind, names, tuple(str(t.dtype).removeprefix("torch.") for t in ts), tuple(tuple(t.shape) for t in ts))

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for name, dtype, shape in zip(self.names, self.dtypes, self.shapes):
            axes[name] = {0: "batch"}
            if len(shape) >= 2 and not dtype.startswith(("float", "bfloat")):
                axes[name][1] = "sequence"
        return axes

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named tensors from a call made the way the model is called (``art(x)``,
        ``art(ids, mask)``, ``art(input_ids=..., attention_mask=...)`` or ``art({...})``)."""
        if len(args) == 1 and not kwargs and isinstance(args[0], Mapping):
            kwargs, args = args[0], ()
        if len(args) == 1 and not kwargs and isinstance(args[0], (tuple, list)) and self.kind == "tuple":
            args = tuple(args[0])
        if len(args) > len(self.names):
            raise TypeError(f"the model takes {len(self.names)} input(s) {list(self.names)}, got {len(args)}")
        named = dict(zip(self.names, args))
        for key, value in kwargs.items():
            if key not in self.names:
                raise TypeError(f"unknown input {key!r}; the model takes {list(self.names)}")
            if key in named:
                raise TypeError(f"input {key!r} given twice")
            named[key] = value
        missing = [n for n in self.names if n not in named]
        if missing:
            raise TypeError(f"missing input(s) {missing}; the model takes {list(self.names)}")
        for name in self.names:
            if not isinstance(named[name], torch.Tensor):
                raise TypeError(f"input {name!r} must be a torch.Tensor, got {type(named[name]).__name__}")
        return {n: named[n] for n in self.names}

    def structure(self, named: Mapping[str, torch.Tensor]) -> Inputs:
        """Named tensors back in the form the model is called with."""
        if self.kind == "dict":
            return {n: named[n] for n in self.names}
        if self.kind == "tuple":
            return tuple(named[n] for n in self.names)
        return named[self.names[0]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "dtypes": list(self.dtypes), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(
            data["kind"], tuple(data["names"]), tuple(data["dtypes"]), tuple(tuple(s) for s in data["shapes"])
        )


class Positional(torch.nn.Module):
    """Calls ``module`` with positional tensors mapped to the spec's form (for ONNX export,
    which takes positional inputs)."""

    def __init__(self, module: torch.nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.module = module
        self.spec = spec

    def forward(self, *args: torch.Tensor) -> Any:
        return call_model(self.module, self.spec.structure(dict(zip(self.spec.names, args))))
