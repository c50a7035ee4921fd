from __future__ import annotations

import pytest
import torch

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.techniques.prune import PruneConfig
from tests.conftest import make_case


def test_pruning_removes_channels_for_real() -> None:
    model, data, example = make_case("rescnn")
    art = compress(model, Plan(prune=0.5), train_data=data, example_input=example)
    pruned = art.torch_module
    assert pruned.a1.weight.shape == (16, 16, 3, 3)  # both its output and the residual input halve
    # the residual stream is pruned consistently: stem, a2 and the head's input agree
    assert pruned.stem[0].out_channels == pruned.a2.out_channels == 16
    assert pruned.head.in_features == pruned.b2.out_channels
    assert pruned.head.out_features == 10  # classes kept
    assert "head" in next(r for r in art.reports if r.technique == "prune").skipped


def test_transformer_prunes_ffn_but_not_attention() -> None:
    model, data, example = make_case("transformer")
    art = compress(model, Plan(prune=0.5), train_data=data, example_input=example)
    layer = art.torch_module.encoder.layers[0]
    assert layer.linear1.out_features == 128 and layer.linear2.in_features == 128
    assert layer.self_attn.embed_dim == 64
    skipped = art.skipped
    assert any("self_attn" in k for k in skipped)


def test_unknown_layers_are_sliced_along_channels_or_skipped_and_reported() -> None:
    model, data, example = make_case("custom")
    art = compress(model, Plan(prune=0.5), train_data=data, example_input=example)
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
