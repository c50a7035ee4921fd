"""`output_layers`: which layers produce the model's output (protected by every technique)."""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.techniques import output_layers
from tests.conftest import make_case


class Embedder(nn.Module):
    """The output is computed in forward (mean pooling): no layer produces it."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Dropout(0.1)) for _ in range(6)]
        )
        self.norm = nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return self.norm(x).mean(dim=1)


def test_no_output_layer_is_found_every_time_when_none_exists() -> None:
    # Freed intermediate tensors used to share an id() with the output: 40 calls gave
    # different answers (a Dropout, nothing).
    torch.manual_seed(0)
    model = Embedder().eval()
    x = torch.randn(1, 8, 64)
    answers = {tuple(type(m).__name__ for m in output_layers(model, x)) for _ in range(40)}
    assert answers == {()}


def test_the_classifier_head_is_found_every_time() -> None:
    model, _, example = make_case("transformer")
    answers = {tuple(id(m) for m in output_layers(model, example)) for _ in range(40)}
    assert answers == {(id(model.head),)}


def test_outputs_in_a_tuple_are_found() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.a, self.b = nn.Linear(8, 2), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.body(x))
            return self.a(h), self.b(h)

    model = TwoHeads().eval()
    assert output_layers(model, torch.randn(1, 4)) == [model.a, model.b]
