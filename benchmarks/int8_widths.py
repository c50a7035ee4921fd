"""Int8 latency of one convolution by its channel count: which widths pruning should keep.

``python -m benchmarks int8-widths`` writes ``results/int8-widths.md`` and ``.json``.

Pruning keeps channel counts that are multiples of `autoshrink.techniques.prune.PruneConfig.round_to`
(8 by default). Pretrained EfficientNet-Lite1 pruned uniformly by 0.2 (38% of its multiply-adds
gone) ran no faster in ONNX Runtime int8 than unpruned (`results/retraining-free.md`), and a
profile put the time in its depthwise convolutions, which had become slower with fewer
channels (32 -> 24, 96 -> 72, 672 -> 536). This measures, on this CPU, one 3x3 depthwise and one
1x1 convolution (ReLU6 after each, as in EfficientNet-Lite) in ONNX Runtime int8 for each
channel count, batch 1, 1 thread, every artifact timed in turn, the fastest of ``--rounds``
rounds kept, and compares the time per channel of multiples of 16 with the odd multiples of 8.
It is the evidence for, or against, rounding kept widths to 16 on a given CPU: int8 kernels
differ between instruction sets, so run it on the CPU in question.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments

CHANNELS = tuple(range(16, 129, 8))
#: (kind, kernel size, input side): the depthwise layer of an early EfficientNet-Lite block and a
#: pointwise one at a later block's resolution.
LAYERS = (("depthwise 3x3", 3, 60), ("pointwise 1x1", 1, 30))


def layer(kind: str, channels: int) -> Any:
    import torch

    size = 3 if kind.startswith("depthwise") else 1
    groups = channels if kind.startswith("depthwise") else 1
    conv = torch.nn.Conv2d(channels, channels, size, padding=size // 2, groups=groups)
    return torch.nn.Sequential(conv, torch.nn.ReLU6()).eval()


def run(rounds: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    import torch

    from autoshrink import Plan, compress
    from autoshrink.config import HardwareProfile
    from autoshrink.measuring.latency import measure_latency

    torch.manual_seed(0)
    built = []
    for kind, _, side in LAYERS:
        for channels in CHANNELS:
            x = torch.randn(1, channels, side, side)
            art = compress(layer(kind, channels), Plan(bits=8, runtime="onnxruntime"),
                           train_data=(torch.randn(32, channels, side, side),), example_input=x)  # fmt: skip
            built.append(({"layer": kind, "side": side, "channels": channels, "runtime": art.runtime}, art, x))
    best: dict[int, float] = {}
    for i in range(rounds):
        order = list(enumerate(built)) if i % 2 == 0 else list(enumerate(built))[::-1]
        for n, (_, art, x) in order:
            ms = measure_latency(art, x, HardwareProfile()).median_ms
            best[n] = min(best.get(n, ms), ms)
    rows = []
    for n, (row, _, _) in enumerate(built):
        rows.append({**row, "ms": round(best[n], 4), "us_per_channel": round(1000 * best[n] / row["channels"], 3)})
        log(f"{row['layer']} {row['channels']:4d} channels: {best[n]:.3f} ms")
    return rows


def summary(rows: list[dict[str, Any]], kind: str) -> tuple[float, float]:
    """Median time per channel (microseconds) of ``kind``'s multiples of 16 and odd multiples of 8.

    >>> rows = [{"layer": "d", "channels": c, "us_per_channel": 1.0 if c % 16 == 0 else 2.0} for c in (16, 24, 32)]
    >>> summary(rows, "d")
    (1.0, 2.0)
    """
    of = [r for r in rows if r["layer"] == kind]
    return (statistics.median(r["us_per_channel"] for r in of if r["channels"] % 16 == 0),
            statistics.median(r["us_per_channel"] for r in of if r["channels"] % 16))  # fmt: skip


def write(rows: list[dict[str, Any]], report: Report, rounds: int) -> Path:
    lines = [
        *report.header(
            "Int8 convolution latency by channel count",
            f"One convolution and a ReLU6, ONNX Runtime static int8 (`Plan(bits=8, runtime='onnxruntime')`), batch 1, 1 thread, every "
            f"artifact timed in turn, the fastest of {rounds} rounds. Why it matters: pruning keeps channel counts "
            "that are multiples of `PruneConfig.round_to` (8 by default).",
        ),
        "| layer | input | " + " | ".join(str(c) for c in CHANNELS) + " |",
        "|---|---|" + "---|" * len(CHANNELS),
    ]
    for kind, _, side in LAYERS:
        of = {r["channels"]: r for r in rows if r["layer"] == kind}
        lines.append(f"| {kind}, ms | {side}x{side} | " + " | ".join(f"{of[c]['ms']:.3f}" for c in CHANNELS) + " |")
    lines.append("")
    for kind, _, _ in LAYERS:
        sixteen, eight = summary(rows, kind)
        lines.append(f"- {kind}: {sixteen:.2f} us per channel at multiples of 16, {eight:.2f} at odd multiples of 8 "
                     f"({eight / sixteen:.2f}x).")  # fmt: skip
    return report.write({"rounds": rounds, "rows": rows}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("int8-widths", __doc__)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds over every artifact; the fastest is kept (default: 5)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    import torch

    torch.set_num_threads(1)
    report = Report("int8-widths", args.out, argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {write(run(args.rounds), report, args.rounds)}")


if __name__ == "__main__":
    main()
