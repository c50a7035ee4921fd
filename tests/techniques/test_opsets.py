"""Every lowering yields a graph that ONNX's checker and the runtime accept, whatever opset the
export has and the passes need: on models built from the ops whose form changed across opsets
(the Reduce family, Split, Squeeze/Unsqueeze, Resize), ending in L2 normalisation the way
sentence encoders do."""

from __future__ import annotations

import importlib.util

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.data import NamedTensorDataset
from autoshrink.pipeline import compress
from autoshrink.plan import Plan

VOCAB, DIM, SEQ = 300, 64, 12
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None


class SentenceEncoder(nn.Module):
    """Token ids in, masked mean pooling, unit-length embeddings out (as sentence-transformers
    serves MiniLM), with a Split and a Squeeze/Unsqueeze on the way."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.norm = norm
        self.embed = nn.Embedding(VOCAB, DIM)
        self.up = nn.Linear(DIM, 2 * DIM)
        self.down = nn.Linear(DIM, DIM)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        a, b = self.up(h).chunk(2, dim=-1)  # Split
        h = h + self.down(a * torch.sigmoid(b))
        m = attention_mask.unsqueeze(-1).float()  # Unsqueeze
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # ReduceSum
        pooled = pooled.unsqueeze(1).mean(1)  # ReduceMean after an Unsqueeze
        if self.norm == "normalize":
            return F.normalize(pooled, p=2, dim=-1)  # ReduceL2
        return pooled / torch.linalg.norm(pooled, dim=-1, keepdim=True).clamp(min=1e-6)


class ResizingCNN(nn.Module):
    """Convolutions around an upsampling (Resize) and a squeezed pooled output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(torch.relu(self.a(x)), scale_factor=2.0, mode="nearest")
        h = torch.relu(self.b(h)).amax(dim=(2, 3), keepdim=True).squeeze(-1).squeeze(-1)  # ReduceMax, Squeeze
        return F.normalize(self.head(h), dim=-1)


PLANS = [
    Plan(bits=32, runtime="onnxruntime"),
    Plan(bits=8),
    Plan(bits=4),
    pytest.param(Plan(bits=32, runtime="openvino"), marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO")),
    pytest.param(Plan(bits=8, runtime="openvino"), marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO")),
]


def _encoder(norm: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(1, VOCAB, (96, SEQ))
    mask = torch.ones_like(ids)
    mask[::3, SEQ // 2 :] = 0
    return SentenceEncoder(norm).eval(), {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.label)
@pytest.mark.parametrize("norm", ["normalize", "linalg_norm"])
def test_l2_normalised_encoders_lower_to_every_bit_width_and_runtime(norm: str, plan: Plan) -> None:
    model, tokens = _encoder(norm)
    art = compress(model, plan, train_data=NamedTensorDataset(**tokens), example_input={k: v[:1] for k, v in tokens.items()},
                   task="embedding")  # fmt: skip
    _check_graph(art)
    x = {k: v[:16] for k, v in tokens.items()}
    with torch.no_grad():
        reference = model(**x)
    out = art(**x)
    assert out.shape == reference.shape
    assert torch.allclose(out.norm(dim=-1), torch.ones(16), atol=1e-3)  # still unit length
    assert float(F.cosine_similarity(out, reference, dim=-1).mean()) > 0.9


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.label)
def test_a_cnn_with_resize_lowers_to_every_bit_width_and_runtime(plan: Plan) -> None:
    torch.manual_seed(0)
    model, x = ResizingCNN().eval(), torch.randn(64, 3, 8, 8)
    art = compress(model, plan, train_data=(x,), example_input=x[:1])
    _check_graph(art)
    assert art(x[:4]).shape == (4, 8)


def _check_graph(art) -> None:
    """ONNX's full checker (with shape inference) accepts the ONNX Runtime graph, and its
    nodes use the form of the opset it declares."""
    if art.runtime != "onnxruntime":
        return
    model = art.onnx_model
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for node in model.graph.node:
        since = 13 if node.op_type == "ReduceSum" else 18  # axes became an input in that opset
        if node.op_type.startswith("Reduce") and opset >= since:
            assert "axes" not in {a.name for a in node.attribute}, f"{node.op_type} has opset-{opset} form wrong"
