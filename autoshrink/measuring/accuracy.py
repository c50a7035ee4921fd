"""Top-1 accuracy of an artifact over a labelled dataset."""

from __future__ import annotations

import math
from collections.abc import Callable

from autoshrink.artifact import Artifact
from autoshrink.data import DataLike, batches, split_batch


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
            raise ValueError("accuracy needs labelled data: batches of (inputs, labels)")
        pred = artifact(x).argmax(dim=-1)
        correct += int((pred == y).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("the evaluation data is empty")
    return correct / total
