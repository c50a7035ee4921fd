"""Small transformer encoders with token inputs, built here from configs (random weights, no download)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

VOCAB, HIDDEN, HEADS, LAYERS, FFN, SEQ = 400, 64, 4, 2, 256, 16


def save_tiny_bert(folder: Path, *, classifier: bool, num_labels: int = 3) -> Path:
    """A tiny random BERT saved with save_pretrained (what ``hf:<folder>`` loads)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=64, num_labels=num_labels,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.save_pretrained(folder)
    return folder


class TokenTransformer(nn.Module):
    """Embedding + nn.TransformerEncoder + masked mean pooling + classifier, called with ids and mask."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, FFN, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(HIDDEN, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))
