"""Small models of the three families autoshrink must handle, and data labelled by them."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.config import HardwareProfile


class ResCNN(nn.Module):
    """Two residual stages (one with a 1x1 projection shortcut) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.a1 = nn.Conv2d(32, 32, 3, padding=1)
        self.a2 = nn.Conv2d(32, 32, 3, padding=1)
        self.b1 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.b2 = nn.Conv2d(64, 64, 3, padding=1)
        self.proj = nn.Conv2d(32, 64, 1, stride=2)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        x = F.relu(self.proj(x) + self.b2(F.relu(self.b1(x))))
        return self.head(x.mean(dim=(2, 3)))


class DepthwiseNet(nn.Module):
    """MobileNet-style: depthwise 3x3 + pointwise 1x1 blocks with an inverted residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.expand = nn.Conv2d(32, 96, 1)
        self.dw = nn.Conv2d(96, 96, 3, padding=1, groups=96)
        self.bn = nn.BatchNorm2d(96)
        self.project = nn.Conv2d(96, 32, 1)
        self.dw2 = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)
        self.pw2 = nn.Conv2d(32, 64, 1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = x + self.project(F.relu(self.bn(self.dw(F.relu(self.expand(x))))))
        x = F.relu(self.pw2(F.relu(self.dw2(x))))
        return self.head(x.mean(dim=(2, 3)))


class SamePadConv(nn.Conv2d):
    """A convolution that pads itself before the call, TensorFlow's "same" (EfficientNet-Lite's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TinyTransformer(nn.Module):
    """Token projection, a 2-layer transformer encoder, mean pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 64)
        layer = nn.TransformerEncoderLayer(64, nhead=4, dim_feedforward=256, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class ScaledChannels(nn.Module):
    """A custom layer with its own parameter: no technique knows it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1)


class SpatialBias(nn.Module):
    """A custom layer whose parameter has no channel dimension (an 8x8 map added everywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class WithCustomLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.custom = ScaledChannels(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.spatial = SpatialBias()
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.custom(F.relu(self.conv1(x)))
        x = self.spatial(F.relu(self.conv2(x)))
        return self.head(F.relu(self.conv3(x)).mean(dim=(2, 3)))


MODELS = {
    "rescnn": (ResCNN, (3, 8, 8)),
    "depthwise": (DepthwiseNet, (3, 8, 8)),
    "transformer": (TinyTransformer, (12, 16)),
}


def _task(x: torch.Tensor, classes: int) -> torch.Tensor:
    """A learnable synthetic label: a fixed linear map of the per-channel (or per-feature) means."""
    summary = x.mean(dim=(2, 3)) if x.dim() == 4 else x.mean(dim=1)
    proj = torch.randn(summary.shape[1], classes, generator=torch.Generator().manual_seed(1))
    return (summary @ proj).argmax(dim=1)


@functools.cache
def _trained(name: str, n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    cls, shape = MODELS.get(name, (WithCustomLayer, (3, 8, 8)))
    torch.manual_seed(0)
    model = cls()
    x = torch.randn(n, *shape) * 4
    y = _task(x, model.head.out_features)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(100):
        idx = torch.arange(step * 64, step * 64 + 64) % n
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval(), x, y


def make_case(name: str, n: int = 512) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A small model trained (in a second or two) on a synthetic task, its data and an example input.

    Each call returns a fresh copy, so tests may not affect one another.
    """
    model, x, y = _trained(name, n)
    return copy.deepcopy(model), (x, y), x[:1].clone()


def fragile_workload():  # -> autoshrink.workloads.Workload
    """The residual CNN with an activation outlier made on purpose, the float model unchanged (ReLU
    is homogeneous): a1's first channels 1000x larger, and a2 reads them 1000x smaller, so a2's
    per-tensor int8 input range rounds every other channel to zero. Labelled by its own answers."""
    from autoshrink.workloads import Workload

    model, (x, _), example = make_case("rescnn")
    with torch.no_grad():
        model.a1.weight[:4] *= 1000
        model.a1.bias[:4] *= 1000
        model.a2.weight[:, :4] /= 1000
        labels = model(x).argmax(1)
    return Workload("fragile", model, (x[:256], labels[:256]), (x[256:384], labels[256:384]), (x[384:], labels[384:]), example)


def float_layer_case():  # -> (autoshrink.artifact.Artifact, torch.Tensor)
    """An ONNX Runtime int8 artifact whose middle conv is kept in float between quantized ones,
    half its output channels 300x larger than the rest (one int8 scale for all of them would
    erase the small ones), and 96 inputs: the first 64 calibrated it."""
    from autoshrink.pipeline import compress
    from autoshrink.plan import Plan

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 1)).eval()  # fmt: skip
    with torch.no_grad():
        net[2].weight[:4] *= 300
    x = torch.randn(96, 3, 12, 12)
    art = compress(net, Plan(bits=8, runtime="onnxruntime", layer_bits=(("2", 32),)), train_data=(x[:64],),
                   example_input=x[:1])  # fmt: skip
    return art, x


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


@pytest.fixture(params=sorted(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[str, nn.Module, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    return (request.param, *make_case(request.param))


@pytest.fixture
def fast_hardware() -> HardwareProfile:
    return HardwareProfile(warmup_s=0.0, repeats=10, energy_s=0.2)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows where two logit tensors pick the same class."""
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def count_calibrations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The graphs ONNX Runtime calibrates from now on (its ``create_calibrator`` calls), counted."""
    import importlib

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not its function
    calibrations: list[Any] = []
    original = ort_quantize.create_calibrator

    def counted(*args: Any, **kwargs: Any) -> Any:
        calibrations.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(ort_quantize, "create_calibrator", counted)
    return calibrations
