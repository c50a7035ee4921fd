"""Timing rules: how a latency that a decision depends on is timed again."""

from __future__ import annotations

import pytest

from autoshrink.measuring.latency import WORST_OF, Latency, worst_of


def test_the_slowest_of_three_timings_is_kept() -> None:
    timings, calls = iter([1.0, 3.0, 2.0]), []
    assert WORST_OF == 3
    assert worst_of(lambda: calls.append(1) or next(timings)) == 3.0
    assert len(calls) == 3


def test_timings_already_taken_count_and_whole_timings_are_kept() -> None:
    def lat(ms: float, p95: float) -> Latency:
        return Latency(ms, p95, 10, 1, 1, 1.0)

    again = iter([lat(1.2, 1.3), lat(1.1, 9.0)])
    slowest = worst_of(lambda: next(again), key=lambda t: t.median_ms, taken=[lat(1.0, 1.1)])
    assert slowest == lat(1.2, 1.3)  # the slowest median, with its own p95: one timing, not a mix


def test_worst_of_needs_a_timing() -> None:
    with pytest.raises(ValueError, match="at least one"):
        worst_of(lambda: 1.0, n=0)
