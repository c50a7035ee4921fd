from __future__ import annotations

import pytest
import torch

from autoshrink.measuring import measure
from autoshrink.measuring.latency import measure_latency
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from tests.conftest import make_case


@pytest.mark.parametrize("plan", [Plan(), Plan(bits=8)], ids=lambda p: p.label)
def test_measurement_is_complete_and_honest(fast_hardware, plan: Plan) -> None:
    model, data, example = make_case("rescnn")
    art = compress(model, plan, train_data=data, example_input=example)
    m = measure(art, eval_data=data, hardware=fast_hardware)
    assert 0.0 <= m.accuracy <= 1.0
    assert 0 < m.latency_ms <= m.latency_p95_ms
    assert m.latency_repeats == 3 * fast_hardware.repeats
    assert m.threads == 1 and m.batch_size == 1
    assert m.size_bytes == art.size_bytes and m.runtime == art.runtime
    assert m.energy_mj > 0
    assert m.energy_method.startswith("codecarbon") and (
        "estimate" in m.energy_method or "hardware counters" in m.energy_method
    )
    x, y = data
    with torch.no_grad():
        expected = float((model(x).argmax(1) == y).float().mean())
    if plan.bits == 32:
        assert m.accuracy == pytest.approx(expected)
    else:
        assert abs(m.accuracy - expected) <= 0.03


def test_latency_tracks_the_work(fast_hardware) -> None:
    small = compress(torch.nn.Linear(32, 32), Plan(), train_data=(torch.randn(4, 32),), example_input=torch.randn(1, 32))
    big_model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)])
    big = compress(big_model, Plan(), train_data=(torch.randn(4, 512),), example_input=torch.randn(1, 512))
    t_small = measure_latency(small, torch.randn(1, 32), fast_hardware).median_ms
    t_big = measure_latency(big, torch.randn(1, 512), fast_hardware).median_ms
    assert t_big > 3 * t_small


def test_batch_size_is_respected(fast_hardware) -> None:
    from dataclasses import replace

    model, data, example = make_case("rescnn")
    art = compress(model, Plan(bits=8), train_data=data, example_input=example)
    m = measure(art, eval_data=data, hardware=replace(fast_hardware, batch_size=8))
    assert m.batch_size == 8


def test_custom_evaluate_is_used(fast_hardware) -> None:
    model, data, example = make_case("rescnn")
    art = compress(model, Plan(), train_data=data, example_input=example)
    m = measure(art, eval_data=data, hardware=fast_hardware, evaluate=lambda a, d: 0.42)
    assert m.accuracy == 0.42


def test_unlabelled_data_needs_evaluate(fast_hardware) -> None:
    model, data, example = make_case("rescnn")
    art = compress(model, Plan(), train_data=data, example_input=example)
    with pytest.raises(ValueError, match="labelled"):
        measure(art, eval_data=(data[0],), hardware=fast_hardware)


def test_speed_up_is_the_baseline_latency_over_the_candidates() -> None:
    from autoshrink.measuring import Measurement

    def m(ms: float) -> Measurement:
        return Measurement(0.9, ms, ms, 0.5, 1000, 10, "torch", 1, 1, 150, 1.1, "-")

    assert m(0.5).speedup_over(m(3.0)) == 6.0  # six times faster than the baseline
    assert m(3.0).speedup_over(m(3.0)) == 1.0


def test_unlabelled_classifier_data_is_scored_by_agreement_with_the_original() -> None:
    import torch

    from autoshrink import Plan, compress
    from autoshrink.measuring.accuracy import Agreement, top1_accuracy
    from tests.conftest import make_case

    model, (x, _), example = make_case("rescnn")
    art = compress(model, Plan(bits=8), train_data=(x[:256],), example_input=example)
    with torch.no_grad():
        own = model(x[256:]).argmax(1)  # labels that are the original's answers: agreement is top-1 on them
    assert Agreement(model)(art, (x[256:],)) == top1_accuracy(art, (x[256:], own))
    assert Agreement(model)(compress(model, Plan(), train_data=(x[:256],), example_input=example), (x[256:],)) == 1.0
