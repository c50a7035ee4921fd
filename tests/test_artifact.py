from __future__ import annotations

import torch

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from tests.conftest import make_case


def test_repr_is_one_short_line_even_for_onnx_artifacts() -> None:
    # print(load_best(...)) used to print the whole ONNX payload (450 kB for digits).
    model, data, example = make_case("rescnn")
    for plan in (Plan(), Plan(prune=0.3, bits=8)):
        art = compress(model, plan, train_data=data, example_input=example)
        text = repr(art)
        assert "\n" not in text and len(text) < 160, text
        assert plan.label in text and art.runtime in text and f"{art.size_bytes:,} bytes" in text
    assert str(torch.nn.Linear(2, 2)) != ""  # sanity: torch reprs untouched
