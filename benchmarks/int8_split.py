"""Where a pretrained CNN's int8 agreement goes: weights against activations, by layer kind (emulated in float, a diagnosis).

``python -m benchmarks int8-split`` writes ``results/int8-split.md`` and ``.json``. For each
pretrained EfficientNet-Lite (``--models``, Lite1 by default) it rounds, in a float copy of the
torch model, either the weights or the activations to an integer grid and scores the copy on the
test crops by top-1 agreement with fp32 (and on the `stable` crops of ``results/pretrained.md``):

* weights: per output channel, symmetric, the grid ONNX Runtime's int8 uses (``[-127, 127]``
  times max|w| / 127; ``[-64, 64]`` times max|w| / 64 where it reduces the range on a CPU without
  VNNI, depthwise convolutions keeping the full range), on every Conv2d and Linear, then on one kind of
  layer at a time (depthwise, 1x1, other convolutions, linear), then at more bits;
* activations: every Conv2d and Linear input rounded per tensor to unsigned 8 bits between the
  minimum and maximum that the calibration crops produce (MinMax, ONNX Runtime's default), then
  at 10 and 12 bits;
* both, which is what an int8 model computes up to the runtime's own arithmetic; next to it the
  agreement of the real ONNX Runtime int8 artifact (`Plan(bits=8)`) and the agreement's noise
  floor (fp32 against itself on the test crops stored as 8-bit pixels, and with a pixel level of
  Gaussian noise).

Nothing here is a compressed model: the copies stay float (fake quantization), and no size or
latency is reported. What it says is how much of the int8 artifact's loss each half of the
quantization costs alone, so that a user knows whether more float layers (mixed precision), a
better activation calibration or higher-precision weights could close it.

Example (the kind of a layer):
    >>> from torch import nn
    >>> kind(nn.Conv2d(8, 8, 3, groups=8)), kind(nn.Conv2d(8, 16, 1)), kind(nn.Conv2d(3, 8, 3)), kind(nn.Linear(4, 2))
    ('depthwise', '1x1', 'other conv', 'linear')
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments, each_model

KINDS = ("depthwise", "1x1", "other conv", "linear")


@dataclass(frozen=True)
class Row:
    what: str  # "weights", "activations", "both" or "artifact"
    setting: str
    agreement: float
    stable: float


@dataclass
class ModelRun:
    name: str
    layers: dict[str, int] = field(default_factory=dict)  # kind -> how many layers
    rows: list[Row] = field(default_factory=list)
    noise_floor: dict[str, float] = field(default_factory=dict)
    stable_crops: int = 0
    test_crops: int = 0
    reduced: bool = True  # ONNX Runtime's int8 weights are 7-bit on this CPU (no VNNI)


def kind(module: Any) -> str:
    """The kind of a Conv2d or Linear layer, one of `KINDS`."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
        return "depthwise"
    return "1x1" if tuple(module.kernel_size) == (1, 1) else "other conv"


def layers(model: Any) -> dict[str, Any]:
    """The Conv2d and Linear layers of ``model`` by name, in its module order."""
    from torch import nn

    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


#: The largest weight level of ONNX Runtime's reduced int8 range (``[-64, 64]``, 129 levels: "7 bits").
REDUCED_TOP = 64


def round_weights(weight: Any, bits: int) -> Any:
    """``weight`` rounded per output channel (dim 0) to a symmetric ``bits``-bit grid
    (``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``, as ONNX Runtime's symmetric int8); ``bits=7`` is
    ONNX Runtime's reduced int8 range, ``[-64, 64]``.

    >>> import torch
    >>> round_weights(torch.tensor([[1.0, 0.3, -0.52]]), 2).tolist()  # levels -1, 0, 1 times 1.0
    [[1.0, 0.0, -1.0]]
    >>> round_weights(torch.tensor([[64.0, 0.4, 0.6]]), 7).tolist()  # step 1.0: 64 levels each side
    [[64.0, 0.0, 1.0]]
    """
    import torch

    top = REDUCED_TOP if bits == 7 else 2 ** (bits - 1) - 1
    scale = (weight.abs().flatten(1).amax(1).clamp_min(1e-12) / top).view(-1, *[1] * (weight.dim() - 1))
    return torch.clamp(torch.round(weight / scale), -top, top) * scale


def round_activation(x: Any, low: float, high: float, bits: int) -> Any:
    """``x`` rounded to an unsigned ``bits``-bit grid spanning [min(low, 0), max(high, 0)] (values
    outside are clipped, zero is exact, as in ONNX Runtime's MinMax calibration).

    >>> import torch
    >>> round_activation(torch.tensor([-1.0, 0.0, 0.49, 5.0]), -1.0, 2.0, 2).tolist()  # step 1.0
    [-1.0, 0.0, 0.0, 2.0]
    """
    import torch

    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / (2**bits - 1) or 1e-12
    zero = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1) - zero) * scale


def input_ranges(model: Any, batches: list[Any]) -> dict[str, tuple[float, float]]:
    """(min, max) of every Conv2d and Linear layer's input over ``batches``, by layer name."""
    import torch

    ranges: dict[str, tuple[float, float]] = {}

    def record(name: str, x: Any) -> None:
        low, high = ranges.get(name, (math.inf, -math.inf))
        ranges[name] = (min(low, float(x.min())), max(high, float(x.max())))

    hooks = [m.register_forward_pre_hook(lambda _, args, n=name: record(n, args[0])) for name, m in layers(model).items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def emulated(
    model: Any, *, weight_bits: Callable[[str, Any], int | None] = lambda n, m: None,
    activation_bits: int | None = None, ranges: dict[str, tuple[float, float]] | None = None,
) -> Any:  # fmt: skip
    """A float copy of ``model`` with each layer's weights rounded to ``weight_bits(name, layer)``
    bits (None: left as they are) and, with ``activation_bits``, every layer's input rounded
    within its calibrated ``ranges``."""
    import torch

    twin = copy.deepcopy(model).eval()
    for name, layer in layers(twin).items():
        bits = weight_bits(name, layer)
        if bits is not None:
            with torch.no_grad():
                layer.weight.copy_(round_weights(layer.weight, bits))
        if activation_bits is not None:
            low, high = (ranges or {})[name]
            layer.register_forward_pre_hook(
                lambda _, args, lo=low, hi=high: (round_activation(args[0], lo, hi, activation_bits), *args[1:])
            )
    return twin


def int8_weight_bits(reduced: bool) -> Callable[[str, Any], int]:
    """ONNX Runtime's int8 weight grid by layer: its reduced range (7, `round_weights`) where it
    reduces it, depthwise layers keeping 8 bits."""
    return lambda name, layer: 8 if not reduced or kind(layer) == "depthwise" else 7


def split(model: Any, calibration: list[Any], score: Callable[[Any], tuple[float, float]], reduced: bool) -> list[Row]:
    """The rows of one model: each weights or activations setting scored by ``score`` (agreement, stable)."""
    ranges = input_ranges(model, calibration)
    kinds = {name: kind(layer) for name, layer in layers(model).items()}
    int8 = int8_weight_bits(reduced)
    settings: list[tuple[str, str, Any]] = [
        ("weights", "8 bits, every layer", emulated(model, weight_bits=lambda n, m: 8)),
    ]
    if reduced:
        settings.append(("weights", "7 bits (depthwise 8), every layer", emulated(model, weight_bits=int8)))
    for k in KINDS:
        if k in kinds.values():
            only = lambda n, m, k=k: int8(n, m) if kinds[n] == k else None  # noqa: E731
            settings.append(("weights", f"ONNX Runtime's grid, {k} layers only", emulated(model, weight_bits=only)))
    for bits in (10, 12):
        settings.append(("weights", f"{bits} bits, every layer", emulated(model, weight_bits=lambda n, m, b=bits: b)))
    for bits in (8, 10, 12):
        settings.append(("activations", f"{bits} bits, every layer input",
                         emulated(model, activation_bits=bits, ranges=ranges)))  # fmt: skip
    settings.append(("both", "ONNX Runtime's weight grid, 8-bit activations",
                     emulated(model, weight_bits=int8, activation_bits=8, ranges=ranges)))  # fmt: skip
    return [Row(what, setting, *score(twin)) for what, setting, twin in settings]


def run_model(name: str, n_cal: int, n_score: int, log: Callable[[str], None]) -> ModelRun:
    import torch

    from autoshrink.host import int8_weight_range
    from benchmarks.pretrained import Bench

    torch.set_num_threads(os.cpu_count() or 1)  # nothing here is timed (`each_model` sets 1 for timings)
    bench = Bench(name, n_cal, n_score, log)
    run = ModelRun(f"efficientnet-{name}", test_crops=len(bench.wl.test[0]))
    run.reduced = int8_weight_range() == "reduced"  # what `Plan(bits=8)` builds on this CPU
    run.noise_floor = bench.noise_floor()
    run.stable_crops = int(bench.stable.sum())
    model = bench.wl.model
    for layer in layers(model).values():
        run.layers[kind(layer)] = run.layers.get(kind(layer), 0) + 1

    def score(twin: Any) -> tuple[float, float]:
        agreement, _, _, stable = bench.agreement(bench.outputs(twin))
        log(f"{name}: agreement {agreement:.4f}, stable {stable:.4f}")
        return agreement, stable

    calibration = [bench.wl.train[0][i : i + 32] for i in range(0, len(bench.wl.train[0]), 32)]
    started = time.perf_counter()
    run.rows = split(model, calibration, score, run.reduced)
    log(f"{name}: {len(run.rows)} emulated settings in {time.perf_counter() - started:.0f} s")
    artifact = bench.build(bits=8)
    run.rows.append(Row("artifact", "ONNX Runtime int8 (`Plan(bits=8)`)", *score(artifact)))
    return run


def write(runs: list[ModelRun], report: Report, n_cal: int, n_score: int) -> Path:
    lines = report.header(
        "Where int8 agreement goes on pretrained CNNs: weights against activations",
        f"{n_cal} calibration crops, {n_score} test crops of other photos, top-1 agreement with the fp32 "
        "torch model. Every row but the last is a float copy of the model with either its weights or its "
        "activations rounded to an integer grid (fake quantization, a diagnosis: no size or latency); the "
        "last is the real ONNX Runtime int8 artifact. `stable`: the agreement on the test crops whose fp32 "
        "answer survives 8-bit pixels and a pixel level of Gaussian noise.",
    )
    for run in runs:
        floor = ", ".join(f"{k} {v:.4f}" for k, v in run.noise_floor.items())
        layers_text = ", ".join(f"{n} {k}" for k, n in run.layers.items())
        lines += [f"## {run.name}", "",
                  f"Layers: {layers_text}. ONNX Runtime's int8 weights on this CPU: "
                  f"{'7-bit (no VNNI), depthwise 8' if run.reduced else '8-bit'}. Noise floor (fp32 against itself): "
                  f"{floor}; {run.stable_crops} of {run.test_crops} test crops stable.", "",
                  "| rounded | setting | agreement | stable |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r.what} | {r.setting} | {r.agreement:.4f} | {r.stable:.4f} |" for r in run.rows]
        lines.append("")
    data = {"calibration": n_cal, "scored": n_score, "runs": [asdict(r) for r in runs]}
    return report.write(data, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("int8-split", __doc__)
    parser.add_argument("--models", default="lite1", help="comma-separated EfficientNet-Lite variants (default: lite1)")
    parser.add_argument("--calibration", type=int, default=256, help="calibration crops (default: 256)")
    parser.add_argument("--scored", type=int, default=256, help="validation and test crops, each (default: 256)")
    args = parser.parse_args(argv)
    report = Report("int8-split", args.out, argv=argv if argv is not None else sys.argv[1:])

    def log(message: str) -> None:
        print(message, flush=True)

    each_model(args.models, lambda name: run_model(name, args.calibration, args.scored, log),
               lambda runs: write(runs, report, args.calibration, args.scored))  # fmt: skip


if __name__ == "__main__":
    main()
