"""A tiny workload that searches in seconds, as a Python object and as a file a user would write."""

from __future__ import annotations

from pathlib import Path

from autoshrink.config import HardwareProfile
from autoshrink.space import SearchSpace
from autoshrink.workloads import Workload

# What a user's own workload file looks like: a function returning a Workload.
WORKLOAD_FILE = '''
import torch
from torch import nn

from autoshrink.workloads import Workload


def tiny(n: int = 192, classes: int = 4, evaluate=None) -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes),
    ).eval()
    x = torch.randn(n, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels: the model's own answers, so the baseline scores 1.0
    a, b = n // 2, 3 * n // 4
    return Workload("tiny", model, (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:]), x[:1], evaluate=evaluate)


def not_a_workload():
    return {"model": None}
'''

SPACE = SearchSpace(prune=(0.0, 0.3, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0,))
SPACE_YAML = "prune: {low: 0.0, high: 0.3, step: 0.3}\nrank: [off]\nbits: [32, 8]\ndistill_epochs: [0]\n"
HW = HardwareProfile(warmup_s=0.0, repeats=5, energy_s=0.05)
HW_YAML = "warmup_s: 0.0\nrepeats: 5\nenergy_s: 0.05\n"


def write_files(folder: Path) -> dict[str, Path]:
    """The workload file, a small space and a fast hardware profile, written into ``folder``."""
    files = {"workload": folder / "my_workload.py", "space": folder / "space.yaml", "hardware": folder / "hw.yaml"}
    files["workload"].write_text(WORKLOAD_FILE)
    files["space"].write_text(SPACE_YAML)
    files["hardware"].write_text(HW_YAML)
    return files


def tiny_workload(folder: Path, **options: object) -> Workload:
    from autoshrink import workloads

    path = write_files(folder)["workload"]
    return workloads.load(f"{path}:tiny", **options)
