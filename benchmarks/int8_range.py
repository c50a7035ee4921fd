"""Every int8 recipe with full-range and with 7-bit weights, here and on an emulated CPU without VNNI.

``python -m benchmarks int8-range`` from the repository root writes ``results/int8-range.md`` and
``.json``.

x86 CPUs without VNNI add pairs of u8 x s8 products in int16 (``vpmaddubsw``), which saturates
with full-range int8 weights; with VNNI the sum is int32. The runtimes choose their kernels from
the CPU's ``cpuid``, so a fidelity figure is only worth the CPU it was measured on. Each artifact
is built once here, scored and timed on this CPU, then scored again, the same file in the same
runtime, under QEMU's user-mode emulation of an AMD EPYC-Rome (AVX2, no AVX-512, no VNNI;
``apt-get install qemu-user``): ONNX Runtime, OpenVINO and torch pick their AVX2 kernels there,
so the saturation is real. QEMU's times are not, so only fidelity comes from it.

Fidelity: mean cosine similarity of the artifact's outputs to the fp32 torch model's on
held-out inputs; for classifiers also the top-1 agreement with the fp32 model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import Report, arguments
from benchmarks._workloads import minilm_workload, scratch_dir

EMULATED_CPU = "EPYC-Rome"  # QEMU's AMD EPYC with AVX2 and no AVX-512 / VNNI
SCORED = 128  # held-out inputs scored per model
RANGES = ("full", "reduced")
INT8 = (("ONNX Runtime int8", {"bits": 8}), ("OpenVINO int8 (NNCF)", {"bits": 8, "runtime": "openvino"}))


def score(outputs: np.ndarray, reference: np.ndarray, classifier: bool) -> dict[str, float]:
    """Mean cosine to the reference outputs (and top-1 agreement for a classifier).

    >>> r = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> score(r, r, True)
    {'cosine': 1.0, 'agreement': 1.0}
    """
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    out = {"cosine": round(float(cos.mean()), 4)}
    if classifier:
        out["agreement"] = round(float((a.argmax(1) == b.argmax(1)).mean()), 4)
    return out


def _workloads(root: Path) -> list[tuple[str, Any, bool, tuple[tuple[str, dict[str, Any]], ...]]]:
    """(name, workload, is a classifier, recipes): the digits CNN, the test suite's
    ``nn.TransformerEncoder`` classifier and, where its package is installed, pretrained MiniLM."""
    import torch

    from autoshrink import workloads
    from autoshrink.data import NamedTensorDataset
    from autoshrink.workloads import Workload
    from autoshrink.workloads.huggingface import synthetic_tokens
    from tests.transformer_models import SEQ, VOCAB, TokenTransformer

    x, y = synthetic_tokens(600, SEQ, VOCAB, 3)
    data = NamedTensorDataset(**x, labels=y)
    torch.manual_seed(0)
    encoder = Workload("enc", TokenTransformer().eval(), data, data, data, {k: v[:1] for k, v in x.items()})
    out = [
        ("digits CNN (trained)", workloads.load("digits"), True, (*INT8, ("ONNX Runtime int4 (convs int8)", {"bits": 4}))),
        ("nn.TransformerEncoder (random weights)", encoder, True, INT8),
    ]
    minilm = minilm_workload(root)
    if minilm is not None:
        out.append(("all-MiniLM-L6-v2 (pretrained)", minilm, False, INT8))
    return out


def build(root: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Build every recipe at both ranges, save it with the scored inputs and fp32 outputs, and
    score and time it here."""
    import torch

    from autoshrink.config import HardwareProfile
    from autoshrink.data import stack_inputs
    from autoshrink.inputs import InputSpec, call_model, tensors
    from autoshrink.measuring.latency import measure_latency
    from autoshrink.outputs import single_output
    from autoshrink.pipeline import compress
    from autoshrink.plan import Plan

    hardware = HardwareProfile()
    rows: list[dict[str, Any]] = []
    for m, (name, wl, classifier, recipes) in enumerate(_workloads(root)):
        x = stack_inputs(wl.test, SCORED)
        with torch.no_grad():
            reference = call_model(single_output(wl.model, wl.example_input), x).numpy()
        spec = InputSpec.of(wl.example_input)
        arrays: dict[str, Any] = {n: t.numpy() for n, t in zip(spec.names, tensors(x))}
        np.savez(root / f"m{m}.npz", reference=reference, **arrays)
        one = {n: t[:1] for n, t in zip(spec.names, tensors(x))}
        cache: dict[str, Any] = {}
        for recipe, knobs in recipes:
            for weights in RANGES:
                start = time.perf_counter()
                art = compress(wl.model, Plan(**knobs), train_data=wl.train, example_input=wl.example_input,
                               task=wl.task, cache=cache, int8_range=weights)  # fmt: skip
                built = time.perf_counter() - start
                path = art.save(root / f"m{m}-{len(rows)}{art.suffix}")
                batch = one if len(one) > 1 else next(iter(one.values()))
                row = {
                    "model": name, "recipe": recipe, "weights": weights, "file": path.name, "npz": f"m{m}.npz",
                    "classifier": classifier, "bytes": art.size_bytes, "build_s": round(built, 1),
                    "ms": round(measure_latency(art, batch, hardware).median_ms, 4),
                    "here": score(_run(art, x), reference, classifier),
                }  # fmt: skip
                rows.append(row)
                log(f"{name} | {recipe} | {weights}: {row['here']} {row['ms']} ms")
    return rows


def _run(artifact: Any, x: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = artifact(x) if not isinstance(x, dict) else artifact(**x)
    return out.numpy()


def score_folder(root: Path) -> dict[str, dict[str, float]]:
    """Score every saved artifact of ``root`` on its inputs (what runs under the emulator)."""
    import torch

    from autoshrink.artifact import load_artifact

    rows = json.loads((root / "rows.json").read_text())
    out = {}
    for row in rows:
        data = np.load(root / row["npz"])
        named = {k: torch.from_numpy(data[k]) for k in data.files if k != "reference"}
        x: Any = named if len(named) > 1 else next(iter(named.values()))
        out[row["file"]] = score(_run(load_artifact(root / row["file"]), x), data["reference"], row["classifier"])
    return out


def emulated(root: Path, cpu: str, log: Callable[[str], None]) -> dict[str, dict[str, float]] | None:
    """`score_folder` under ``qemu-x86_64 -cpu cpu``, or None where QEMU is not installed."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        log("qemu-x86_64 not found (apt-get install qemu-user): no emulated scores")
        return None
    log(f"scoring under qemu-x86_64 -cpu {cpu} (minutes: every instruction is emulated)")
    cmd = [qemu, "-cpu", cpu, sys.executable, "-m", "benchmarks.int8_range", "--score", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"the emulated run failed: {done.stderr[-2000:]}")
    return json.loads((root / "emulated.json").read_text())


def write(rows: list[dict[str, Any]], cpu: str, report: Report) -> Path:
    def fid(s: dict[str, float] | None) -> str:
        if not s:
            return "n/a"
        return f"{s['cosine']:.4f}" + (f" / {s['agreement']:.3f}" if "agreement" in s else "")

    lines = [
        *report.header("int8 weight range: full vs 7-bit, with and without VNNI"),
        f"- **Here**: {report.machine}. Latency: batch 1, 1 thread, median of the fastest of 3 blocks.",
        f"- **Emulated AVX2**: the same files, scored under QEMU user mode as `-cpu {cpu}` (AVX2, no AVX-512, "
        "no VNNI): the runtimes choose their AVX2 int8 kernels from `cpuid`, so the saturation is real; "
        "emulated times mean nothing and are not reported.",
        f"- Fidelity: mean cosine to the fp32 torch outputs on {SCORED} held-out inputs "
        "(/ top-1 agreement with fp32 for classifiers).",
        "- `auto` (the default) builds 7-bit weights on a CPU without VNNI or AMX and full-range ones on a CPU with them.",
        "",
        "| model | recipe | weights | fidelity here | fidelity, emulated AVX2 | ms here | bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['recipe']} | {r['weights']} | {fid(r['here'])} | {fid(r.get('avx2'))} "
                     f"| {r['ms']:.3f} | {r['bytes']:,} |")  # fmt: skip
    return report.write({"emulated_cpu": cpu, "rows": rows}, lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments("int8-range", __doc__)
    parser.add_argument("--cpu", default=EMULATED_CPU, help="QEMU CPU model without VNNI")
    parser.add_argument("--score", type=Path, help=argparse.SUPPRESS)  # the emulated half
    args = parser.parse_args(argv)
    if args.score:
        (args.score / "emulated.json").write_text(json.dumps(score_folder(args.score)))
        return
    report = Report("int8-range", args.out, argv=sys.argv[1:] if argv is None else argv)
    root = scratch_dir("autoshrink-int8-range-")
    rows = build(root, print)
    (root / "rows.json").write_text(json.dumps(rows))
    scores = emulated(root, args.cpu, print) or {}
    for row in rows:
        row["avx2"] = scores.get(row["file"])
    print(f"wrote {write(rows, args.cpu, report)}")


if __name__ == "__main__":
    main()
