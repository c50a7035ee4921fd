"""The retraining-free benchmark's rows: every EfficientNet-Lite gets the same plans, MiniLM more."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.retraining_free import _rows


def test_every_lite_variant_gets_the_same_rows_without_the_0_3_prunings() -> None:
    lite1, lite2, minilm = ([label for label, _ in _rows(m)] for m in ("lite1", "lite2", "minilm"))
    assert lite1 == lite2
    assert not any("prune 0.3" in label for label in lite2)
    assert [label for label in minilm if "prune 0.3" not in label] == lite2
    assert any("prune 0.3" in label for label in minilm)


def test_removed_counts_the_heads_and_ffn_neurons_a_pruned_encoder_lost() -> None:
    import copy

    from transformers import BertConfig, BertModel

    from autoshrink.outputs import single_output
    from autoshrink.techniques import Context, Stage, apply
    from autoshrink.techniques.prune import PruneConfig
    from benchmarks.retraining_free import removed
    from tests.transformer_models import FFN, HEADS, HIDDEN, LAYERS, VOCAB

    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=64)  # fmt: skip
    ids = {"input_ids": torch.randint(0, VOCAB, (2, 16))}
    model = single_output(BertModel(config).eval(), ids)
    assert removed(model, copy.deepcopy(model)) == f"heads 0/{HEADS * LAYERS}, FFN neurons 0/{FFN * LAYERS}"
    context = Context(teacher=model, train_data=(ids["input_ids"],), example_input=ids, cache={})
    pruned = apply(Stage(copy.deepcopy(model)), PruneConfig(0.5, reconstruct=False), context).module
    text = removed(model, pruned)
    assert f"heads {HEADS * LAYERS // 2}/{HEADS * LAYERS}" in text and f"FFN neurons {FFN * LAYERS // 2}/" in text
    assert text.startswith("params ")
    from autoshrink.techniques.lowrank import LowRankConfig  # factorized layers are pairs: the run crashed on them once

    factorized = apply(Stage(copy.deepcopy(model)), LowRankConfig(0.5), context).module
    assert any(isinstance(m, torch.nn.Sequential) for n, m in factorized.named_modules() if n.endswith("intermediate.dense"))
    assert f"heads 0/{HEADS * LAYERS}, FFN neurons 0/{FFN * LAYERS}" in removed(model, factorized)


def test_a_row_that_fails_to_build_is_reported_failed_and_a_cell_that_cannot_be_worked_out_ends_nothing(
    tmp_path: Path,
) -> None:
    import math

    from benchmarks._report import Report
    from benchmarks.retraining_free import Row, _annotation, write

    failed = Row.failed("m", "prune 0.2", 1.04, RuntimeError("structured pruning failed: boom"))  # what run_model writes
    assert failed.removed == "" and math.isnan(failed.score)
    ok = Row("m", "int8", 0.9, 5.0, 1.2, 2.0, removed="params 0%")
    classifier = Row("c", "int8", 0.8, 5.0, 1.2, 2.0, stable=0.85)
    text = write([failed, ok, classifier], Report("retraining-free", tmp_path)).read_text()
    assert "| m | prune 0.2 | failed: structured pruning failed: boom | | | | | 1.0 | |" in text
    assert "| m | int8 | 0.9 |  | 5.0 | 1.2 | 1.00x | 2.0 | params 0% |" in text
    assert "| c | int8 | 0.8 | 0.85 | 5.0 | 1.2 | 1.00x | 2.0 |  |" in text
    assert _annotation(torch.nn.Linear(2, 2), object()).startswith("not worked out: AttributeError")


def test_removed_counts_the_multiply_adds_a_pruned_cnn_lost_where_given_an_input() -> None:
    from torch import nn

    from benchmarks.retraining_free import removed

    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))
    student = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))  # half the inner width
    x = torch.randn(1, 3, 8, 8)
    # multiply-adds per position: 27*16 + 144*8 = 1584 before, 27*8 + 72*8 = 792 after; parameters lose as much
    assert removed(teacher, student, x) == "params 50%, MACs 50%"
    assert removed(teacher, student) == "params 50%"  # no input, no count


def test_the_cnn_verdict_names_a_row_that_meets_the_target_and_otherwise_the_closest(tmp_path: Path) -> None:
    from benchmarks._report import Report
    from benchmarks.retraining_free import Row, write

    model = "Lite (top-1 agreement)"
    int8 = Row(model, "int8", 0.9, 5.0, 6.5, 2.0)
    slow_good = Row(model, "prune 0.1 x", 0.95, 4.0, 6.0, 2.0)
    fast_bad = Row(model, "prune 0.3 x", 0.5, 3.0, 4.0, 2.0)  # 1.625x int8's speed
    text = write([int8, slow_good, fast_bad], Report("retraining-free", tmp_path)).read_text()
    assert "| prune 0.3 x | 0.5 |  | 3.0 | 4.0 | 1.62x |" in text
    assert (f"- {model}: **target not met**: no pruned or factorized row reaches >= 1.3x int8's speed at >= 0.9 "
            "agreement; the best at >= 1.3x: prune 0.3 x, 0.5 at 1.62x; the best agreement: prune 0.1 x, 0.95 at 1.08x.") in text
    fast_good = Row(model, "rank 0.5 y", 0.91, 3.0, 5.0, 2.0)  # exactly 1.3x
    text = write([int8, slow_good, fast_good], Report("retraining-free", tmp_path)).read_text()
    assert f"- {model}: **target met** (>= 1.3x int8's speed at >= 0.9): rank 0.5 y." in text
    minilm = Row("MiniLM (cosine)", "int8", 0.99, 5.0, 6.5, 2.0)
    assert "**target" not in write([minilm], Report("retraining-free", tmp_path)).read_text()


def test_removed_counts_the_multiply_adds_of_convolutions_that_pad_themselves() -> None:
    """EfficientNet-Lite's convolutions are a subclass that pads first; torch-pruning's counter
    passed over them (Lite1 low rank read as 13 times the multiply-adds)."""
    from torch import nn

    from benchmarks.retraining_free import removed
    from tests.conftest import SamePadConv

    # the student's layers are plain convolutions, as a factorized layer's are
    teacher = nn.Sequential(SamePadConv(3, 16, 2, stride=2), nn.ReLU(), nn.Conv2d(16, 8, 1))
    student = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 1))  # half the inner width
    x = torch.randn(1, 3, 8, 8)
    # 4x4 output positions: 12*16 + 16*8 = 320 per position before, 12*8 + 8*8 = 160 after
    # (torch-pruning counted 128 before, the subclass passed over: "MACs -21%")
    assert removed(teacher, student, x) == "params 49%, MACs 50%"


@pytest.mark.parametrize("models", ["foo", "lite1,lite9"])
def test_an_unknown_model_ends_the_command_with_one_line_before_anything_runs(
    models: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.retraining_free import main

    with pytest.raises(SystemExit) as exit_:
        main(["--models", models, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and not list(tmp_path.iterdir())  # no report written
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("one of lite0, lite1, lite2, minilm") and "--models: unknown" in err
