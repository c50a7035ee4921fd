from __future__ import annotations

import pytest
import torch

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques import CompressionError
from autoshrink.techniques.distill import warmup_cosine
from tests.conftest import make_case


@pytest.mark.parametrize("n", [1, 5, 64])
def test_distillation_works_on_tiny_training_sets(n: int) -> None:
    # OneCycleLR raised ZeroDivisionError when epochs x batches was small (320 samples, 1 epoch).
    model, (x, y), example = make_case("rescnn")
    art = compress(model, Plan(prune=0.3, distill_epochs=1), train_data=(x[:n], y[:n]), example_input=example)
    losses = next(r for r in art.reports if r.technique == "distill").details["loss_per_epoch"]
    assert len(losses) == 1 and losses[0] == losses[0]  # one finite epoch


def test_empty_training_data_is_a_clear_error() -> None:
    model, (x, y), example = make_case("rescnn")
    with pytest.raises(CompressionError, match="distillation needs training data"):
        compress(model, Plan(prune=0.3, distill_epochs=1), train_data=(x[:0], y[:0]), example_input=example)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 17, 1000])
def test_schedule_is_defined_for_any_number_of_steps(steps: int) -> None:
    f = warmup_cosine(steps)
    values = [f(s) for s in range(steps)]
    assert all(0 < v <= 1 for v in values)
    assert max(values) == pytest.approx(1.0)


def test_teacher_outputs_are_computed_once_per_cache(monkeypatch) -> None:
    from autoshrink.techniques import distill

    calls = []
    real = distill._run_teacher
    monkeypatch.setattr(distill, "_run_teacher", lambda ctx: calls.append(1) or real(ctx))
    model, data, example = make_case("rescnn")
    cache: dict = {}
    for plan in (Plan(prune=0.3, distill_epochs=1), Plan(prune=0.5, distill_epochs=1)):
        compress(model, plan, train_data=data, example_input=example, cache=cache)
    assert len(calls) == 1
    compress(model, Plan(prune=0.3, distill_epochs=1), train_data=data, example_input=example)
    assert len(calls) == 2  # no cache given: computed for that call


def test_batchnorm_statistics_are_recomputed_after_training() -> None:
    # torchvision's MobileNetV3 uses BatchNorm momentum 0.01: a short fine-tune left its running
    # statistics near their initial values and the model scored chance in eval mode.
    from torch import nn

    from autoshrink.techniques.distill import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.01), nn.Dropout(0.5)).train()
    data = torch.randn(64, 3, 5, 5) * 3 + 7
    with torch.no_grad():
        model(data[:8])  # one training step's worth: running stats barely move
        conv_out = model[0](data)
    assert not torch.allclose(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=0.1)
    assert recalibrate_batchnorm(model, [data[i : i + 16] for i in range(0, 64, 16)]) == 1
    torch.testing.assert_close(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert model[1].momentum == 0.01 and not model.training
