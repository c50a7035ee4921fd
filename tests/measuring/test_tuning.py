"""`tune_session`: the rule that picks session options from their measurements."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from autoshrink import HardwareProfile, Plan, compress
from autoshrink.measuring import measure, tuning
from autoshrink.sessions import SessionOptions, variants

HW = HardwareProfile(warmup_s=0.0, repeats=5, energy_s=0.05)
DEFAULT, EXTENDED, BASIC, NO_PATTERN, LEAN = variants("onnxruntime", 1)


@pytest.fixture(scope="module")
def art() -> Any:
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    return compress(net, Plan(bits=8), train_data=(torch.randn(32, 16),), example_input=torch.randn(1, 16))


def _timed(monkeypatch: pytest.MonkeyPatch, ms: dict[SessionOptions, Any]) -> None:
    """Fake timings: a number is the same in every round, a list is one median a round."""
    rounds = {o: v if isinstance(v, list) else [v] * tuning.ROUNDS for o, v in ms.items()}
    monkeypatch.setattr(tuning, "_time", lambda artifact, batch, hardware, sets, reference: {o: rounds[o] for o in sets})


def _memory(monkeypatch: pytest.MonkeyPatch, mb: dict[SessionOptions, float]) -> None:
    from autoshrink.measuring import memory

    class Peak:
        def __init__(self, value: float) -> None:
            self.peak_mb = value

    monkeypatch.setattr(memory, "measure_peak_memory", lambda artifact, batch, hw: Peak(mb[artifact.options]))


def test_every_variant_is_timed_for_real(art: Any) -> None:
    tuned = tuning.tune_session(art, torch.randn(1, 16), HW)
    assert set(tuned.timings) == {o.describe() for o in variants("onnxruntime", 1)}
    assert all(ms > 0 for ms in tuned.timings.values())
    assert tuned.options in variants("onnxruntime", 1)


def test_a_variant_must_beat_the_defaults_by_more_than_the_tie(art: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _timed(monkeypatch, {DEFAULT: 1.0, EXTENDED: 0.98, BASIC: 0.99, NO_PATTERN: 1.2, LEAN: 1.1})
    assert tuning.tune_session(art, torch.randn(1, 16), HW).options == DEFAULT  # 2% faster: noise
    _timed(monkeypatch, {DEFAULT: 1.0, EXTENDED: 0.8, BASIC: 0.9, NO_PATTERN: 1.2, LEAN: 1.1})
    assert tuning.tune_session(art, torch.randn(1, 16), HW).options == EXTENDED
    # faster in one round only (noise): not taken
    _timed(monkeypatch, {DEFAULT: 1.0, EXTENDED: [0.8, 1.0, 0.8], BASIC: 1.0, NO_PATTERN: 1.0, LEAN: [1.0, 0.96, 0.96]})
    assert tuning.tune_session(art, torch.randn(1, 16), HW).options == DEFAULT


def test_a_memory_limit_drops_the_options_over_it(art: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _timed(monkeypatch, {DEFAULT: 1.0, EXTENDED: 0.8, BASIC: 0.9, NO_PATTERN: 1.0, LEAN: 1.1})
    _memory(monkeypatch, {DEFAULT: 80.0, EXTENDED: 80.0, BASIC: 79.0, NO_PATTERN: 70.0, LEAN: 60.0})
    tuned = tuning.tune_session(art, torch.randn(1, 16), HW, memory_limit_mb=75.0)
    assert tuned.options == NO_PATTERN  # of the two that fit, the leaner unless the other is clearly faster
    assert tuned.memory[LEAN.describe()] == 60.0
    _timed(monkeypatch, {DEFAULT: 1.0, EXTENDED: 0.8, BASIC: 0.9, NO_PATTERN: 1.05, LEAN: 1.07})
    tuned = tuning.tune_session(art, torch.randn(1, 16), HW, memory_limit_mb=75.0)
    assert tuned.options == LEAN  # as fast within the tie, and less memory
    # none fits: the leanest is kept, whatever its speed
    assert tuning.tune_session(art, torch.randn(1, 16), HW, memory_limit_mb=10.0).options == LEAN


def test_a_profile_that_fixes_the_options_times_none(art: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_time", lambda *a: pytest.fail("timed although the profile fixes the options"))
    fixed = HardwareProfile(warmup_s=0.0, repeats=5, session={"memory_pattern": False})
    assert tuning.tune_session(art, torch.randn(1, 16), fixed).options == NO_PATTERN
    assert tuning.tune_session(art, torch.randn(1, 16), HardwareProfile(session="default")).options == DEFAULT


def test_measure_reports_the_options_it_measured_with(art: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _timed(monkeypatch, {DEFAULT: 1.0, EXTENDED: 1.0, BASIC: 0.5, NO_PATTERN: 1.0, LEAN: 1.0})
    seen = []
    real = art.runner

    def runner(self: Any, threads: Any = None) -> Any:
        seen.append(self.options)
        return real(threads)

    monkeypatch.setattr(type(art), "runner", runner)
    data = (torch.randn(8, 16), torch.randint(0, 4, (8,)))
    m = measure(art, eval_data=data, hardware=HW)
    assert m.session == {"graph_optimization": "basic"}
    assert seen and all(o == BASIC for o in seen)  # scored, timed and energy-measured with them


def test_a_set_not_ahead_after_a_round_is_not_timed_again(art: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.measuring import latency

    blocks = []
    monkeypatch.setattr(latency, "timed_block", lambda run, feed, repeats: blocks.append(repeats) or [1.0] * repeats)
    tuned = tuning.tune_session(art, torch.randn(1, 16), HardwareProfile(warmup_s=0.0, repeats=40))
    assert tuned.options == DEFAULT
    assert blocks == [20] * len(variants("onnxruntime", 1))  # one round of half the repeats, then none ahead
