"""Choosing the model output that is compressed and scored, when a model returns several.

A model may return a tensor, a tuple, a dict or a Hugging Face ``ModelOutput``. autoshrink
works on one tensor: the one named by ``Workload.output`` (a key or an index), else ``logits``
when there is one, else the first. `SelectOutput` wraps the model so that it returns that
tensor, and the artifact returns the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoshrink.inputs import Inputs, call_model

OutputKey = str | int | None


def select(output: Any, key: OutputKey = None) -> torch.Tensor:
    """The chosen tensor of a model output.

    Example:
        >>> select({"last_hidden_state": torch.ones(1, 2, 3), "logits": torch.zeros(1, 4)}).shape
        torch.Size([1, 4])
        >>> select((torch.ones(2), torch.zeros(3)), 1).shape
        torch.Size([3])
    """
    if isinstance(output, torch.Tensor):
        if key not in (None, 0):
            raise ValueError(f"the model returns one tensor; output {key!r} does not exist")
        return output
    if isinstance(output, Mapping) or hasattr(output, "keys"):
        items = {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}  # ModelOutput is a mapping too
        if not items:
            raise ValueError("the model output holds no tensor")
        if key is None:
            key = "logits" if "logits" in items else next(iter(items))
        if key not in items:
            raise ValueError(f"the model output has no tensor {key!r}; it has {sorted(items)}")
        return items[key]
    if isinstance(output, (tuple, list)):
        index = 0 if key is None else key
        if not isinstance(index, int) or not -len(output) <= index < len(output):
            raise ValueError(f"output {key!r} does not exist: the model returns a {len(output)}-tuple")
        chosen = output[index]
        if not isinstance(chosen, torch.Tensor):
            raise ValueError(f"output {index} of the model is a {type(chosen).__name__}, not a tensor")
        return chosen
    raise ValueError(f"the model returns a {type(output).__name__}; autoshrink needs tensors out")


class SelectOutput(nn.Module):
    """``model`` returning only the chosen output tensor."""

    def __init__(self, model: nn.Module, key: OutputKey = None) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return select(self.model(*args, **kwargs), self.key)


def single_output(model: nn.Module, example: Inputs, key: OutputKey = None) -> nn.Module:
    """``model`` itself when it returns a tensor (and no key is asked), else wrapped."""
    with torch.no_grad():
        out = call_model(model.eval(), example)
    if isinstance(out, torch.Tensor) and key in (None, 0):
        return model
    select(out, key)  # fails early, with the reason, if the key does not exist
    return SelectOutput(model, key)
