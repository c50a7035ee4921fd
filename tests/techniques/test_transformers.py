"""Transformer encoders called with token ids and an attention mask: every technique, alone and
combined, gives an artifact called the same way, returning the same shape and dtype, smaller,
and close to the original. Random weights (built from configs here) hide quantization error,
so the fidelity bounds guard against breakage; the trained model in ``bench transformers``
measures quality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autoshrink.artifact import load_artifact
from autoshrink.data import NamedTensorDataset
from autoshrink.measuring.accuracy import Fidelity
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.workloads import Workload, load
from autoshrink.workloads.huggingface import synthetic_tokens
from tests.transformer_models import FFN, HEADS, HIDDEN, LAYERS, SEQ, VOCAB, TokenTransformer, save_tiny_bert

PLANS = [
    # plan, lowest fidelity (mean cosine to the original outputs) accepted on random weights.
    # Structure changes are measured before any distillation; the combined plan distills
    # towards the teacher's outputs (random teachers do not fit the labels).
    (Plan(prune=0.5), 0.75),
    (Plan(rank=0.5), 0.75),
    (Plan(bits=8), 0.99),
    (Plan(bits=4), 0.95),
    (Plan(prune=0.5, rank=0.5, bits=8, distill_epochs=2), 0.85),
]


@pytest.fixture(scope="module")
def bert_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bert")
    return {
        "classifier": save_tiny_bert(root / "cls", classifier=True),
        "embedding": save_tiny_bert(root / "emb", classifier=False),
    }


def _workload(kind: str, folders: dict[str, Path]) -> Workload:
    if kind == "torch-encoder":
        x, y = synthetic_tokens(240, SEQ, VOCAB, 3)
        data = NamedTensorDataset(**x, labels=y)
        torch.manual_seed(0)
        model = TokenTransformer().eval()
        return Workload("enc", model, data, data, data, {k: v[:1] for k, v in x.items()}, family="transformer")
    return load(f"hf:{folders[kind]}", max_length=SEQ, samples=240)


def _inputs(wl: Workload, n: int = 16) -> dict[str, torch.Tensor]:
    return {k: v[:n] for k, v in wl.val.tensors.items() if k != "labels"}  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["classifier", "embedding", "torch-encoder"])
@pytest.mark.parametrize(("plan", "bound"), PLANS, ids=[p.label for p, _ in PLANS])
def test_every_technique_on_token_inputs(kind: str, plan: Plan, bound: float, bert_folders) -> None:
    wl = _workload(kind, bert_folders)
    x = _inputs(wl)
    base = compress(wl.model, Plan(), train_data=wl.train, example_input=wl.example_input)
    art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input, task="embedding")
    with torch.no_grad():
        reference = wl.model(**x)
    for out in (art(**x), art(x["input_ids"], x["attention_mask"]), art(x)):  # called as the model is
        assert out.shape == reference.shape and out.dtype == reference.dtype
    assert art.size_bytes < base.size_bytes, f"{plan.label} did not shrink the artifact"
    fidelity = float(torch.nn.functional.cosine_similarity(art(**x), reference, dim=-1).mean())
    assert fidelity >= bound, f"{kind} {plan.label}: fidelity {fidelity:.4f} < {bound}"
    assert art.spec.dtypes == ("int64", "int64") and art.spec.names == ("input_ids", "attention_mask")


@pytest.mark.parametrize("method", ["uniform", "sensitivity"])
def test_heads_pruning_removes_whole_heads(bert_folders, method: str) -> None:
    wl = _workload("classifier", bert_folders)
    ratio = 0.5 if method == "uniform" else 0.3  # (from half up, every group loses the ratio)
    art = compress(wl.model, Plan(prune=ratio, prune_method=method), train_data=wl.train, example_input=wl.example_input)
    bert = art.torch_module.classifier.bert
    head_size = HIDDEN // HEADS
    heads = []
    for layer in bert.encoder.layer:
        attn = layer.attention.self
        heads.append(attn.num_attention_heads)
        width = attn.num_attention_heads * head_size
        assert attn.query.out_features == attn.key.out_features == attn.value.out_features == width
        assert layer.attention.output.dense.in_features == width  # the output projection follows
        assert layer.attention.output.dense.out_features == HIDDEN  # the residual stream is kept
        if method == "uniform":
            assert layer.intermediate.dense.out_features == FFN // 2
    report = next(r for r in art.reports if r.technique == "prune")
    if method == "uniform":
        assert heads == [HEADS // 2] * LAYERS and sum("heads 4 -> 2" in c for c in report.changed) == 2
    else:  # each block loses what its measured sensitivity allows; the model as much as uniform
        assert all(1 <= h <= HEADS for h in heads) and sum(heads) < HEADS * LAYERS, heads
        assert set(report.details["sensitivity"]) >= {f"classifier.bert.encoder.layer.{i}.attention.self.value" for i in range(LAYERS)}


def test_pruned_heads_are_whole_heads_of_the_original(bert_folders) -> None:
    # The kept query rows are whole blocks of head_size consecutive rows of the original.
    wl = _workload("embedding", bert_folders)
    original = wl.model.encoder.encoder.layer[0].attention.self.query.weight
    art = compress(wl.model, Plan(prune=0.5), train_data=wl.train, example_input=wl.example_input)
    pruned = art.torch_module.encoder.encoder.layer[0].attention.self.query.weight
    size = HIDDEN // HEADS
    blocks = [pruned[i : i + size] for i in range(0, pruned.shape[0], size)]
    heads = [h for h in range(HEADS) if any(torch.equal(b, original[h * size : (h + 1) * size]) for b in blocks)]
    assert len(heads) == len(blocks) < HEADS  # every kept block is a whole original head


def test_nn_multihead_attention_is_kept_whole_and_reported() -> None:
    wl = _workload("torch-encoder", {})
    art = compress(wl.model, Plan(prune=0.5, prune_method="uniform"), train_data=wl.train, example_input=wl.example_input)
    layer = art.torch_module.encoder.layers[0]
    assert layer.self_attn.embed_dim == HIDDEN and layer.linear1.out_features == FFN // 2
    assert any("MultiheadAttention" in v for v in art.skipped.values())


class OddAttention(nn.Module):
    """Reshapes by heads, but not in a form autoshrink knows."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, 32))


class Hybrid(nn.Module):
    """A convolution, an attention block autoshrink cannot prune, an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 32, 3, padding=1)
        self.attn = OddAttention()
        self.mlp = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).transpose(1, 2)
        h = h + self.attn(h)
        return self.head((h + self.mlp(h)).mean(1))


def test_unknown_attention_is_left_whole_instead_of_failing_the_plan() -> None:
    x = torch.randn(32, 8, 10)
    art = compress(Hybrid().eval(), Plan(prune=0.5), train_data=(x,), example_input=x[:1])
    assert art.torch_module.attn.qkv.out_features == 96  # heads intact
    assert art.torch_module.mlp[0].out_features == 64  # the rest pruned
    assert "no head-pruning rule" in art.skipped["prune: attn"]


def test_token_artifacts_round_trip_and_keep_int64(bert_folders, tmp_path: Path) -> None:
    wl = _workload("embedding", bert_folders)
    x = _inputs(wl)
    for plan in (Plan(), Plan(bits=8)):
        art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input)
        loaded = load_artifact(art.save(tmp_path / f"m{art.suffix}"))
        assert loaded.spec == art.spec
        torch.testing.assert_close(loaded(**x), art(**x))
    onnx_inputs = {i.name: i.type.tensor_type.elem_type for i in art.onnx_model.graph.input}
    assert onnx_inputs == {"input_ids": 7, "attention_mask": 7}  # INT64 in the graph too
    assert all(v.dtype.kind == "i" for v in art.feed(x).values())
    with pytest.raises(TypeError, match=r"missing input\(s\) \['attention_mask'\]"):
        art(input_ids=x["input_ids"])
    with pytest.raises(TypeError, match="unknown input 'token_type_ids'"):
        art(**x, token_type_ids=x["input_ids"])


def test_sequence_length_is_dynamic(bert_folders) -> None:
    wl = _workload("embedding", bert_folders)
    art = compress(wl.model, Plan(bits=8), train_data=wl.train, example_input=wl.example_input)
    for length in (5, SEQ, 40):
        ids = torch.randint(5, VOCAB, (3, length))
        mask = torch.ones_like(ids)
        with torch.no_grad():
            ref = wl.model(input_ids=ids, attention_mask=mask)
        assert art(input_ids=ids, attention_mask=mask).shape == ref.shape == (3, HIDDEN)


def test_embedding_workload_is_scored_by_fidelity(bert_folders) -> None:
    wl = _workload("embedding", bert_folders)
    assert isinstance(wl.evaluate, Fidelity) and wl.task == "embedding"
    art = compress(wl.model, Plan(), train_data=wl.train, example_input=wl.example_input)
    assert wl.evaluate(art, wl.val) == pytest.approx(1.0, abs=1e-5)


def test_distillation_matches_embeddings_without_labels(bert_folders) -> None:
    wl = _workload("embedding", bert_folders)
    art = compress(wl.model, Plan(prune=0.5, distill_epochs=3), train_data=wl.train,
                   example_input=wl.example_input, task="embedding")  # fmt: skip
    report = next(r for r in art.reports if r.technique == "distill")
    assert report.details["task"] == "embedding"
    losses = report.details["loss_per_epoch"]
    assert losses[-1] < losses[0]


def test_int8_recipe_for_transformers_is_dynamic_per_channel(bert_folders) -> None:
    wl = _workload("classifier", bert_folders)
    art = compress(wl.model, Plan(bits=8), train_data=wl.train, example_input=wl.example_input)
    report = next(r for r in art.reports if r.technique == "quantize")
    assert report.details["scheme"] == "dynamic"
    ops = [n.op_type for n in art.onnx_model.graph.node]
    assert ops.count("MatMulInteger") >= 2 * 6  # q, k, v, o, FFN in and out, per layer
    # the embedding tables are int8 too: they are a third of a small encoder's bytes
    int8_tables = {t.name for t in art.onnx_model.graph.initializer if t.data_type in (2, 3) and len(t.dims) == 2}
    lookups = [n for n in art.onnx_model.graph.node if n.op_type == "Gather" and n.input[0] in int8_tables]
    assert any("word_embeddings" in n.input[0] for n in lookups)
    assert report.details["layers_by_precision"].get("fp32", 0) == 0
