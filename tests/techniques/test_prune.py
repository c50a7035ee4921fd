from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques.prune import PruneConfig
from tests.conftest import make_case


def test_pruning_removes_channels_for_real() -> None:
    model, data, example = make_case("rescnn")
    art = compress(model, Plan(prune=0.5, prune_method="uniform"), train_data=data, example_input=example)
    pruned = art.torch_module
    assert pruned.a1.weight.shape == (16, 16, 3, 3)  # both its output and the residual input halve
    # the residual stream is pruned consistently: stem, a2 and the head's input agree
    assert pruned.stem[0].out_channels == pruned.a2.out_channels == 16
    assert pruned.head.in_features == pruned.b2.out_channels
    assert pruned.head.out_features == 10  # classes kept
    assert "head" in next(r for r in art.reports if r.technique == "prune").skipped


def test_transformer_prunes_ffn_but_not_attention() -> None:
    model, data, example = make_case("transformer")
    art = compress(model, Plan(prune=0.5, prune_method="uniform"), train_data=data, example_input=example)
    layer = art.torch_module.encoder.layers[0]
    assert layer.linear1.out_features == 128 and layer.linear2.in_features == 128
    assert layer.self_attn.embed_dim == 64
    skipped = art.skipped
    assert any("self_attn" in k for k in skipped)


def test_unknown_layers_are_sliced_along_channels_or_skipped_and_reported() -> None:
    model, data, example = make_case("custom")
    art = compress(model, Plan(prune=0.5, prune_method="uniform"), train_data=data, example_input=example)
    module = art.torch_module
    # a per-channel parameter (layer scale) is sliced with the channels it scales
    assert module.custom.scale.numel() == module.conv1.out_channels == 16
    # a parameter with no channel dimension cannot be sliced: left whole, and reported
    assert module.spatial.bias.shape == (8, 8)
    assert "no channel dimension" in art.skipped["prune: spatial.bias"]
    assert art(example).shape == (1, 10)


def test_a_plan_that_prunes_nothing_fails_instead_of_passing_as_compressed() -> None:
    from autoshrink.techniques import CompressionError

    class OnlyAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.attn(x, x, x)[0].mean(1))

    x = torch.randn(4, 5, 16)
    with pytest.raises(CompressionError, match="removed nothing"):
        compress(OnlyAttention().eval(), Plan(prune=0.5), train_data=(x,), example_input=x[:1])


def test_invalid_ratio() -> None:
    with pytest.raises(ValueError, match="ratio"):
        PruneConfig(ratio=1.0)


def test_depthwise_groups_stay_consistent() -> None:
    model, data, example = make_case("depthwise")
    pruned = compress(model, Plan(prune=0.5), train_data=data, example_input=example).torch_module
    assert pruned.dw.groups == pruned.dw.in_channels == pruned.dw.out_channels == pruned.expand.out_channels
    assert pruned.dw.in_channels < 96
    assert torch.isfinite(pruned(example)).all()


def test_reconstruction_refits_the_layers_that_lost_inputs_and_the_model_keeps_its_answers() -> None:
    from autoshrink.techniques.prune import PruneConfig

    model, (x, y), example = make_case("rescnn")
    plain = compress(model, Plan(), train_data=(x[:256],), example_input=example)  # the teacher's answers

    def pruned(reconstruct: bool) -> tuple[torch.Tensor, dict]:
        from autoshrink.techniques import Context, Stage, apply

        stage = apply(
            Stage(copy.deepcopy(model)), PruneConfig(ratio=0.5, reconstruct=reconstruct),
            Context(teacher=model, train_data=(x[:256],), example_input=example),
        )  # fmt: skip
        with torch.no_grad():
            return stage.module.eval()(x[256:]), stage.reports[-1].details

    reference = plain(x[256:])
    without, _ = pruned(False)
    with_it, details = pruned(True)
    errors = details["reconstruction"]
    assert {"a1", "b1", "head"} <= set(errors)  # consumers of pruned channels, in forward order
    assert all(after <= before for before, after in errors.values()), errors  # a refit never makes a layer worse
    assert errors["a1"][1] < 0.25 * errors["a1"][0] and errors["b1"][1] < 0.5 * errors["b1"][0], errors
    err = lambda out: float((out - reference).norm() / reference.norm())  # noqa: E731
    assert err(with_it) < 0.5 * err(without)  # on inputs it was not fitted on
    agree = lambda out: float((out.argmax(1) == reference.argmax(1)).float().mean())  # noqa: E731
    assert agree(with_it) > agree(without)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_the_ratio_is_met_over_the_model_and_global_allocation_differs_by_layer(allocation: str) -> None:
    from autoshrink.techniques import Context, Stage, apply
    from autoshrink.techniques.prune import PruneConfig

    model, (x, _), example = make_case("rescnn")
    stage = apply(
        Stage(copy.deepcopy(model)), PruneConfig(ratio=0.5, allocation=allocation, reconstruct=False),
        Context(teacher=model, train_data=(x[:64],), example_input=example),
    )  # fmt: skip
    ratios = stage.reports[-1].details["layer_ratios"]
    widths = {n: model.get_submodule(n).weight.shape[0] for n in ratios}
    removed = sum(ratios[n] * widths[n] for n in ratios) / sum(widths.values())
    assert abs(removed - 0.5) <= 0.1, ratios  # the plan's share of the prunable channels (rounded to 8s)
    if allocation == "uniform":
        assert len(set(ratios.values())) == 1, ratios  # one share for every group
    else:
        assert len(set(ratios.values())) > 1, ratios  # the least important groups lose more, not one share for all


def test_residual_streams_are_kept_whole_unless_asked_and_said_so() -> None:
    from autoshrink.techniques import Context, Stage, apply

    model, (x, _), example = make_case("rescnn")

    def pruned(keep: bool) -> Stage:
        return apply(
            Stage(copy.deepcopy(model)), PruneConfig(ratio=0.5, reconstruct=False, keep_streams=keep),
            Context(teacher=model, train_data=(x[:64],), example_input=example),
        )  # fmt: skip

    kept, cut = pruned(True), pruned(False)
    writers = {"stem.0", "a2", "b2", "proj"}  # their outputs are added: one stream
    assert set(kept.reports[-1].details["layer_ratios"]) == {"a1", "b1"}  # only widths one layer writes
    assert all("residual stream" in kept.reports[-1].skipped[n] for n in writers)
    assert kept.module.stem[0].out_channels == model.stem[0].out_channels and kept.module.a1.out_channels < model.a1.out_channels
    assert writers <= set(cut.reports[-1].details["layer_ratios"])  # asked: the stream is cut with the rest
    assert cut.reports[-1].details["params_after"] < kept.reports[-1].details["params_after"]


def test_a_refit_with_more_unknowns_than_rows_is_judged_on_held_out_inputs_and_undone() -> None:
    from autoshrink.techniques._reconstruct import reconstruct

    torch.manual_seed(0)  # a head after pooling: 196 unknowns per output, 32 rows to fit them
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 200), torch.nn.ReLU(), torch.nn.Linear(200, 4))
    student = torch.nn.Sequential(torch.nn.Linear(8, 195), torch.nn.ReLU(), torch.nn.Linear(195, 4))
    with torch.no_grad():  # 5 hidden units pruned
        student[0].weight.copy_(teacher[0].weight[:195]), student[0].bias.copy_(teacher[0].bias[:195])
        student[2].weight.copy_(teacher[2].weight[:, :195]), student[2].bias.copy_(teacher[2].bias)
    kept = student[2].weight.clone()
    before, after = reconstruct(student, teacher, ["2"], {}, torch.randn(64, 8))["2"]
    # Judged on the batch it was fitted on, the refit looked perfect (error 0.0002) and was kept.
    assert after == before > 0.05 and torch.equal(student[2].weight, kept)


class _TwoBranches(torch.nn.Module):
    """Two hidden groups of 64 units read by one head; the head reads ``b`` with weights 10x as
    large, so removing ``b``'s units changes the output far more than removing ``a``'s."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.head = torch.nn.Linear(16, 64), torch.nn.Linear(16, 64), torch.nn.Linear(128, 4)
        with torch.no_grad():
            self.head.weight[:, 64:] *= 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x).relu(), self.b(x).relu()], 1))


def _pruned(model: torch.nn.Module, config: PruneConfig, x: torch.Tensor, cache: dict | None = None):  # noqa: ANN202
    from autoshrink.techniques import Context, Stage, apply

    context = Context(teacher=model, train_data=(x,), example_input=x[:1], cache=cache if cache is not None else {})
    return apply(Stage(copy.deepcopy(model)), config, context)


def test_sensitivity_allocation_spends_the_uniform_budget_on_the_robust_group_and_spares_the_fragile_one() -> None:
    model, x = _TwoBranches().eval(), torch.randn(256, 16)
    uniform = _pruned(model, PruneConfig(0.3, reconstruct=False), x)
    sensitive = _pruned(model, PruneConfig(0.3, allocation="sensitivity", reconstruct=False), x)
    details = sensitive.reports[-1].details
    assert details["sensitivity"]["b"] > 10 * details["sensitivity"]["a"], details["sensitivity"]  # the probe saw it
    ratios = details["layer_ratios"]
    assert ratios["a"] > 0.3 > ratios.get("b", 0.0), ratios  # per-layer shares, not one for all
    assert ratios["a"] <= 0.5 + 8 / 64, ratios  # none past what the probe measured (half), to the step above
    # the budget is the uniform plan's size: within one step (8 units of a group, 8 x 21 parameters)
    assert details["target_params"] == uniform.reports[-1].details["params_after"]
    assert abs(details["params_after"] - details["target_params"]) <= 8 * 21, details
    err = lambda m: float((m(x) - model(x)).norm() / model(x).norm())  # noqa: E731
    with torch.no_grad():
        assert err(sensitive.module) < 0.8 * err(uniform.module)  # 0.31 vs 0.41 (the fragile group lost 16 units, not 24)


def test_activation_importance_removes_the_units_the_data_never_excites() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    with torch.no_grad():  # units 0-7: large weights, but a bias that keeps them at 0 after the ReLU
        model[0].weight[:8] *= 10
        model[0].bias[:8] = -1000.0
    x = torch.randn(128, 8)
    by_weights = _pruned(model, PruneConfig(0.5, reconstruct=False), x).module
    by_activity = _pruned(model, PruneConfig(0.5, importance="activation", reconstruct=False), x).module
    with torch.no_grad():
        assert torch.allclose(by_activity(x), model(x), atol=1e-5)  # only dead units went
        assert not torch.allclose(by_weights(x), model(x), atol=1e-2)  # the largest weights were the dead ones


def test_the_sensitivity_probe_runs_once_per_architecture_and_search(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.techniques import _allocate

    calls: list[int] = []
    probe = _allocate._probe
    monkeypatch.setattr(_allocate, "_probe", lambda *a, **k: calls.append(1) or probe(*a, **k))
    model, x, cache = _TwoBranches().eval(), torch.randn(64, 16), {}
    for ratio in (0.2, 0.3):  # two candidates of one search share its cache
        _pruned(model, PruneConfig(ratio, allocation="sensitivity", reconstruct=False), x, cache)
    assert len(calls) == 1
    other = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    _pruned(other, PruneConfig(0.3, allocation="sensitivity", reconstruct=False), x, cache)
    assert len(calls) == 2  # another architecture is probed anew
    at_half = _pruned(model, PruneConfig(0.5, allocation="sensitivity", reconstruct=False), x, cache)
    assert len(calls) == 2 and at_half.reports[-1].details["allocation"].startswith("uniform")  # nothing to share out
    activation = PruneConfig(0.3, allocation="sensitivity", importance="activation", reconstruct=False)
    _pruned(model, activation, x, cache)
    assert len(calls) == 3  # another ranking of the channels: probed anew
    _pruned(model, replace(activation, reconstruct=True), x, cache)
    assert len(calls) == 4  # reconstruction gives back the removed channels' mean: the probe does too


def test_the_probe_gives_back_the_mean_that_reconstruction_restores_and_nothing_without_it() -> None:
    """Branch ``b`` is read with 10x the weights but carries a near-constant output: removing half
    of it takes away a large mean and little fluctuation. A reconstructed plan gets that mean back
    (the refitted bias), so its probe folds the mean into the head's bias and finds ``b`` cheap;
    without reconstruction nothing gives it back, and ``b`` is the fragile group."""
    model, x = _TwoBranches().eval(), torch.randn(128, 16)
    with torch.no_grad():
        model.b.weight.mul_(0.01)
        model.b.bias.fill_(5.0)
    activation = PruneConfig(0.3, allocation="sensitivity", importance="activation")
    folded = _pruned(model, activation, x).reports[-1].details["sensitivity"]
    bare = _pruned(model, replace(activation, reconstruct=False), x).reports[-1].details["sensitivity"]
    assert folded["b"] < folded["a"], folded
    assert bare["b"] > 100 * bare["a"], bare


def test_pruning_can_fold_the_removed_inputs_mean_into_the_consumers_bias() -> None:
    from autoshrink.techniques._importance import input_moments
    from autoshrink.techniques._pruner import make_pruner, step_keeping_track

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4, bias=False)).eval()
    x = torch.randn(256, 8)
    with torch.no_grad():
        reference = model(x).mean(0)
    means = {"2": model[1](model[0](x)).mean(0).detach()}  # what the consumer "2" receives, on average
    for fold in (None, means):
        pruned = copy.deepcopy(model)
        pruner, _ = make_pruner(pruned, x[:1], PruneConfig(0.5, importance="activation"), moments=input_moments(model, x, centered=True))
        step_keeping_track(pruner, {id(m): n for n, m in pruned.named_modules()}, fold)
        assert pruned[2].in_features == 8
        with torch.no_grad():
            kept_mean = torch.allclose(pruned(x).mean(0), reference, atol=1e-4)
        assert kept_mean is (fold is not None)  # given a bias that holds what the removed units gave on average


def test_a_probe_that_failed_fails_the_next_candidate_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.techniques import CompressionError, _allocate

    calls: list[int] = []

    def broken(*_a: object, **_k: object) -> None:
        calls.append(1)
        raise CompressionError("the pruning probe failed: a graph it cannot trace")

    monkeypatch.setattr(_allocate, "_probe", broken)
    model, x, cache = _TwoBranches().eval(), torch.randn(64, 16), {}
    for ratio in (0.2, 0.3):  # two candidates of one search
        with pytest.raises(CompressionError, match="cannot trace"):
            _pruned(model, PruneConfig(ratio, allocation="sensitivity", reconstruct=False), x, cache)
    assert calls == [1]  # the second did not probe again
