"""The built-in ``digits`` workload: a residual CNN on scikit-learn's bundled digits images.

Nothing is downloaded: the 1,797 8x8 images ship inside scikit-learn. They are upsampled to
32x32 so that the network does realistic work (about 2-4 ms per image in fp32 torch eager on
one thread), trained once (45 s to 2 minutes on two cores, one line of progress per epoch) and cached on disk.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from autoshrink.measuring.latency import torch_threads
from autoshrink.store import cache_dir  # also re-exported: benchmarks/transformers.py imports it from here
from autoshrink.training import cached_weights, fit, one_cycle_lr, recipe_key
from autoshrink.workloads.base import Workload

SPLIT_SEED = 0
TRAIN_SEED = 0
EPOCHS = 10
WIDTHS = (32, 64, 128)
IMAGE_SIZE = 32


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a skip connection (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """A small ResNet: stem, three stages of two residual blocks, global pool, linear head."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS, num_classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(1, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU()
        )
        self.stage1 = nn.Sequential(ResidualBlock(w1, w1, 1), ResidualBlock(w1, w1, 1))
        self.stage2 = nn.Sequential(ResidualBlock(w1, w2, 2), ResidualBlock(w2, w2, 1))
        self.stage3 = nn.Sequential(ResidualBlock(w2, w3, 2), ResidualBlock(w3, w3, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def digits_splits() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Fixed 60/20/20 train/validation/test splits of scikit-learn's digits, as 1x32x32 images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    train, val, test = (TensorDataset(x[idx], y[idx]) for idx in parts)
    return train, val, test


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels: cheap, and enough to regularize this small set."""
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_digits(
    train: TensorDataset,
    *,
    epochs: int = EPOCHS,
    seed: int = TRAIN_SEED,
    val: TensorDataset | None = None,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train `DigitsResNet` with AdamW and a one-cycle schedule; returns it in eval mode.

    With ``log``, one line per epoch: loss, validation accuracy (when ``val`` is given),
    seconds per epoch and the estimated time left.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # shuffles and augments: one stream, in that order
    model = DigitsResNet()
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, generator=gen)

    def loss(batch: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        xb, yb = batch
        return F.cross_entropy(model(_augment(xb, gen)), yb, label_smoothing=0.05), len(yb)

    fit(model, loader, loss, epochs=epochs, lr=3e-3, weight_decay=5e-4, schedule=one_cycle_lr, val=val, log=log)
    return model


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cache_key() -> str:
    return recipe_key(f"digits-v1|{WIDTHS}|{EPOCHS}|{TRAIN_SEED}|{SPLIT_SEED}|{IMAGE_SIZE}|{torch.__version__}")


def load_digits_workload(*, retrain: bool = False, verbose: bool = True) -> Workload:
    """Build the ``digits`` workload, training the model on first use and caching its weights.

    Training (once per machine, 45 s to 2 minutes on two cores) prints one line per epoch to stderr
    unless ``verbose=False``.
    """
    train, val, test = digits_splits()
    path = cache_dir() / f"digits-resnet-{_cache_key()}.pt"

    def train_once() -> nn.Module:
        say = _stderr if verbose else None
        if say:
            say(f"training the built-in digits model once ({EPOCHS} epochs; cached in {path.parent})")
        start = time.perf_counter()
        with torch_threads(max(1, os.cpu_count() or 1)):
            model = train_digits(train, val=val, log=say)
        if say:
            say(f"trained digits model in {time.perf_counter() - start:.1f} s -> {path}")
        return model

    model = cached_weights(DigitsResNet(), path, train_once, retrain=retrain)
    return Workload(
        name="digits",
        model=model,
        train=train,
        val=val,
        test=test,
        example_input=test[0:1][0],
        family="cnn",
    )
