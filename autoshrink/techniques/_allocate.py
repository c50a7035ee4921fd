"""One global pruning budget shared out across channel groups by measured sensitivity.

Each channel group (a layer's output channels and everything coupled to them, or an attention
block's heads) is pruned *alone* once, on a copy of the model, by a probe fraction; what the
model's output loses then (its squared relative error against the unpruned model on a few
calibration inputs, no labels) is the group's sensitivity, and the parameters that went are its
cost. The budget (parameters to remove) is then handed out one step at a time (``step``
channels, one head) to the group whose next step adds the least error per parameter removed,
with each group's error growing as the square of the fraction it loses, ``error * (r /
probed) ** 2`` (a channel ranked lower by magnitude hurts less, and errors of independent
groups add): the greedy order is then the optimal one, and a fragile group is left whole while
a robust one loses more than the plan's ratio, up to the cap the caller sets
(`autoshrink.techniques.prune` caps it at max(0.5, ratio): from a ratio of 0.5 up every group
loses the ratio).

Example:
    >>> robust = Group("a", width=64, step=8, probed=0.5, error=0.01, params=4096)
    >>> fragile = Group("b", width=64, step=8, probed=0.5, error=1.0, params=4096)
    >>> shares = allocate([robust, fragile], budget=4096)  # as much as both at 0.25
    >>> shares["a"] > 0.25 > shares.get("b", 0.0)
    True
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

#: Groups whose probe changed nothing measurable are treated as this sensitive, not free.
MIN_ERROR = 1e-12


@dataclass(frozen=True)
class Group:
    """One channel group as the probe found it.

    ``width``: its channels (heads, for an attention block); ``step``: what one step removes
    (the rounding unit of the kept width: 8 channels, 1 head); ``probed``: the fraction the probe
    removed; ``error``: the model's squared relative output error with only that removed;
    ``params``: the parameters that went with it.
    """

    name: str
    width: int
    step: int
    probed: float
    error: float
    params: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "width": self.width, "step": self.step, "probed": self.probed,
                "error": self.error, "params": self.params}  # fmt: skip

    def loss(self, share: float) -> float:
        """The modelled error of removing ``share`` of the group."""
        return max(self.error, MIN_ERROR) * (share / self.probed) ** 2

    def cost(self, share: float) -> float:
        """The parameters removing ``share`` of the group removes (linear in the channels)."""
        return self.params * share / self.probed


def table(groups: Sequence[Group]) -> str:
    """The probe as a Markdown table, the most sensitive group first.

    Example:
        >>> print(table([Group("a", 64, 8, 0.5, 0.01, 4096), Group("b", 12, 1, 0.5, 0.2, 9000)]))
        | group | width | removed by the probe | parameters removed | output error |
        |---|---|---|---|---|
        | b | 12 | 0.5 | 9000 | 0.2 |
        | a | 64 | 0.5 | 4096 | 0.01 |
    """
    lines = ["| group | width | removed by the probe | parameters removed | output error |", "|---|---|---|---|---|"]
    for g in sorted(groups, key=lambda g: -g.error):
        lines.append(f"| {g.name} | {g.width} | {g.probed:.3g} | {g.params} | {g.error:.4g} |")
    return "\n".join(lines)


def budget_of(groups: Sequence[Group], ratio: float) -> float:
    """The parameters that removing ``ratio`` of every group would remove: the budget a
    sensitivity-allocated plan spends, so that it is as large as the uniform plan it replaces."""
    return sum(g.cost(ratio) for g in groups if g.probed > 0)


def allocate(groups: Sequence[Group], budget: float, max_share: float = 0.9) -> dict[str, float]:
    """Each group's share of channels to remove (groups that lose nothing are left out), so that
    at least ``budget`` parameters go (or every group reaches ``max_share``, rounded up to its
    step), cheapest error per parameter first (see the module's docstring)."""
    removed = {g.name: 0 for g in groups}
    queue: list[tuple[float, int, Group]] = []
    order = itertools.count()  # ties: the group pushed first

    def push(g: Group) -> None:
        now, nxt = removed[g.name] / g.width, (removed[g.name] + g.step) / g.width
        # the step that crosses ``max_share`` is allowed, as uniform pruning rounds kept widths down
        if g.probed > 0 and g.params > 0 and now < max_share and removed[g.name] + g.step < g.width:
            heapq.heappush(queue, ((g.loss(nxt) - g.loss(now)) / (g.cost(nxt) - g.cost(now)), next(order), g))

    for g in groups:
        push(g)
    spent = 0.0
    while queue and spent < budget:
        _, _, g = heapq.heappop(queue)
        before = removed[g.name] / g.width
        removed[g.name] += g.step
        spent += g.cost(removed[g.name] / g.width) - g.cost(before)
        push(g)
    return {g.name: removed[g.name] / g.width for g in groups if removed[g.name] > 0}
