"""``hf:<path or cached id>`` workloads: Hugging Face encoders, from local files only.

Needs the optional ``transformers`` package (``pip install 'autoshrink[hf]'``). Nothing is
downloaded: ``path`` is a folder written by ``save_pretrained()`` or an id already in the local
Hugging Face cache. Two tasks:

* ``classification``: ``AutoModelForSequenceClassification``, logits out, top-1 accuracy;
* ``embedding`` (feature extraction): ``AutoModel`` mean-pooled over the attention mask into
  one vector per input (L2-normalised where the folder is a sentence-transformers model whose
  ``modules.json`` ends in ``Normalize``, as all-MiniLM-L6-v2's does), scored by fidelity (mean cosine similarity to the original model's
  vectors; no labels needed).

The model is called as ``model(input_ids=..., attention_mask=...)`` (int64, dynamic batch and
sequence). Data (``data``):

* ``synthetic``: token sequences drawn from the vocabulary, variable length, padded to
  ``max_length``, with a keyword task for labels (`synthetic_tokens`), so a classifier needs
  ``finetune_epochs`` to mean anything;
* ``text:PATH``: one text per line; ``jsonl:PATH``: objects with ``text`` (and ``label``),
  tokenized with the model's own tokenizer (local files).

Example:
    >>> from autoshrink.workloads import load
    >>> wl = load("hf:./my-bert", task="embedding", data="text:sentences.txt")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoshrink.config import ConfigError
from autoshrink.data import NamedTensorDataset
from autoshrink.workloads.base import Workload
from autoshrink.workloads.training import cached_finetune, finetune_key

TASKS = ("classification", "embedding")


class MeanPooled(nn.Module):
    """An encoder's last hidden states averaged over the attention mask: one vector per input,
    scaled to unit length with ``normalize`` (as sentence-transformers serves such models)."""

    def __init__(self, encoder: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=-1) if self.normalize else pooled


def normalizes(path: str | Path) -> bool:
    """Whether the sentence-transformers pipeline saved in ``path`` (its ``modules.json``) ends
    in a ``Normalize`` module, i.e. serves unit-length embeddings."""
    modules = Path(path) / "modules.json"
    try:
        listed = json.loads(modules.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(listed, list) and any(
        isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in listed
    )


class Logits(nn.Module):
    """A sequence classifier returning its logits tensor (not a ``ModelOutput``)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(input_ids=input_ids, attention_mask=attention_mask).logits


def huggingface_workload(
    path: str,
    *,
    task: str | None = None,
    data: str = "synthetic",
    max_length: int = 32,
    samples: int = 600,
    num_labels: int | None = None,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    finetune_epochs: int = 0,
    lr: float = 5e-4,
    seed: int = 0,
    verbose: bool = True,
) -> Workload:
    """A Hugging Face encoder and token data, ready to search (see the module doc).

    ``lr`` is the fine-tuning step size (5e-4 trains a small encoder from scratch; use about
    5e-5 for a pretrained one).
    """
    transformers = _transformers()
    config = _config(transformers, path)
    task = task or ("classification" if _is_classifier(config) or num_labels else "embedding")
    if task not in TASKS:
        raise ConfigError(f"hf task must be one of {TASKS}, got {task!r}")
    labels = num_labels or (getattr(config, "num_labels", 2) if task == "classification" else None)
    inputs, y = token_data(transformers, path, data, config.vocab_size, max_length=max_length,
                           samples=samples, num_labels=labels or 2, seed=seed)  # fmt: skip
    if task == "classification" and y is None:
        raise ConfigError(f"classification needs labels; {data!r} has none (use jsonl with a 'label' field)")
    if task == "embedding":
        y = None  # scored by fidelity to the original model: labels play no part
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a freshly initialized head is the same in every run
        if task == "classification":
            kwargs: dict[str, Any] = {"num_labels": labels} if labels else {}
            hf = transformers.AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True, ignore_mismatched_sizes=True, **kwargs
            )
            model: nn.Module = Logits(hf)
        else:
            encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True)
            model = MeanPooled(encoder, normalize=normalizes(path))
    train, val, test = _split(inputs, y, split, seed)
    if finetune_epochs:
        if task != "classification":
            raise ConfigError("finetune_epochs needs a classification task")
        key = finetune_key("hf", Path(path).resolve(), data, max_length, samples, labels, finetune_epochs, lr, seed)
        # transformers train stably at a smaller step than CNNs (2e-3 diverged from scratch here)
        model = cached_finetune(model, train, val, epochs=finetune_epochs, key=key, seed=seed, lr=lr, verbose=verbose)
    model.eval()
    return Workload(
        name=f"hf:{path}",
        model=model,
        train=train,
        val=val,
        test=test,
        example_input={k: v[:1] for k, v in val.tensors.items() if k != "labels"},
        family="transformer",
        task=task,
    )


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("hf: workloads need the transformers package: pip install 'autoshrink[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _config(transformers: Any, path: str) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"no Hugging Face model at {path!r} in local files, and autoshrink never downloads at run time: "
            "give a folder written by save_pretrained() or an id already in the Hugging Face cache "
            f"(~/.cache/huggingface/hub) ({str(exc).splitlines()[0][:200]})"
        ) from None


def _is_classifier(config: Any) -> bool:
    return any("SequenceClassification" in a for a in (getattr(config, "architectures", None) or []))


def synthetic_tokens(
    n: int, max_length: int, vocab_size: int, num_labels: int, seed: int = 0, first_id: int = 5
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A keyword task: token sequences of random length (at least half of ``max_length``,
    padded with 0) of filler tokens with three keywords at random places, two from the label's
    keyword set and one from another class's; the label is the class in the majority.

    Each class owns 8 keyword ids at the top of the vocabulary. A model has to find the
    keywords wherever they are and weigh them, which an attention encoder learns in minutes.

    Example:
        >>> inputs, y = synthetic_tokens(4, 16, 100, 3)
        >>> inputs["input_ids"].shape, inputs["input_ids"].dtype, y.tolist()
        (torch.Size([4, 16]), torch.int64, [2, 1, 2, 2])
    """
    keywords = 8
    top = vocab_size - num_labels * keywords
    if top <= first_id + 1:
        raise ConfigError(f"a vocabulary of {vocab_size} is too small for {num_labels} classes of keywords")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(first_id, top, (n, max_length), generator=gen)
    lengths = torch.randint(max(3, max_length // 2), max_length + 1, (n,), generator=gen)
    labels = torch.randint(0, num_labels, (n,), generator=gen)
    other = (labels + torch.randint(1, max(2, num_labels), (n,), generator=gen)) % num_labels
    for row in range(n):
        places = torch.randperm(int(lengths[row]), generator=gen)[:3]
        classes = (labels[row], labels[row], other[row])
        for place, cls in zip(places.tolist(), classes):
            ids[row, place] = top + int(cls) * keywords + int(torch.randint(0, keywords, (1,), generator=gen))
    mask = (torch.arange(max_length)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}, labels


def token_data(
    transformers: Any, path: str, spec: str, vocab_size: int, *, max_length: int, samples: int,
    num_labels: int, seed: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:  # fmt: skip
    """Token ids, attention masks and (when the data has them) labels for ``spec``."""
    if spec == "synthetic":
        return synthetic_tokens(samples, max_length, vocab_size, num_labels, seed)
    scheme, _, file = spec.partition(":")
    if scheme not in ("text", "jsonl") or not file:
        raise ConfigError(f"unknown data {spec!r} for a Hugging Face model; use synthetic, text:PATH or jsonl:PATH")
    p = Path(file)
    if not p.is_file():
        raise ConfigError(f"data file {p} does not exist")
    texts, labels = _read_texts(p, scheme)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path!r} has no tokenizer in local files: {str(exc).splitlines()[0][:200]}") from None
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"].long(), "attention_mask": encoded["attention_mask"].long()}
    return inputs, torch.tensor(labels) if labels is not None else None


def _read_texts(path: Path, scheme: str) -> tuple[list[str], list[int] | None]:
    if scheme == "text":
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return texts, None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows or any("text" not in r for r in rows):
        raise ConfigError(f"{path}: every line must be a JSON object with a 'text' field")
    labels = [int(r["label"]) for r in rows] if all("label" in r for r in rows) else None
    return [str(r["text"]) for r in rows], labels


def _split(
    inputs: dict[str, torch.Tensor], labels: torch.Tensor | None, split: tuple[float, float, float], seed: int
) -> tuple[NamedTensorDataset, NamedTensorDataset, NamedTensorDataset]:
    n = inputs["input_ids"].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(split[0] * n), int(split[1] * n)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    if min(len(p) for p in parts) == 0:
        raise ConfigError(f"{n} samples are too few to split {split} (a split would be empty)")
    out = []
    for idx in parts:
        tensors = {k: v[idx] for k, v in inputs.items()}
        if labels is not None:
            tensors["labels"] = labels[idx]
        out.append(NamedTensorDataset(**tensors))
    return out[0], out[1], out[2]
