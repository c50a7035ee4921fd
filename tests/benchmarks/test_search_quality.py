"""The timed replay of the early-stop rule on a grid table (no model built)."""

from __future__ import annotations

import pytest

from autoshrink.plan import Plan
from autoshrink.space import SearchSpace
from benchmarks.search_quality import MINUTES, replay_timed, run_timed

SPACE = SearchSpace(prune=(0.0, 0.3, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0, 2))
ARCH_S, LOWER_S, EPOCH_S, CURVE_S = 1.0, 2.0, 5.0, 0.5


def _grid() -> dict:
    """Unpruned plans score 0.99 and are fast; pruned ones are slower and hopeless (their
    distillation gains 0.1 after its first epoch): the rule should stop them."""
    rows = []
    for prune in (0.0, 0.3):
        for bits in (32, 8):
            for epochs in (0, 2):
                fast = prune == 0.0
                curve = [0.9, 0.99] if fast else [0.1, 0.2]
                rows.append({
                    "plan": Plan(prune=prune, bits=bits, distill_epochs=epochs).to_dict(),
                    "accuracy": (0.99 if fast else 0.2) if epochs else (0.98 if fast else 0.1),
                    "latency_ms": (1.0 if bits == 8 else 2.0) + (0.0 if fast else 0.5),
                    "arch_s": ARCH_S, "lower_s": LOWER_S, "epoch_s": [EPOCH_S * (e + 1) for e in range(epochs)],
                    "curve": curve[:epochs], "curve_score_s": CURVE_S,
                })  # fmt: skip
    return {"rows": rows, "space": SPACE.to_dict()}


def _table() -> dict:
    return {Plan.from_dict(r["plan"]).to_json(): r for r in _grid()["rows"]}


def test_each_trial_is_charged_what_a_search_spends_on_it() -> None:
    finished, stopped = replay_timed(_table(), SPACE, 0, budget=10.0, margin=None, limit_s=1.0)
    # the warm start's first plan, int8 alone without distillation: pruning (none) + lowering and measuring
    assert stopped == 0 and finished[0] == (ARCH_S + LOWER_S, 0.98, 1.0)
    finished, _ = replay_timed(_table(), SPACE, 0, budget=10.0, margin=None, limit_s=1e6)
    times = [t for t, _, _ in finished]
    assert times == sorted(set(times)) and len(finished) == 8  # every plan once (repeats are free), in time order
    # a plan without distillation: pruning + lowering and measuring; a distilling one: its architecture
    # timed first (pruning + lowering, once), then pruning again, 2 epochs, lowering and measuring
    assert times[-1] == pytest.approx(4 * (ARCH_S + LOWER_S) + 4 * (2 * (ARCH_S + LOWER_S) + 2 * EPOCH_S))


def test_the_rule_stops_hopeless_distillations_and_saves_their_epochs() -> None:
    off = [replay_timed(_table(), SPACE, seed, 10.0, None, 600.0) for seed in range(3)]
    on = [replay_timed(_table(), SPACE, seed, 10.0, 0.01, 600.0) for seed in range(3)]
    assert all(n == 0 for _, n in off) and sum(n for _, n in on) > 0
    # the whole (small) space is measured either way, less what the rule stopped, sooner
    assert sum(len(f) for f, _ in on) == sum(len(f) for f, _ in off) - sum(n for _, n in on)
    assert sum(f[-1][0] for f, _ in on) < sum(f[-1][0] for f, _ in off)


def test_the_timed_report_has_every_budget_rule_and_minute() -> None:
    results = run_timed(_grid(), budgets=[10.0], seeds=2, log=lambda line: None)
    cells = results["cells"]
    assert len(cells) == 2 * len(MINUTES) and {c["rule"] for c in cells} == {True, False}
    by_rule = {r: [c["trials_median"] for c in cells if c["rule"] == r] for r in (True, False)}
    assert all(a <= b for trials in by_rule.values() for a, b in zip(trials, trials[1:], strict=False))


def test_a_grid_without_timings_is_refused() -> None:
    grid = _grid()
    for row in grid["rows"]:
        del row["epoch_s"]
    with pytest.raises(SystemExit, match="regenerate it"):
        run_timed(grid, budgets=[10.0], seeds=1)
