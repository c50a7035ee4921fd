"""`Workload`: a trained model plus the data splits autoshrink needs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autoshrink.config import ConfigError
from autoshrink.data import DataLike, as_dataset, has_labels
from autoshrink.inputs import Inputs, is_inputs
from autoshrink.measuring import Evaluate
from autoshrink.outputs import OutputKey


@dataclass(frozen=True)
class Workload:
    """A model and its data: everything a search needs besides the budget.

    ``train`` is for distillation and int8 calibration only, ``val`` for scoring candidates
    during a search, ``test`` for the accuracy finally reported. ``example_input`` is one
    batch (batch size 1) in the form the model is called with: a tensor, a tuple of tensors,
    or a dict of named tensors (``input_ids``, ``attention_mask``, ...).
    ``evaluate(artifact, data) -> float`` (higher is better) replaces top-1 accuracy where the
    model is scored otherwise. Without one, a validation split without labels is scored against
    the original model: top-1 agreement (`autoshrink.measuring.accuracy.Agreement`) for a
    classifier, the data a user of a pretrained model has; cosine fidelity
    (`autoshrink.measuring.accuracy.Fidelity`) where ``task`` is ``"embedding"``.
    ``task`` (``"classification"``, ``"embedding"``, ``"regression"``) says what distillation
    matches, by default read from the labels; ``output`` picks one output when the model
    returns several (a dict key or tuple index; default ``logits`` or the first).
    ``family`` (``"cnn"``, ``"transformer"``, ...) picks the default search space.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        >>> wl = Workload("toy", torch.nn.Linear(4, 2), (x, y), (x, y), (x, y), x[:1])
        >>> wl.name, wl.family
        ('toy', None)
        >>> Workload("unlabelled", torch.nn.Linear(4, 2), (x,), (x,), (x,), x[:1]).evaluate.__name__
        'agreement'
        >>> Workload("toy", "not a model", (x, y), (x, y), (x, y), x[:1])
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: workload 'toy': model must be a torch.nn.Module, got str
    """

    name: str
    model: nn.Module
    train: DataLike
    val: DataLike
    test: DataLike
    example_input: Inputs
    evaluate: Evaluate | None = None
    family: str | None = None
    task: str | None = None
    output: OutputKey = None

    def __post_init__(self) -> None:
        where = f"workload {self.name!r}"
        if not isinstance(self.model, nn.Module):
            raise ConfigError(f"{where}: model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not is_inputs(self.example_input):
            raise ConfigError(
                f"{where}: example_input must be one batch (batch size 1) in the form the model takes: "
                f"a tensor, a tuple of tensors or a dict of named tensors; got {type(self.example_input).__name__}"
            )
        if self.task is not None and self.task not in ("classification", "embedding", "regression"):
            raise ConfigError(f"{where}: task must be classification, embedding or regression, got {self.task!r}")
        for split in ("train", "val", "test"):
            try:
                dataset = as_dataset(getattr(self, split))
            except TypeError as exc:
                raise ConfigError(f"{where}: {split} {exc}") from None
            if hasattr(dataset, "__len__") and len(dataset) == 0:
                raise ConfigError(f"{where}: the {split} split is empty")
        if self.evaluate is not None and not callable(self.evaluate):
            raise ConfigError(f"{where}: evaluate must be callable(artifact, data) -> float")
        if self.evaluate is None and self.task != "regression" and not has_labels(self.val):
            from autoshrink.measuring.accuracy import Agreement, Fidelity

            scorer = Fidelity(self.model) if self.task == "embedding" else Agreement(self.model)
            object.__setattr__(self, "evaluate", scorer)  # label-free: scored against the original model
