from __future__ import annotations

import pytest
import torch
from torch import nn

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques.lowrank import LowRankConfig, factorize_conv, factorize_linear
from tests.conftest import SamePadConv, make_case


def test_full_rank_factorization_is_exact() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(2, 8, 9, 9)
    pair = factorize_conv(conv, rank=24)  # min(8*3, 16*3) = full rank
    torch.testing.assert_close(pair(x), conv(x), atol=1e-4, rtol=1e-4)
    lin = nn.Linear(12, 20)
    x = torch.randn(3, 12)
    torch.testing.assert_close(factorize_linear(lin, 12)(x), lin(x), atol=1e-4, rtol=1e-4)


def test_pair_is_thinner_and_shapes_are_spatial_split() -> None:
    conv = nn.Conv2d(32, 32, 3, padding=1)
    r = 24  # half the weights: 24 * (96 + 96) = 0.5 * 96 * 96
    pair = factorize_conv(conv, r)
    assert pair[0].kernel_size == (3, 1) and pair[1].kernel_size == (1, 3)
    assert sum(p.numel() for p in pair.parameters()) < sum(p.numel() for p in conv.parameters())


def test_lowrank_reports_depthwise_and_attention_as_skipped() -> None:
    model, data, example = make_case("depthwise")
    art = compress(model, Plan(rank=0.5), train_data=data, example_input=example)
    assert "grouped/depthwise" in art.skipped["lowrank: dw"]
    model, data, example = make_case("transformer")
    art = compress(model, Plan(rank=0.5), train_data=data, example_input=example)
    assert any("self_attn.out_proj" in k for k in art.skipped)
    assert isinstance(art.torch_module.encoder.layers[0].linear1, nn.Sequential)


def test_invalid_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        LowRankConfig(fraction=1.5)


def test_ranks_follow_each_layers_spectrum_within_the_budget() -> None:
    # Two layers of the same shape: one nearly rank-4, one full of independent directions.
    torch.manual_seed(0)
    low = nn.Linear(64, 64, bias=False)
    low.weight.data = torch.randn(64, 4) @ torch.randn(4, 64) + 0.01 * torch.randn(64, 64)
    full = nn.Linear(64, 64, bias=False)
    full.weight.data = torch.linalg.qr(torch.randn(64, 64))[0]
    model = nn.Sequential(low, nn.ReLU(), full, nn.ReLU(), nn.Linear(64, 3)).eval()
    x = torch.randn(32, 64)
    art = compress(model, Plan(rank=0.4), train_data=(x,), example_input=x[:1])
    net = art.torch_module
    rank_low, rank_full = net[0][0].out_features, net[2][0].out_features
    assert rank_low <= 6 < rank_full, (rank_low, rank_full)  # the easy layer gets a small rank
    assert "keeps 100% of its energy" in next(c for c in art.reports[0].changed if c.startswith("0 "))
    factorized = sum(p.numel() for i in (0, 2) for p in net[i].parameters())
    assert factorized <= 0.4 * 2 * 64 * 64


def test_low_rank_keeps_fidelity_better_where_it_matters() -> None:
    # Same budget: spending it by spectrum keeps the outputs closer than one rank for all.
    torch.manual_seed(0)
    low = nn.Linear(64, 64)
    low.weight.data = torch.randn(64, 2) @ torch.randn(2, 64) / 8
    full = nn.Linear(64, 64)
    model = nn.Sequential(low, nn.Tanh(), full, nn.Tanh(), nn.Linear(64, 3)).eval()
    x = torch.randn(256, 64)
    art = compress(model, Plan(rank=0.3), train_data=(x,), example_input=x[:1])
    uniform = nn.Sequential(factorize_linear(low, 9), nn.Tanh(), factorize_linear(full, 9), nn.Tanh(), model[4])
    with torch.no_grad():
        ref = model(x)
        err_ours = (art(x) - ref).pow(2).mean()
        err_uniform = (uniform(x) - ref).pow(2).mean()
    assert err_ours < err_uniform


def _anisotropic_inputs(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Inputs that live mostly in the same 8 directions of ``dim`` whatever the seed (of the
    samples), with very different scales."""
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(0)))[0][:, :8]
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(1, -1, 8)
    return (torch.randn(n, 8, generator=gen) * scales) @ basis.T + 0.01 * torch.randn(n, dim, generator=gen)


def test_the_activation_aware_split_keeps_the_outputs_the_inputs_excite() -> None:
    from autoshrink.techniques.lowrank import _cholesky, _whitened_split

    torch.manual_seed(0)
    layer = nn.Linear(64, 32, bias=False)
    fit, held_out = _anisotropic_inputs(512, 64, seed=1), _anisotropic_inputs(256, 64, seed=2)
    chol = _cholesky((fit.T @ fit).double() / len(fit))
    with torch.no_grad():
        ref = layer(held_out)
        errors = {}
        for method, pair in (("weight", factorize_linear(layer, 6)), ("activation", factorize_linear(layer, 6, chol))):
            errors[method] = float((pair(held_out) - ref).norm() / ref.norm())
    assert errors["activation"] < 0.2 * errors["weight"], errors  # the weight SVD spends rank on unused directions
    left, right = _whitened_split(layer.weight, chol, 64)  # full rank: exact
    torch.testing.assert_close(left @ right, layer.weight.detach(), atol=1e-4, rtol=1e-4)


def test_activation_aware_ranks_follow_what_each_layer_outputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    x = _anisotropic_inputs(300, 64)
    weight = compress(model, Plan(rank=0.4), train_data=(x,), example_input=x[:1])
    aware = compress(model, Plan(rank=0.4, rank_method="asvd"), train_data=(x,), example_input=x[:1])
    ranks = {name: aware.torch_module.get_submodule(name)[0].out_features for name in ("0", "2")}
    weight_ranks = {name: weight.torch_module.get_submodule(name)[0].out_features for name in ("0", "2")}
    assert ranks["0"] < weight_ranks["0"] and ranks != weight_ranks  # the first layer's inputs span 8 directions
    assert ranks["0"] != ranks["2"]
    report = aware.reports[0]
    assert report.details["method"] == "activation" and "output energy on the calibration inputs" in report.changed[0]
    with torch.no_grad():
        ref = model(x)
        assert (aware(x) - ref).norm() < (weight(x) - ref).norm()


def test_activation_aware_low_rank_on_cnns_and_encoders() -> None:
    model, data, example = make_case("rescnn")  # kxk convolutions: weight SVD, said so
    art = compress(model, Plan(rank=0.5, rank_method="asvd"), train_data=data, example_input=example)
    assert any("kxk" in why for why in art.reports[0].details["weight_svd"].values())
    model, data, example = make_case("depthwise")
    art = compress(model, Plan(rank=0.5, rank_method="asvd"), train_data=data, example_input=example)
    assert "grouped/depthwise" in art.skipped["lowrank: dw"]
    model, data, example = make_case("transformer")
    art = compress(model, Plan(rank=0.5, rank_method="asvd"), train_data=data, example_input=example)
    assert isinstance(art.torch_module.encoder.layers[0].linear1, nn.Sequential)
    assert not art.reports[0].details["weight_svd"]  # every Linear layer whitened


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="LowRankConfig.method must be one of"):
        LowRankConfig(0.5, method="fisher")


def test_a_conv_that_pads_in_its_own_forward_is_not_split_into_plain_convs() -> None:
    model = nn.Sequential(SamePadConv(3, 32, 3, stride=2), nn.ReLU(), SamePadConv(32, 32, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4)).eval()  # fmt: skip
    x = torch.randn(16, 3, 16, 16)
    art = compress(model, Plan(rank=0.5), train_data=(x,), example_input=x[:1])
    assert "computes its own forward" in art.skipped["lowrank: 0"]  # a plain pair would drop its padding
    assert isinstance(art.torch_module[2], nn.Sequential)  # a 1x1 one pads nothing: factorized
