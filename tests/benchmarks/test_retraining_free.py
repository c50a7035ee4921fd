"""The retraining-free benchmark's rows: every EfficientNet-Lite gets the same plans, MiniLM more."""

from __future__ import annotations

from benchmarks.retraining_free import _rows


def test_every_lite_variant_gets_the_same_rows_without_the_0_3_prunings() -> None:
    lite1, lite2, minilm = ([label for label, _ in _rows(m)] for m in ("lite1", "lite2", "minilm"))
    assert lite1 == lite2
    assert not any("prune 0.3" in label for label in lite2)
    assert [label for label in minilm if "prune 0.3" not in label] == lite2
    assert any("prune 0.3" in label for label in minilm)
