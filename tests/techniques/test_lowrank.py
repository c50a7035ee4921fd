from __future__ import annotations

import pytest
import torch
from torch import nn

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques.lowrank import LowRankConfig, factorize_conv, factorize_linear, rank_for
from tests.conftest import make_case


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
    r = rank_for(32 * 3, 32 * 3, 0.5)
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
