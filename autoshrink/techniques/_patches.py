"""A layer's inputs and outputs as matching rows of a linear problem, for the techniques that
fit weights to a layer's output on calibration inputs (`autoshrink.techniques._rounding`,
`autoshrink.techniques._reconstruct`).

A Linear layer's rows are its input vectors; a Conv2d layer's are the input patches its kernel
multiplies at each output position, gathered at a random subset of positions only (never
unfolded whole), per group, with the padding the convolution really applies: its own, or
TensorFlow's "same" padding for convolutions that pad themselves before the call
(EfficientNet-Lite's, timm's ``Conv2dSame``).

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    >>> x = torch.randn(2, 4, 5, 5)
    >>> p, y = layer_rows(conv, x, conv(x).detach(), torch.Generator().manual_seed(0), most=10)
    >>> tuple(p.shape), tuple(y.shape)
    ((2, 10, 18), (2, 10, 3))
    >>> w = conv.weight.detach().reshape(2, 3, -1)
    >>> bool(torch.allclose(torch.bmm(p, w.transpose(1, 2)) + conv.bias.detach().reshape(2, 1, 3), y, atol=1e-5))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def padded(module: nn.Conv2d, x: torch.Tensor, out_hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` padded as the convolution pads it, and the padding still to apply: its own
    ``padding`` when that gives the output's size, else TensorFlow's "same" padding (the extra
    row and column at the end) applied here."""
    k, s, d = module.kernel_size, module.stride, module.dilation
    pad = module.padding if isinstance(module.padding, tuple) else (0, 0)
    size = [(x.shape[2 + i] + 2 * pad[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    if tuple(size) == tuple(out_hw) and module.padding_mode == "zeros":
        return x, pad
    total = [max((out_hw[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x.shape[2 + i], 0) for i in range(2)]
    return F.pad(x, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)), (0, 0)


def layer_rows(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, most: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``most`` rows of the layer's input ``x`` and output ``y`` (random ones beyond it),
    per group: (groups, rows, fan-in) and (groups, rows, outputs per group). ``y`` may hold a
    subset of the layer's outputs (the channels a pruned layer kept), for a layer of one group."""
    if isinstance(module, nn.Linear):
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if x.shape[0] > most:
            pick = torch.randperm(x.shape[0], generator=gen)[:most]
            x, y = x[pick], y[pick]
        return x[None], y[None]
    out_h, out_w = y.shape[2:]
    x, pad = padded(module, x, (out_h, out_w))
    if any(pad):
        x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]))
    positions = y.shape[0] * out_h * out_w
    pick = torch.randperm(positions, generator=gen)[:most] if positions > most else torch.arange(positions)
    n, i, j = pick // (out_h * out_w), (pick // out_w) % out_h, pick % out_w
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    rows = i[:, None] * sh + torch.arange(kh)[None] * dh  # (R, kh)
    cols = j[:, None] * sw + torch.arange(kw)[None] * dw  # (R, kw)
    patches = x[n[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (R, kh, kw, C)
    g = module.groups
    patches = patches.permute(0, 3, 1, 2).reshape(len(pick), g, -1).transpose(0, 1)  # (g, R, Cin/g * kh * kw)
    out = y[n, :, i, j].reshape(len(pick), g, -1).transpose(0, 1)  # (g, R, Cout/g)
    return patches, out
