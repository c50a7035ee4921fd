"""``hf:<path>`` workloads from local files: classifier and embedding model, data, errors, a search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoshrink.config import Budget, ConfigError
from autoshrink.searching import load_best, search
from autoshrink.space import SearchSpace
from autoshrink.workloads import load
from tests.tiny import HW
from tests.transformer_models import SEQ, save_tiny_bert


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"cls": save_tiny_bert(root / "cls", classifier=True), "emb": save_tiny_bert(root / "emb", classifier=False)}


def test_classifier_and_embedding_workloads(folders) -> None:
    cls = load(f"hf:{folders['cls']}", max_length=SEQ, samples=100)
    assert cls.task == "classification" and cls.evaluate is None and cls.family == "transformer"
    assert cls.model(**cls.example_input).shape == (1, 3)
    emb = load(f"hf:{folders['emb']}", max_length=SEQ, samples=100)
    assert emb.task == "embedding" and emb.evaluate.__name__ == "fidelity"
    assert emb.model(**emb.example_input).shape == (1, 64)
    assert {k: v.dtype for k, v in emb.example_input.items()} == {"input_ids": torch.int64, "attention_mask": torch.int64}


def test_a_sentence_transformers_folder_that_normalizes_serves_unit_vectors(folders, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(folders["emb"], folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]  # fmt: skip
    (folder / "modules.json").write_text(json.dumps(modules))
    plain = load(f"hf:{folder}", max_length=SEQ, samples=100)
    assert not torch.allclose(plain.model(**plain.example_input).norm(dim=-1), torch.ones(1))
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    unit = load(f"hf:{folder}", max_length=SEQ, samples=100)
    assert torch.allclose(unit.model(**unit.example_input).norm(dim=-1), torch.ones(1), atol=1e-5)


def test_text_and_jsonl_data_through_the_models_tokenizer(folders, tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "sat", "ran"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folders["emb"])
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folders["cls"])
    text = tmp_path / "s.txt"
    text.write_text("\n".join(["a cat sat", "a dog ran", "the cat ran"] * 10))
    wl = load(f"hf:{folders['emb']}", data=f"text:{text}", max_length=8)
    assert len(wl.train) + len(wl.val) + len(wl.test) == 30
    assert wl.example_input["input_ids"][0, 0] == 2  # [CLS]
    rows = tmp_path / "d.jsonl"
    rows.write_text("\n".join(json.dumps({"text": t, "label": i % 3}) for i, t in enumerate(["a cat"] * 30)))
    wl = load(f"hf:{folders['cls']}", data=f"jsonl:{rows}", max_length=8)
    assert wl.train[0]["labels"].dtype == torch.int64


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("hf:/no/such/model", {}, "no Hugging Face model at '/no/such/model' in local files"),
        ("hf:{emb}", {"data": "squad"}, "unknown data 'squad'"),
        ("hf:{emb}", {"data": "text:/no/file.txt"}, "data file /no/file.txt does not exist"),
        ("hf:{emb}", {"task": "translation"}, "hf task must be one of"),
        ("hf:{emb}", {"samples": 2}, "too few to split"),
    ],
)
def test_mistakes(folders, spec: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(spec.format(emb=folders["emb"]), **options)


def test_transformers_stays_optional() -> None:
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "import autoshrink; from autoshrink.workloads import load\n"
        "try:\n    load('hf:whatever')\nexcept Exception as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'autoshrink[hf]'" in out.stdout


@pytest.mark.slow
def test_search_an_embedding_model_then_load_the_best(folders, tmp_path: Path) -> None:
    wl = load(f"hf:{folders['emb']}", max_length=SEQ, samples=120)
    space = SearchSpace(prune=(0.0, 0.5, 0.5), rank=("off",), bits=(32, 8), distill_epochs=(0,))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = search(wl, budget=Budget(latency_ms=1000.0, min_accuracy=0.9), space=space, trials=3,
                    experiment="emb", tracking_uri=uri, hardware=HW)  # fmt: skip
    assert result.n_complete == 3 and result.best is not None
    assert result.best.measurement.metric == "fidelity" and result.best.measurement.accuracy >= 0.9
    best = load_best("emb", tracking_uri=uri)
    x = {k: v[:4] for k, v in wl.test.tensors.items()}
    assert best(**x).shape == (4, 64)
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    served = mlflow.pyfunc.load_model("models:/autoshrink-emb@best")
    if best.runtime == "onnxruntime":
        out = served.predict({k: v.numpy() for k, v in x.items()})
        assert next(iter(out.values())).shape == (4, 64)


def test_activation_aware_low_rank_on_a_hugging_face_encoder(folders) -> None:
    from autoshrink import Plan, compress
    from autoshrink.measuring.accuracy import score

    emb = load(f"hf:{folders['emb']}", max_length=SEQ, samples=100)
    art = compress(emb.model, Plan(rank=0.5, rank_method="asvd"), train_data=emb.train, example_input=emb.example_input)
    report = next(r for r in art.reports if r.technique == "lowrank")
    assert report.details["method"] == "activation" and any("query" in c for c in report.changed)
    assert 0.0 < score(art, emb.val, emb.evaluate) <= 1.0  # runs with token inputs, scored by fidelity
