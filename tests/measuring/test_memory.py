"""Peak memory is measured, not predicted: it follows what a model really holds."""

from __future__ import annotations

import math

import pytest
import torch

from autoshrink import HardwareProfile, Plan, compress
from autoshrink.config import Budget
from autoshrink.measuring.memory import artifact_peak_mb, measure_peak_memory, runtime_footprint_mb


def mlp(hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(512, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)).eval()


def test_peak_memory_grows_with_the_weights_a_model_holds() -> None:
    x = torch.randn(8, 512)
    small = compress(mlp(16), Plan(runtime="onnxruntime"), train_data=(x,), example_input=x[:1])
    big = compress(mlp(8192), Plan(runtime="onnxruntime"), train_data=(x,), example_input=x[:1])
    weights_mb = (big.size_bytes - small.size_bytes) / 1e6  # 16.9 MB more fp32 weights
    grown = artifact_peak_mb(big, x[:1]) - artifact_peak_mb(small, x[:1])
    assert weights_mb > 15
    assert 0.8 * weights_mb < grown < 4 * weights_mb  # the weights, as loaded, and no model of this process


def test_peak_memory_grows_with_the_activations_of_a_bigger_batch() -> None:
    x = torch.randn(4096, 512)
    art = compress(mlp(4096), Plan(runtime="onnxruntime"), train_data=(x[:8],), example_input=x[:1])
    # a batch of 4096 holds a 4096 x 4096 float hidden activation: 67 MB
    assert artifact_peak_mb(art, x) - artifact_peak_mb(art, x[:1]) > 50


def test_the_runtime_import_is_counted_and_torch_costs_more_than_onnx_runtime() -> None:
    x = torch.randn(8, 512)
    art = compress(mlp(16), Plan(runtime="onnxruntime"), train_data=(x,), example_input=x[:1])
    mem = measure_peak_memory(art, x[:1], HardwareProfile())
    assert mem.runtime_mb == runtime_footprint_mb("onnxruntime") > 5
    assert mem.peak_mb == pytest.approx(mem.runtime_mb + mem.artifact_mb)
    assert runtime_footprint_mb("torch") > mem.runtime_mb + 50


def test_a_memory_budget_is_a_limit_and_an_unmeasured_figure_misses_it() -> None:
    b = Budget(latency_ms=1.0, memory_mb=256)
    figures = {"latency_ms": 0.5, "size_bytes": 1e6, "energy_mj": 0.1, "accuracy": 0.9}
    assert b.violations(figures | {"peak_memory_mb": 200.0})["memory_mb"] == -56.0
    assert b.violations(figures | {"peak_memory_mb": 300.0})["memory_mb"] == 44.0
    assert b.violations(figures | {"peak_memory_mb": math.nan})["memory_mb"] == math.inf
    assert b.describe() == "latency <= 1.000 ms, peak memory <= 256 MB"


def test_a_system_without_vmhwm_is_probed_once_per_process(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from autoshrink.measuring import memory

    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    monkeypatch.setattr(memory, "_FOOTPRINTS", {})
    probes: list[object] = []

    def no_vmhwm(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        probes.append(args)
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="FileNotFoundError: /proc/self/status")

    monkeypatch.setattr(memory.subprocess, "run", no_vmhwm)
    assert math.isnan(runtime_footprint_mb("onnxruntime")) and math.isnan(runtime_footprint_mb("onnxruntime"))
    assert len(probes) == 1 and not (tmp_path / "runtime-footprints.json").exists()  # not kept as a measurement
