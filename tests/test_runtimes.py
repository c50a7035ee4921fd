"""Runtimes as a knob: every runtime's artifact round-trips and agrees with torch, runs only the
precisions it has, and one that is not installed is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink.artifact import load_artifact
from autoshrink.config import Budget, ConfigError, HardwareProfile
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.space import SearchSpace
from tests.conftest import agreement, make_case

RUNTIMES = [
    # plan, how close to torch: max abs difference for float, arg-max agreement for int8
    (Plan(), ("exact", 1e-5)),
    (Plan(runtime="onnxruntime"), ("exact", 1e-4)),
    (Plan(runtime="openvino"), ("exact", 1e-4)),
    (Plan(bits=8), ("agree", 0.9)),
    (Plan(bits=8, runtime="openvino"), ("agree", 0.9)),
]


@pytest.mark.parametrize(("plan", "bound"), RUNTIMES, ids=[p.label for p, _ in RUNTIMES])
def test_every_runtime_round_trips_and_agrees_with_torch(plan: Plan, bound, tmp_path: Path) -> None:
    model, (x, y), example = make_case("rescnn")
    art = compress(model, plan, train_data=(x, y), example_input=example)
    assert art.runtime == plan.resolved_runtime
    with torch.no_grad():
        reference = model(x[:64])
    out = art(x[:64])
    kind, limit = bound
    if kind == "exact":
        assert float((out - reference).abs().max()) <= limit
    else:
        assert agreement(out, reference) >= limit
    loaded = load_artifact(art.save(tmp_path / f"model{art.suffix}"))
    assert loaded.runtime == art.runtime and loaded.plan == plan and loaded.size_bytes == art.size_bytes
    torch.testing.assert_close(loaded(x[:64]), out)


def test_runtimes_run_only_the_precisions_they_have() -> None:
    with pytest.raises(ValueError, match=r"runtime='openvino' runs bits in \(32, 8\), got bits=4"):
        Plan(bits=4, runtime="openvino")
    with pytest.raises(ConfigError, match="no runtime of \\['torch'\\] runs 8-bit models"):
        SearchSpace(runtime=("torch",), bits=(32, 8))


def test_a_runtime_that_is_not_installed_is_a_clear_error_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from autoshrink.searching import search
    from tests.tiny import tiny_workload

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    hardware = HardwareProfile(warmup_s=0.0, repeats=5, energy_s=0.05, runtimes=("onnxruntime", "openvino"))
    with pytest.raises(ConfigError, match=r"names openvino, which is not installed here: pip install 'autoshrink\[openvino\]'"):
        search(tiny_workload(tmp_path), budget=Budget(latency_ms=1000.0), hardware=hardware, trials=2,
               experiment="ov", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # fmt: skip
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was opened
