"""Quality scores of an artifact, higher is better: top-1 accuracy, embedding fidelity, R².

`top1_accuracy` is the default. `Agreement` (top-1 agreement with the original classifier) and
`Fidelity` (mean cosine similarity to the original model's outputs) need no labels; they and
`RSquared` are ready-made ``evaluate`` functions; a `Workload` names one in ``evaluate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.artifact import Artifact
from autoshrink.data import DataLike, batches, split_batch
from autoshrink.inputs import call_model


class EvaluationError(ValueError):
    """Scoring a candidate failed: the user's ``evaluate`` raised or returned a non-number."""


def score(artifact: Artifact, data: DataLike, evaluate: Callable[[Artifact, DataLike], float] | None = None) -> float:
    """The user's ``evaluate(artifact, data)`` if given (higher is better), else top-1 accuracy.

    Whatever the user's function raises, or a result that is not a finite number, becomes an
    `EvaluationError` naming the function, so a search records it on the candidate.
    """
    if evaluate is None:
        return top1_accuracy(artifact, data)
    name = getattr(evaluate, "__name__", type(evaluate).__name__)
    try:
        value = evaluate(artifact, data)
    except Exception as exc:  # user code: anything it raises belongs to this candidate
        raise EvaluationError(f"evaluate function {name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EvaluationError(
            f"evaluate function {name!r} must return a number (higher is better), got {type(value).__name__}"
        ) from None
    if not math.isfinite(number):
        raise EvaluationError(f"evaluate function {name!r} returned {number} for {artifact.plan.label}")
    return number


def top1_accuracy(artifact: Artifact, data: DataLike, batch_size: int = 128) -> float:
    """Fraction of samples whose arg-max logit is the label.

    Example:
        >>> import torch
        >>> from autoshrink import Plan, compress
        >>> net = torch.nn.Linear(2, 2)
        >>> art = compress(net, Plan(), train_data=(torch.randn(4, 2),), example_input=torch.randn(1, 2))
        >>> 0.0 <= top1_accuracy(art, (torch.randn(8, 2), torch.randint(0, 2, (8,)))) <= 1.0
        True
    """
    correct = total = 0
    for batch in batches(data, batch_size):
        x, y = split_batch(batch)
        if y is None:
            raise ValueError(
                "accuracy needs labelled data: batches of (inputs, labels); without labels, score a "
                "classifier with evaluate=Agreement(model) and an embedding model with evaluate=Fidelity(model)"
            )
        pred = call_model(artifact, x).argmax(dim=-1)
        correct += int((pred == y).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("the evaluation data is empty")
    return correct / total


class Fidelity:
    """Mean cosine similarity between the artifact's outputs and the reference model's.

    The reference outputs are computed once per dataset. 1.0 means the same directions (what
    similarity search and retrieval use); it needs no labels.

    Example:
        >>> import torch
        >>> from autoshrink import Plan, compress
        >>> net = torch.nn.Linear(4, 8)
        >>> art = compress(net, Plan(), train_data=(torch.randn(4, 4),), example_input=torch.randn(1, 4))
        >>> round(Fidelity(net)(art, (torch.randn(16, 4),)), 4)
        1.0
    """

    __name__ = "fidelity"

    def __init__(self, reference: nn.Module, batch_size: int = 128) -> None:
        self.reference = reference
        self.batch_size = batch_size
        self._cache: dict[int, list[torch.Tensor]] = {}

    def _reference(self, data: DataLike) -> list[torch.Tensor]:
        key = id(data)
        if key not in self._cache:
            self.reference.eval()
            with torch.no_grad():
                self._cache[key] = [
                    call_model(self.reference, split_batch(b)[0]) for b in batches(data, self.batch_size)
                ]
        return self._cache[key]

    def __call__(self, artifact: Artifact, data: DataLike) -> float:
        total, count = 0.0, 0
        for batch, ref in zip(batches(data, self.batch_size), self._reference(data)):
            out = call_model(artifact, split_batch(batch)[0])
            cos = F.cosine_similarity(out.flatten(1).float(), ref.flatten(1).float(), dim=-1)
            total, count = total + float(cos.sum()), count + cos.numel()
        if count == 0:
            raise ValueError("the evaluation data is empty")
        return total / count

    def __getstate__(self) -> dict[str, object]:
        return {"reference": self.reference, "batch_size": self.batch_size, "_cache": {}}


class Agreement(Fidelity):
    """Top-1 agreement with the reference model: the share of inputs where the artifact picks the
    class the original model picks. Scores a classifier from unlabelled inputs (the data a user
    of a pretrained model has); named ``agreement`` in every report and MLflow run.

    Example:
        >>> import torch
        >>> from autoshrink import Plan, compress
        >>> net = torch.nn.Linear(4, 3)
        >>> x = torch.randn(64, 4)
        >>> art = compress(net, Plan(), train_data=(x,), example_input=x[:1])
        >>> agree = Agreement(net)
        >>> agree(art, (x,)), agree.__name__  # the name reports and MLflow use
        (1.0, 'agreement')
    """

    __name__ = "agreement"

    def __call__(self, artifact: Artifact, data: DataLike) -> float:
        same = count = 0
        for batch, ref in zip(batches(data, self.batch_size), self._reference(data)):
            expected = ref.argmax(dim=-1)
            same += int((call_model(artifact, split_batch(batch)[0]).argmax(dim=-1) == expected).sum())
            count += expected.numel()
        if count == 0:
            raise ValueError("the evaluation data is empty")
        return same / count


def RSquared(artifact: Artifact, data: DataLike) -> float:  # noqa: N802 - reads as the metric's name
    """Coefficient of determination of the outputs against float labels (1.0 is perfect)."""
    se = total = 0.0
    labels = []
    for batch in batches(data, 256):
        x, y = split_batch(batch)
        if y is None or not y.is_floating_point():
            raise ValueError("R² needs float labels: batches of (inputs, targets)")
        out = call_model(artifact, x).reshape(y.shape)
        se += float(((out - y) ** 2).sum())
        labels.append(y)
    y_all = torch.cat(labels)
    total = float(((y_all - y_all.mean()) ** 2).sum())
    return 1.0 - se / max(total, 1e-12)
