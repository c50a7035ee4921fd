from __future__ import annotations

import pytest
import torch

from autoshrink import workloads
from autoshrink.workloads.digits import digits_splits


def test_splits_are_fixed_and_disjoint() -> None:
    train, val, test = digits_splits()
    assert (len(train), len(val), len(test)) == (1078, 359, 360)
    again = digits_splits()[2]
    assert torch.equal(test.tensors[0], again.tensors[0])
    rows = {tuple(x.flatten().tolist()) for ds in (val, test) for x in ds.tensors[0]}
    leaked = sum(tuple(x.flatten().tolist()) in rows for x in train.tensors[0][:200])
    assert leaked <= 2  # digits has a few exact duplicate images; the splits themselves are disjoint


@pytest.mark.slow
def test_digits_workload_trains_once_and_is_cached(tmp_path, monkeypatch) -> None:
    # Trains into a temporary cache, never the user's, then loads it again. 3 of the recipe's 10
    # epochs (its one-cycle schedule shortened with it) keep the suite short: the full recipe
    # (99.4% test accuracy, results/) takes 45 s here and is pinned by its cache key below.
    from autoshrink.workloads import digits

    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    trained: list[int] = []
    real_train = digits.train_digits
    monkeypatch.setattr(digits, "train_digits", lambda *a, **k: trained.append(1) or real_train(*a, **k, epochs=3))
    wl = workloads.load("digits", verbose=False)
    x, y = wl.test.tensors
    with torch.no_grad():
        acc = (wl.model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9
    assert wl.example_input.shape == (1, 1, 32, 32)
    assert [p.name for p in tmp_path.iterdir()] == [f"digits-resnet-{digits._cache_key()}.pt"]
    saved = tmp_path / f"digits-resnet-{digits._cache_key()}.pt"
    written = saved.stat().st_mtime_ns
    cached = workloads.load("digits", verbose=False)
    assert trained == [1] and saved.stat().st_mtime_ns == written  # loaded: neither trained nor written
    for a, b in zip(wl.model.state_dict().values(), cached.model.state_dict().values()):
        assert torch.equal(a, b)


def test_cache_key_is_unchanged(monkeypatch) -> None:
    # The key names every user's cached digits model: a change would retrain it on each machine.
    # The value is what the code before `autoshrink.training` computed, with torch's version pinned.
    from autoshrink.workloads import digits

    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    assert digits._cache_key() == "7a95cea72acf"


def test_cache_dir_is_the_stores_and_still_importable_from_digits(tmp_path, monkeypatch) -> None:
    from autoshrink import store
    from autoshrink.workloads.digits import cache_dir

    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    assert cache_dir is store.cache_dir and cache_dir() == tmp_path


def test_unknown_workload() -> None:
    with pytest.raises(ValueError, match="unknown workload 'imagenet-please'; a workload is one of: a built-in name"):
        workloads.load("imagenet-please")


def test_training_reports_progress_every_epoch() -> None:
    # The first run trained for minutes in silence.
    from torch.utils.data import TensorDataset

    from autoshrink.workloads.digits import train_digits

    train, val, _ = digits_splits()
    small = TensorDataset(*(t[:128] for t in train.tensors))
    lines: list[str] = []
    train_digits(small, epochs=2, val=val, log=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("  epoch 1/2: loss ") and "val acc" in lines[0] and "s left" in lines[0]
