"""Int8 weights rounded to fit each layer's output, not each weight: GPTQ with bias correction.

ONNX Runtime rounds every weight to the nearest level of its channel's int8 grid. On a
pretrained CNN that costs more than the activations do (``results/amd-avx2/int8-split.md``: on
EfficientNet-Lite1 the 7-bit weight grid alone took top-1 agreement to 0.84). Here, before the
model is exported, each Conv2d and Linear layer's weights are put on exactly the grid the
runtime will use (per output channel, symmetric, ``max|w| / top``), choosing the levels so that
the layer's *output* on calibration inputs stays close:

* **error-compensating rounding** (OPTQ / GPTQ, Frantar et al., ICLR 2023, the layer-wise
  Optimal Brain Quantizer): the weights of an output channel are rounded one input at a time,
  and the error of each is spread over the inputs not yet rounded through the inverse of the
  inputs' Gram matrix; columns go in decreasing order of their input's energy ("act order");
* **bias correction** (Nagel et al., 2019, empirical): the layer's bias absorbs the mean shift
  that the rounded weights cause on the calibration inputs (a layer without a bias gets one;
  a following BatchNorm is folded into it at export).

Each channel's largest weight stays at ``+-top``, so the runtime computes the same scale and its
own rounding changes nothing: the artifact carries these integers (``tests`` check it on the
int8 model's weights). Statistics come from one forward pass of the float model (its own
inputs at every layer), so layers are rounded independently and a layer kept in float by mixed
precision is simply not rounded. A layer whose input cannot be matched to its output (a module
that computes something else than its weights times its input patches) keeps nearest rounding,
and says so.

Example:
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> x = torch.randn(512, 16)
    >>> rounded = round_layers(net, x, {"0": 7, "2": 7})
    >>> sorted(rounded.layers), rounded.layers["0"].error < rounded.layers["0"].nearest_error
    (['0', '2'], True)
    >>> levels = rounded.layers["0"].weight / (rounded.layers["0"].weight.abs().amax(1, keepdim=True) / 7)
    >>> bool(torch.allclose(levels, levels.round(), atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from autoshrink.inputs import Inputs, batch_size, call_model, tree_index
from autoshrink.techniques._patches import layer_rows

#: Input rows (samples x positions) of one batch that enter a layer's Gram matrix: at most this
#: many, and at most `ROWS_PER_INPUT` per input of one output (a depthwise 3x3 needs fewer than a
#: 1x1 convolution over 1152 channels); a random subset of a convolution's positions beyond it.
ROWS_PER_BATCH = 2048
ROWS_PER_INPUT = 32
BATCH = 32
#: GPTQ's damping: added to the Gram matrix's diagonal, relative to its mean.
DAMP = 0.01
#: Columns GPTQ rounds before it updates the columns after them in one product (its lazy batches).
BLOCK = 128
#: A layer's output as recomputed from its input patches must match its real output this closely
#: (relative), or the layer is left to nearest rounding.
MATCH = 1e-3


@dataclass(frozen=True)
class RoundedLayer:
    """One layer's rounded weight and corrected bias, and its output error on the calibration
    inputs (mean squared, per output element, after the bias correction) against the float
    layer: with these levels, and with nearest rounding (bias corrected too)."""

    weight: torch.Tensor
    bias: torch.Tensor
    error: float
    nearest_error: float


@dataclass(frozen=True)
class Rounding:
    """What `round_layers` did: the layers rounded, and the layers left alone with why."""

    layers: dict[str, RoundedLayer] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)

    def apply(self, model: nn.Module, names: list[str] | None = None) -> None:
        """Put the rounded weights and biases into ``model`` (a copy of the model they were
        computed on), for the layers ``names`` (all of them by default). Every layer rounded
        here gets a bias (zeros where it had none and is not among ``names``), so that the
        graph has the same tensors whichever layers are chosen."""
        with torch.no_grad():
            for name, layer in self.layers.items():
                module = model.get_submodule(name)
                if module.bias is None:
                    module.bias = nn.Parameter(torch.zeros_like(layer.bias))
                if names is None or name in names:
                    module.weight.copy_(layer.weight)
                    module.bias.copy_(layer.bias)


def depthwise(module: nn.Module) -> bool:
    """A convolution with one input and one output channel per group (ONNX Runtime's depthwise
    kernels, `autoshrink.techniques.quantize.depthwise_weights`)."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.weight.shape[:2] == (module.groups, 1)


def _grouped(module: nn.Module) -> torch.Tensor:
    """The weight as (groups, outputs per group, fan-in), float64."""
    groups = module.groups if isinstance(module, nn.Conv2d) else 1
    return module.weight.detach().double().reshape(groups, module.weight.shape[0] // groups, -1)


class _Stats:
    """Sums over the calibration rows of one layer: Gram matrix, input sums, row count."""

    def __init__(self) -> None:
        self.gram: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None
        self.rows = 0

    def add(self, p: torch.Tensor) -> None:
        p = p.contiguous()
        gram, sums = torch.bmm(p.transpose(1, 2), p).double(), p.sum(1, dtype=torch.float64)
        self.gram, self.sums = (gram, sums) if self.gram is None else (self.gram + gram, self.sums + sums)
        self.rows += p.shape[1]

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs' covariance (groups, d, d) and mean (groups, d)."""
        assert self.gram is not None and self.sums is not None
        mean = self.sums / self.rows
        return self.gram / self.rows - mean[:, :, None] * mean[:, None, :], mean


def _collect(model: nn.Module, names: list[str], inputs: Inputs, seed: int) -> tuple[dict[str, _Stats], dict[str, str]]:
    """One forward of ``model`` over ``inputs``: each layer's input statistics, and the layers
    whose output could not be recomputed from their input patches (with why)."""
    gen = torch.Generator().manual_seed(seed)
    stats = {name: _Stats() for name in names}
    left: dict[str, str] = {}

    def hook(module: nn.Module, args: tuple, out: torch.Tensor, name: str) -> None:
        if name in left or not isinstance(out, torch.Tensor):
            left.setdefault(name, "its output is not one tensor")
            return
        try:
            p, y = layer_rows(module, args[0].detach(), out.detach(), gen,
                              min(ROWS_PER_BATCH, ROWS_PER_INPUT * module.weight[0].numel()))
        except (IndexError, RuntimeError) as exc:  # a padding or shape that patches cannot reproduce
            left[name] = f"its input patches could not be gathered ({type(exc).__name__}; left to nearest rounding)"
            return
        if stats[name].rows == 0:  # checked once, on the first batch
            bias = module.bias.detach().reshape(p.shape[0], 1, -1) if module.bias is not None else 0.0
            again = torch.bmm(p, _grouped(module).float().transpose(1, 2)) + bias
            if float((again - y).norm()) > MATCH * float(y.norm().clamp_min(1e-30)):
                left[name] = "its output is not its weights times its input patches (left to nearest rounding)"
                return
        stats[name].add(p)

    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]
    try:
        with torch.no_grad():
            total = batch_size(inputs)
            for start in range(0, total, BATCH):
                call_model(model, tree_index(inputs, torch.arange(start, min(start + BATCH, total))))
    finally:
        for handle in handles:
            handle.remove()
    for name in names:
        if name not in left and stats[name].rows == 0:
            left[name] = "not called by the model's forward"
    return {n: s for n, s in stats.items() if n not in left}, left


def _inverse_factor(cov: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of the inverse of ``cov`` damped by `DAMP` of its mean diagonal,
    or by 10x more at a time where a covariance made of float32 sums is not positive definite;
    ValueError if even 1000x more does not do."""
    d = cov.shape[-1]
    mean = torch.diagonal(cov, dim1=1, dim2=2).mean(1).clamp_min(1e-12)[:, None, None]
    eye = torch.eye(d, dtype=cov.dtype)
    for damp in (DAMP * 10**k for k in range(4)):
        factor, info = torch.linalg.cholesky_ex(cov + damp * mean * eye)
        if not info.any():
            inverse, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(factor), upper=True)
            if not info.any():
                return inverse
    raise ValueError("the inputs' covariance is not positive definite, even damped")


def gptq_levels(weight: torch.Tensor, cov: torch.Tensor, top: int) -> torch.Tensor:
    """Integer levels in ``[-top, top]`` for ``weight`` (groups, rows, d) on the grid
    ``max|row| / top`` of each row, rounded one column at a time in decreasing order of the
    input variance ``cov``'s diagonal (groups, d, d), each column's error compensated on the
    columns after it. Each row's largest weight keeps its level ``+-top``.

    >>> w = torch.tensor([[[1.0, 0.3, 0.26]]], dtype=torch.float64)
    >>> gptq_levels(w, torch.eye(3, dtype=torch.float64)[None], 2).tolist()  # no correlation: nearest
    [[[2.0, 1.0, 1.0]]]
    """
    groups, rows, d = weight.shape
    scale = weight.abs().amax(2, keepdim=True).clamp_min(1e-30) / top
    diag = torch.diagonal(cov, dim1=1, dim2=2)
    order = torch.argsort(diag, dim=1, descending=True)
    cov = torch.gather(torch.gather(cov, 1, order[:, :, None].expand(-1, -1, d)), 2, order[:, None, :].expand(-1, d, -1))
    w = torch.gather(weight, 2, order[:, None, :].expand(-1, rows, -1)).float()
    inverse = _inverse_factor(cov).float()
    step = scale[:, :, 0].float()
    levels = torch.empty_like(w)
    for start in range(0, d, BLOCK):  # GPTQ's lazy batches: columns of one block, then the rest at once
        end = min(start + BLOCK, d)
        block, errors = w[:, :, start:end].clone(), torch.empty(groups, rows, end - start)
        for i in range(end - start):
            q = torch.clamp(torch.round(block[:, :, i] / step), -top, top)
            levels[:, :, start + i] = q
            errors[:, :, i] = (block[:, :, i] - q * step) / inverse[:, start + i, start + i][:, None]
            block[:, :, i + 1 :] -= errors[:, :, i, None] * inverse[:, start + i, None, start + i + 1 : end]
        w[:, :, end:] -= torch.bmm(errors, inverse[:, start:end, end:])
    levels = torch.gather(levels.double(), 2, torch.argsort(order, dim=1)[:, None, :].expand(-1, rows, -1))
    biggest = weight.abs().argmax(2, keepdim=True)  # its level stays +-top: the runtime's scale is unchanged
    levels.scatter_(2, biggest, torch.sign(torch.gather(weight, 2, biggest)) * top)
    return levels


def _error(delta: torch.Tensor, cov: torch.Tensor) -> float:
    """Mean squared output error per element of a weight change ``delta`` (groups, rows, d) on
    inputs of covariance ``cov``, its mean taken up by the bias."""
    return float(torch.einsum("gri,gij,grj->", delta, cov, delta)) / (delta.shape[0] * delta.shape[1])


def round_layers(model: nn.Module, inputs: Inputs, tops: Mapping[str, int], seed: int = 0) -> Rounding:
    """For each layer ``tops`` names (a Conv2d or Linear of ``model``, by module name, with the
    largest level of its symmetric int8 grid: 127, or 64 for ONNX Runtime's reduced range), the
    GPTQ-rounded weight and bias-corrected bias from the float ``model``'s inputs to it on
    ``inputs``. ``model`` itself is not changed."""
    names = [n for n in tops if isinstance(model.get_submodule(n), (nn.Conv2d, nn.Linear))]
    left = {n: "not a Conv2d or Linear layer" for n in tops if n not in names}
    training = model.training
    try:
        stats, unmatched = _collect(model.eval(), names, inputs, seed)
    finally:
        model.train(training)
    left |= unmatched
    rounded: dict[str, RoundedLayer] = {}
    for name, stat in stats.items():
        module = model.get_submodule(name)
        weight, top = _grouped(module), tops[name]
        cov, mean = stat.moments()
        try:
            levels = gptq_levels(weight, cov, top)
        except ValueError as exc:
            left[name] = f"{exc} (left to nearest rounding)"
            continue
        scale = weight.abs().amax(2, keepdim=True).clamp_min(1e-30) / top
        new, nearest = levels * scale, torch.clamp(torch.round(weight / scale), -top, top) * scale
        shift = torch.einsum("grd,gd->gr", weight - new, mean).reshape(-1)  # the mean output the rounding moved
        bias = (module.bias.detach().double() if module.bias is not None else torch.zeros_like(shift)) + shift
        rounded[name] = RoundedLayer(
            weight=new.reshape(module.weight.shape).to(module.weight.dtype), bias=bias.to(module.weight.dtype),
            error=_error(new - weight, cov), nearest_error=_error(nearest - weight, cov),
        )  # fmt: skip
    return Rounding(rounded, left)
