"""Least-squares reconstruction walks every calibration batch through the model once."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from autoshrink.techniques._reconstruct import BATCH, reconstruct
from tests.conftest import SamePadConv


def _pair(widths: tuple[int, ...] = (8, 32, 32, 32, 4), keep: int = 24) -> tuple[nn.Sequential, nn.Sequential]:
    """A ReLU MLP (teacher) and the same with each hidden layer cut to its first ``keep`` units."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    teacher = nn.Sequential(*layers[:-1])
    student = nn.Sequential()
    for i, layer in enumerate(teacher):
        if isinstance(layer, nn.Linear):
            rows = slice(None) if i == len(teacher) - 1 else slice(0, keep)
            cols = slice(None) if i == 0 else slice(0, keep)
            cut = nn.Linear(layer.weight[rows, cols].shape[1], layer.weight[rows, cols].shape[0])
            with torch.no_grad():
                cut.weight.copy_(layer.weight[rows, cols]), cut.bias.copy_(layer.bias[rows])
            student.append(cut)
        else:
            student.append(nn.ReLU())
    return student, teacher


def _calls(model: nn.Module) -> list[int]:
    calls: list[int] = []
    model[0].register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    return calls


def test_each_batch_runs_once_through_each_model_however_many_layers_are_refitted() -> None:
    # It ran the student and the teacher up to each refitted layer, batch by batch: the square of
    # the depth (224 of 289 s pruning a pretrained EfficientNet-Lite1).
    student, teacher = _pair()
    kept = {"2": list(range(24)), "4": list(range(24))}
    s_calls, t_calls = _calls(student), _calls(teacher)
    x = torch.randn(4 * BATCH, 8)
    errors = reconstruct(student, teacher, ["2", "4", "6"], kept, x)
    assert set(errors) == {"2", "4", "6"} and all(after <= before for before, after in errors.values())
    assert s_calls == t_calls == [BATCH] * 4


def test_a_layer_is_fitted_on_the_inputs_its_refitted_predecessors_give_it() -> None:
    # The error recorded for the last layer is its error in the final student: the inputs it was
    # fitted and checked on came through the layers refitted before it.
    student, teacher = _pair()
    kept = {"2": list(range(24)), "4": list(range(24))}
    x = torch.randn(3 * BATCH, 8)
    errors = reconstruct(student, teacher, ["2", "4", "6"], kept, x)
    check = x[2 * BATCH :]  # the last batch is held out and checked on
    with torch.no_grad():
        out, ref = student(check), teacher(check)
    assert errors["2"][1] < errors["2"][0]
    assert float((out - ref).norm() / ref.norm()) == pytest.approx(errors["6"][1], rel=1e-5)


class _Wrapped(nn.Module):
    """``inner``, with a layer its forward never calls, and failing on a short batch if ``fussy``."""

    def __init__(self, inner: nn.Sequential, fussy: bool) -> None:
        super().__init__()
        self.inner, self.unused, self.fussy = inner, nn.Linear(24, 24), fussy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fussy and x.shape[0] < BATCH:
            raise ValueError("this model wants full batches")
        return self.inner(x)


def test_a_forward_that_fails_reaches_the_caller_and_leaves_no_thread_behind() -> None:
    student, teacher = _pair()
    before = threading.active_count()
    with pytest.raises(ValueError, match="this model wants full batches"):
        reconstruct(_Wrapped(student, True), _Wrapped(teacher, False), ["inner.6"], {}, torch.randn(BATCH + 5, 8))
    with pytest.raises(RuntimeError, match="layer 'unused' was not called by the model's forward"):
        reconstruct(_Wrapped(student, False), _Wrapped(teacher, False), ["inner.6", "unused"], {}, torch.randn(3 * BATCH, 8))
    assert threading.active_count() == before


def test_a_layer_without_bias_gets_one_that_takes_up_the_mean_of_the_removed_channels() -> None:
    """A bias-free 1x1 conv (followed by BatchNorm in a real CNN) reads 16 ReLU channels; 4 are
    removed. Their mean cannot be made up by the 12 left without an intercept; with one it is."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1, bias=False))
    student = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 8, 1, bias=False))
    with torch.no_grad():
        teacher[0].bias.add_(1.0)  # every channel positive on average, as after ReLU in a trained net
        student[0].weight.copy_(teacher[0].weight[:12]), student[0].bias.copy_(teacher[0].bias[:12])
        student[2].weight.copy_(teacher[2].weight[:, :12])
    x = torch.randn(96, 3, 8, 8)
    before, after = reconstruct(student, teacher, ["2"], {}, x)["2"]
    assert student[2].bias is not None and student[2].bias.abs().max() > 0.05  # the intercept was used
    assert after < 0.5 * before
    with torch.no_grad():  # and the error it reports is the model's: the teacher's output, within it
        err = float((student(x) - teacher(x)).norm() / teacher(x).norm())
    assert err < 1.5 * after


def test_a_consumer_that_pads_itself_is_refitted_on_the_patches_it_really_multiplies() -> None:
    # Its own padding (0) gives fewer positions than its output has: the rows of the fit are
    # gathered with the padding it applies, and the refit lowers its error as for any convolution.
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), SamePadConv(16, 8, 3, stride=2))
    student = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), SamePadConv(12, 8, 3, stride=2))
    with torch.no_grad():
        teacher[0].bias.add_(1.0)
        student[0].weight.copy_(teacher[0].weight[:12]), student[0].bias.copy_(teacher[0].bias[:12])
        student[2].weight.copy_(teacher[2].weight[:, :12]), student[2].bias.copy_(teacher[2].bias)
    before, after = reconstruct(student, teacher, ["2"], {}, torch.randn(96, 3, 8, 8))["2"]
    assert after < 0.7 * before
