from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoshrink import training
from autoshrink.training import (
    cached_weights,
    fit,
    one_cycle_lr,
    recalibrate_batchnorm,
    recipe_key,
    warmup_cosine,
    warmup_cosine_lr,
)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 17, 1000])
def test_schedule_is_defined_for_any_number_of_steps(steps: int) -> None:
    f = warmup_cosine(steps)
    values = [f(s) for s in range(steps)]
    assert all(0 < v <= 1 for v in values)
    assert max(values) == pytest.approx(1.0)


def test_schedule_warms_up_linearly_then_decays_to_its_floor() -> None:
    f = warmup_cosine(100, warmup=0.2, floor=0.04)
    values = [f(s) for s in range(100)]
    warm, decay = values[:20], values[20:]
    assert warm == pytest.approx([(s + 1) / 20 for s in range(20)])
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # never rises again
    assert decay[0] == pytest.approx(1.0) and decay[-1] == pytest.approx(0.04)
    assert decay[40] == pytest.approx(0.04 + 0.96 * 0.5 * (1 + torch.cos(torch.tensor(40 / 79 * torch.pi)).item()))


def test_one_cycle_peaks_at_the_optimizers_learning_rate() -> None:
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=3e-3)
    sched = one_cycle_lr(opt, 20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(3e-3) and lrs[0] == pytest.approx(3e-3 / 25)


def test_batchnorm_statistics_are_recomputed_after_training() -> None:
    # torchvision's MobileNetV3 uses BatchNorm momentum 0.01: a short fine-tune left its running
    # statistics near their initial values and the model scored chance in eval mode.
    norm = nn.BatchNorm2d(4, momentum=0.01)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), norm, nn.Dropout(0.5)).train()
    data = torch.randn(64, 3, 5, 5) * 3 + 7
    with torch.no_grad():
        model(data[:8])  # one training step's worth: running stats barely move
        conv_out = model[0](data)
    assert norm.running_mean is not None
    assert not torch.allclose(norm.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=0.1)
    assert recalibrate_batchnorm(model, [data[i : i + 16] for i in range(0, 64, 16)]) == 1
    torch.testing.assert_close(norm.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert norm.momentum == 0.01 and not model.training


def test_a_model_without_batchnorm_is_left_alone() -> None:
    model = nn.Linear(3, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batchnorm(model, [torch.randn(4, 3)]) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _task(n: int = 96) -> tuple[TensorDataset, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    return data, DataLoader(data, batch_size=16, shuffle=True, generator=gen)


def test_fit_trains_steps_the_schedule_per_batch_and_logs_each_epoch() -> None:
    torch.manual_seed(0)
    data, loader = _task()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    totals: list[int] = []

    def schedule(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
        totals.append(total)
        return warmup_cosine_lr(opt, total)

    lines: list[str] = []
    losses = fit(
        model,
        loader,
        lambda b: (F.cross_entropy(model(b[0]), b[1]), len(b[1])),
        epochs=4,
        lr=1e-2,
        schedule=schedule,
        val=data,
        log=lines.append,
    )
    assert totals == [4 * len(loader)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert not model.training
    assert [line.split(":")[0] for line in lines] == [f"  epoch {e}/4" for e in range(1, 5)]
    assert "val acc" in lines[0] and "s/epoch" in lines[0] and lines[0].endswith("s left")


def test_fit_recalibrates_batchnorm_after_every_epoch_and_clips_gradients(monkeypatch) -> None:
    data, loader = _task(64)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=0.01), nn.Linear(4, 2))
    clipped: list[float] = []
    recalibrated: list[int] = []
    real_clip, real_recalibrate = nn.utils.clip_grad_norm_, training.recalibrate_batchnorm

    def clip(parameters: Any, norm: float) -> torch.Tensor:
        clipped.append(norm)
        return real_clip(parameters, norm)

    def recalibrate(m: nn.Module, inputs: Any) -> int:
        recalibrated.append(1)
        return real_recalibrate(m, inputs)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(training, "recalibrate_batchnorm", recalibrate)
    fit(
        model,
        loader,
        lambda b: (F.cross_entropy(model(b[0]), b[1]), len(b[1])),
        epochs=3,
        lr=1e-2,
        max_grad_norm=0.5,
        batchnorm_data=lambda: (x for x, _ in DataLoader(data, batch_size=32)),
    )
    assert clipped == [0.5] * (3 * len(loader)) and len(recalibrated) == 3
    with torch.no_grad():
        hidden = model[0](data.tensors[0])
    torch.testing.assert_close(model[1].running_mean, hidden.mean(0), atol=1e-5, rtol=1e-4)


def test_cached_weights_are_written_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "weights.pt"
    calls: list[int] = []

    def train() -> nn.Module:
        calls.append(1)
        return nn.Linear(3, 2)

    first = cached_weights(nn.Linear(3, 2), path, train)
    assert calls == [1] and path.is_file() and not first.training
    assert [p.name for p in path.parent.iterdir()] == ["weights.pt"]  # no temporary file left
    mtime = path.stat().st_mtime_ns
    again = cached_weights(nn.Linear(3, 2), path, train)
    assert calls == [1] and path.stat().st_mtime_ns == mtime  # loaded, not trained or written
    assert isinstance(first, nn.Linear) and isinstance(again, nn.Linear)
    assert torch.equal(first.weight, again.weight) and not again.training
    cached_weights(nn.Linear(3, 2), path, train, retrain=True)
    assert calls == [1, 1]


def test_an_interrupted_save_leaves_no_file_to_load(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "weights.pt"

    def half_a_save(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half a fil")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_a_save)
    with pytest.raises(OSError, match="disk full"):
        cached_weights(nn.Linear(3, 2), path, lambda: nn.Linear(3, 2))
    assert not path.exists()  # the next call trains again instead of loading a torn file


def test_recipe_keys_are_unchanged(monkeypatch) -> None:
    # Keys name the cached weights on every user's machine: a change would retrain them all.
    # Values computed with the code before `autoshrink.training` existed (torch version pinned).
    from autoshrink.workloads.training import finetune_key

    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    assert recipe_key("digits-v1|(32, 64, 128)|10|0|0|32|2.5.1+cpu") == "7a95cea72acf"
    assert finetune_key("resnet18", "IMAGENET1K_V1", "digits", 32, 10, 3, 0, 1078) == "b6cfd58f9715"
