"""Bring your own model and data: a function that returns an autoshrink Workload.

Run it with:  autoshrink search --workload examples/my_workload.py:make --latency-budget-ms 2
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.workloads import Workload


class SmallNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Conv2d(64, 128, 1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def make(n: int = 1200, epochs: int = 3) -> Workload:
    """Your code goes here: load your trained model and your data. This example trains a small
    net for a few seconds on a synthetic task (the class is the image's dominant colour)."""
    classes = 3
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=gen)
    x = torch.rand(n, 3, 16, 16, generator=gen) + 0.3 * nn.functional.one_hot(y, 3).float()[:, :, None, None]
    torch.manual_seed(0)
    model = SmallNet(classes)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, 600, 50):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 50]), y[i : i + 50]).backward()
            opt.step()
    model.eval()
    train, val, test = (x[:600], y[:600]), (x[600:900], y[600:900]), (x[900:], y[900:])
    return Workload("my-small-net", model, train, val, test, example_input=x[:1], family="cnn")
