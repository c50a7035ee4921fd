from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autoshrink.artifact import load_artifact
from autoshrink.pipeline import compress, technique_configs
from autoshrink.plan import Plan
from tests.conftest import make_case


@pytest.mark.parametrize("plan", [Plan(prune=0.5, rank=0.5), Plan(prune=0.3, bits=8)], ids=lambda p: p.label)
def test_save_and_load_round_trip(tmp_path: Path, plan: Plan) -> None:
    model, data, example = make_case("rescnn")
    art = compress(model, plan, train_data=data, example_input=example)
    path = art.save(tmp_path / f"model{art.suffix}")
    assert path.stat().st_size == art.size_bytes
    loaded = load_artifact(path)
    assert loaded.plan == plan and loaded.runtime == art.runtime
    assert loaded.num_parameters == art.num_parameters
    x = data[0][:8]
    torch.testing.assert_close(loaded(x), art(x))
    assert [r.technique for r in loaded.reports] == [r.technique for r in art.reports]


def test_compose_order() -> None:
    names = [type(c).__name__ for c in technique_configs(Plan(prune=0.2, rank=0.5, bits=4, distill_epochs=1))]
    assert names == ["PruneConfig", "LowRankConfig", "DistillConfig", "QuantizeConfig"]


def test_combined_plan_compounds() -> None:
    model, data, example = make_case("rescnn")
    sizes = {
        p.label: compress(model, p, train_data=data, example_input=example).size_bytes
        for p in (Plan(), Plan(prune=0.5), Plan(prune=0.5, rank=0.5), Plan(prune=0.5, rank=0.5, bits=8))
    }
    values = list(sizes.values())
    assert values == sorted(values, reverse=True), sizes
    assert values[0] / values[-1] > 8


def test_bad_arguments_are_clear() -> None:
    model, data, example = make_case("rescnn")
    with pytest.raises(TypeError, match="autoshrink.Plan"):
        compress(model, {"prune": 0.5}, train_data=data, example_input=example)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_input"):
        compress(model, Plan(), train_data=data, example_input=[1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Dataset"):
        compress(model, Plan(bits=8), train_data=42, example_input=example)  # type: ignore[arg-type]


def test_an_architecture_is_built_once_per_search_and_each_candidate_gets_its_own_copy(monkeypatch) -> None:
    from autoshrink import pipeline
    from autoshrink.techniques.prune import PruneConfig

    calls: list[str] = []
    real = pipeline.run_techniques

    def counting(stage, configs, context):
        calls.extend(type(c).__name__ for c in configs)
        return real(stage, configs, context)

    monkeypatch.setattr(pipeline, "run_techniques", counting)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    data, cache = (torch.randn(64, 16),), {}
    common = {"train_data": data, "example_input": data[0][:1], "cache": cache}
    fp32 = compress(net, Plan(prune=0.5), **common)
    distilled = compress(net, Plan(prune=0.5, distill_epochs=1), **common)
    int8 = compress(net, Plan(prune=0.5, bits=8), **common)
    assert calls.count("PruneConfig") == 1  # three candidates of one architecture: pruned once
    assert fp32.num_parameters == distilled.num_parameters == int8.num_parameters
    x = torch.randn(8, 16)
    assert not torch.equal(fp32(x), distilled(x))  # distillation changed its own copy, not the kept one
    assert torch.equal(fp32(x), compress(net, Plan(prune=0.5), **common)(x))
    compress(net, Plan(prune=0.3), **common)
    assert calls.count("PruneConfig") == 2  # another architecture is built
    for ratio in (0.1, 0.2, 0.4, 0.6):
        pipeline.architecture([PruneConfig(ratio=ratio)], pipeline.prepare(net, train_data=data, example_input=x, cache=cache))
    assert len(cache["architectures"]) == pipeline.KEPT_ARCHITECTURES  # the oldest are let go
