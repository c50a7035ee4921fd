"""Distillation as a fidelity: a distilling candidate that can no longer reach the Pareto front is stopped.

Distillation is most of a candidate's cost on a real model, and its outcome is visible early: a
student that scores far below the front after one epoch rarely catches up. So a distilling
candidate is scored after every epoch, on `SUBSET` samples of the validation split (`autoshrink.data.spread`: drawn from all of it)
(its torch student, before it is lowered: cheap), and the search keeps its learning curve. The
rule, in the spirit of successive halving but against the front rather than a quantile:

* **what it has to beat**: the best final score among the finished, feasible candidates that
  are at least as cheap in every cost objective (latency; energy and peak memory where they are
  objectives). Its cost is known before it distils: the architecture is timed first.
* **how much it can still gain**: the largest gain, from the same epoch to the final score,
  seen on the learning curves of earlier candidates that distilled at least as many epochs
  (a longer schedule gains more after a given epoch, so this is optimistic). Until `MIN_CURVES`
  such curves exist, nothing is stopped.
* it is stopped after epoch ``e`` when ``score_e + gain_e + margin <= to_beat``.

**Score on a subset first.** When the validation split holds at least `SUBSET_FIRST_RATIO` times
`SUBSET` samples, a candidate whose cost is known before it is scored (its architecture timed
first) is scored on the `SUBSET` samples first, in `CHUNKS` interleaved chunks: their spread
bounds the whole split's score from above (`upper_bound`: the subset's mean plus a one-sided 99%
t-margin of the chunk means, at least 3/n, "the rule of three" for a subset that scored 0 or 1
everywhere). If that bound plus the margin cannot beat the same front point as above, the rest of
the split is not scored and the candidate is stopped the same way (its subset score and bound
kept); otherwise the whole split is scored, so a candidate that passes gets exactly the score it
would have had without the subset (at most ``1 / SUBSET_FIRST_RATIO`` more scoring).

``margin`` (``RunConfig.early_stop_margin``, 0.01 by default; ``None`` turns the rule off) is the one
knob: points of the score granted beyond the best gain seen; larger stops less. A stopped
candidate is recorded as PRUNED in the study (its epoch and subset score kept, tagged
``stopped_early`` on its MLflow run), never as failed, and is not in the Pareto set. The rule
uses the front as it stood when the trial began (`Front`, computed by the driver when it asks
for the trial, and sent with it to a Ray worker).

Example:
    >>> front = Front(points=(Point((1.0,), 0.95),),
    ...               curves=(Curve(2, (0.80, 0.90), 0.92), Curve(2, (0.70, 0.88), 0.90)), margin=0.02)
    >>> round(front.gain(1, 2), 4)  # the most any earlier candidate gained after its first epoch
    0.2
    >>> front.reachable(1, 2, 0.75, (2.0,)), front.reachable(1, 2, 0.60, (2.0,))
    (True, False)
    >>> front.reachable(1, 2, 0.10, (0.5,))  # nothing as fast as it has finished: cannot be ruled out
    True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from autoshrink.config import Budget

if TYPE_CHECKING:
    from autoshrink.searching.trial import TrialOutcome

#: Validation samples a distilling student is scored on after each epoch.
SUBSET = 256
#: Learning curves needed at an epoch before a candidate may be stopped there.
MIN_CURVES = 2
#: The validation split is scored on `SUBSET` samples first when it holds at least this many times more.
SUBSET_FIRST_RATIO = 4
#: Interleaved chunks the subset is scored in, and the one-sided 99% t quantile for CHUNKS - 1 degrees of freedom.
CHUNKS = 8
T_99 = 3.0


def upper_bound(chunks: Sequence[tuple[float, int]]) -> tuple[float, float]:
    """(mean, upper bound) of the score of a whole split from the (score, samples) of a random
    subset's chunks (see the module doc).

    Example:
        >>> mean, bound = upper_bound([(0.50, 32), (0.60, 32), (0.55, 32), (0.45, 32)] * 2)
        >>> round(mean, 3), round(bound, 3)
        (0.525, 0.588)
        >>> upper_bound([(0.0, 32)] * 8)  # nothing right: the bound still allows 3 in 256
        (0.0, 0.01171875)
    """
    n = sum(size for _, size in chunks)
    mean = sum(score * size for score, size in chunks) / n
    spread = statistics.stdev(score for score, _ in chunks) / math.sqrt(len(chunks)) if len(chunks) > 1 else math.inf
    return mean, mean + max(T_99 * spread, 3 / n)


@dataclass(frozen=True)
class Curve:
    """A finished candidate's learning curve: its plan's distillation ``epochs``, the subset score
    after each, and its ``final`` score (the lowered artifact on the whole validation split)."""

    epochs: int
    scores: tuple[float, ...]
    final: float


@dataclass(frozen=True)
class Point:
    """A finished feasible candidate: its cost objectives (in the search's order) and final score."""

    costs: tuple[float, ...]
    score: float


@dataclass(frozen=True)
class Front:
    """What the rule knows when a trial begins (see the module doc); ``costs`` names the cost
    objectives of the points, in order (`Measurement` fields)."""

    points: tuple[Point, ...] = ()
    curves: tuple[Curve, ...] = ()
    margin: float = 0.0
    costs: tuple[str, ...] = ("latency_ms",)

    def to_beat(self, costs: tuple[float, ...]) -> float | None:
        """The best final score among the points at least as cheap as ``costs`` in every cost."""
        found = [p.score for p in self.points if all(a <= b for a, b in zip(p.costs, costs, strict=True))]
        return max(found) if found else None

    def gain(self, epoch: int, epochs: int) -> float | None:
        """The largest final-minus-epoch-``epoch`` gain of the curves of at least ``epochs`` epochs
        (None until `MIN_CURVES` of them exist)."""
        found = [c.final - c.scores[epoch - 1] for c in self.curves if c.epochs >= epochs and len(c.scores) >= epoch]
        return max(found) if len(found) >= MIN_CURVES else None

    def reachable(self, epoch: int, epochs: int, score: float, costs: tuple[float, ...]) -> bool:
        """Whether a candidate costing ``costs``, scoring ``score`` after ``epoch`` of its
        ``epochs`` epochs, may still end up non-dominated."""
        beat, gain = self.to_beat(costs), self.gain(epoch, epochs)
        if beat is None or gain is None:
            return True
        return score + gain + self.margin > beat

    def worth_scoring(self, bound: float, costs: tuple[float, ...]) -> bool:
        """Whether a candidate costing ``costs`` whose score is at most ``bound`` may end up non-dominated."""
        beat = self.to_beat(costs)
        return beat is None or bound + self.margin > beat

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Front:
        return cls(
            points=tuple(Point(tuple(p["costs"]), p["score"]) for p in data.get("points", ())),
            curves=tuple(Curve(c["epochs"], tuple(c["scores"]), c["final"]) for c in data.get("curves", ())),
            margin=data.get("margin", 0.0),
            costs=tuple(data.get("costs", ("latency_ms",))),
        )


def front_of(
    outcomes: Mapping[int, TrialOutcome], budget: Budget, objectives: tuple[str, ...], margin: float
) -> Front:
    """The `Front` of the finished ``outcomes`` of a search (a stopped one adds nothing)."""
    points, curves = [], []
    for outcome in outcomes.values():
        m = outcome.measurement
        if outcome.failed or outcome.screened or outcome.stopped_epoch is not None or m is None:
            continue
        if outcome.curve and outcome.duplicate_of is None:
            curves.append(Curve(outcome.plan.distill_epochs, tuple(outcome.curve), m.accuracy))
        if Budget.met(budget.violations(m.metrics())):
            costs = tuple(float(getattr(m, k)) for k in objectives[1:])
            if all(math.isfinite(c) for c in costs):
                points.append(Point(costs, m.accuracy))
    return Front(tuple(points), tuple(curves), margin, objectives[1:])


class StoppedEarly(Exception):
    """Raised in a candidate when the rule stops it: the epoch, its subset score and, where it
    was stopped before the rest of the split was scored, the ``bound`` on its whole score."""

    def __init__(self, epoch: int, score: float, to_beat: float, bound: float | None = None) -> None:
        super().__init__(f"stopped after epoch {epoch}: {score:.4f} on the validation subset cannot reach {to_beat:.4f}")
        self.epoch, self.score, self.to_beat, self.bound = epoch, score, to_beat, bound
