"""`measure`: score an artifact on accuracy, latency, energy and size, all measured."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from autoshrink.artifact import Artifact
from autoshrink.config import HardwareProfile
from autoshrink.data import DataLike, first_batch
from autoshrink.inputs import Inputs

Evaluate = Callable[[Artifact, DataLike], float]

#: ``Measurement.metric`` of a candidate whose accuracy was not measured (screened out first).
NOT_MEASURED = "not measured"

#: The figures of a `Measurement` that are numbers, in the order reports show them.
METRICS = ("accuracy", "latency_ms", "latency_p95_ms", "energy_mj", "size_bytes", "num_parameters", "peak_memory_mb")


def score_name(metric: str) -> str:
    """``acc`` for top-1 accuracy (the default metric), else the metric's own name."""
    return "acc" if metric in ("top1", "top1_accuracy") else metric


@dataclass(frozen=True)
class Measurement:
    """Everything measured about one artifact on one hardware profile.

    ``accuracy`` is the quality score named by ``metric``: top-1 accuracy by default, or what the
    workload's ``evaluate`` returns (higher is better; ``fidelity`` for embedding models).
    Latencies are milliseconds per batch of ``batch_size``; energy is CPU millijoules per
    batch, obtained as ``energy_method`` says; ``size_bytes`` is the saved artifact's size.
    ``peak_memory_mb`` is the resident memory a process running it at that batch size needs at
    its peak, its runtime's import included (`autoshrink.measuring.memory`; NaN: not measured).
    ``session`` holds the session options it was measured with (`autoshrink.sessions`, only
    those that differ from the defaults), which the artifact is saved with.
    """

    accuracy: float
    latency_ms: float
    latency_p95_ms: float
    energy_mj: float
    size_bytes: int
    num_parameters: int
    runtime: str
    threads: int
    batch_size: int
    latency_repeats: int
    latency_spread: float
    energy_method: str
    metric: str = "top1"
    peak_memory_mb: float = math.nan
    session: dict[str, Any] = field(default_factory=dict)

    @property
    def score_name(self) -> str:
        """How reports name the score: ``acc`` for top-1 accuracy, else the metric's name."""
        return score_name(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def metrics(self) -> dict[str, float]:
        """The numeric figures under the names used everywhere (budget, MLflow, reports).

        Example:
            >>> m = Measurement(0.9, 1.0, 1.2, 0.5, 1000, 10, "torch", 1, 1, 150, 1.1, "estimate")
            >>> sorted(m.metrics())
            ['accuracy', 'energy_mj', 'latency_ms', 'latency_p95_ms', 'num_parameters', 'peak_memory_mb', 'size_bytes']
        """
        return {name: float(getattr(self, name)) for name in METRICS}

    def speedup_over(self, base: Measurement) -> float:
        """How many times faster than ``base`` (the baseline): its latency over this one's.

        Example:
            >>> def m(ms): return Measurement(0.9, ms, ms, 0.5, 1000, 10, "torch", 1, 1, 150, 1.1, "-")
            >>> m(0.5).speedup_over(m(3.0))
            6.0
        """
        return base.latency_ms / self.latency_ms


def timing_batch(data: DataLike, batch_size: int) -> Inputs:
    """A real input batch of ``batch_size`` samples from ``data`` (repeated if it is short)."""
    return first_batch(data, batch_size)


def measure(
    artifact: Artifact,
    *,
    eval_data: DataLike,
    hardware: HardwareProfile | None = None,
    evaluate: Evaluate | None = None,
    accuracy: bool = True,
    memory_limit_mb: float | None = None,
) -> Measurement:
    """Measure ``artifact``: accuracy on ``eval_data``, latency, energy and size.

    With ``accuracy=False`` only speed, energy and size are measured (accuracy reads 0.0 and
    ``metric`` says it was not measured): a search screens candidates that way before
    spending distillation on them.

    ONNX Runtime and OpenVINO artifacts are measured with the session options the profile asks
    for: by default the fastest of a few, timed here (`autoshrink.measuring.tuning`), among those
    that fit ``memory_limit_mb``; ``Measurement.session`` says which (apply them with
    `Artifact.with_options` before saving the artifact, as a search does).

    Args:
        artifact: what `autoshrink.compress` returned.
        eval_data: labelled data to score on (and to draw the timing batch from).
        hardware: threads, batch size and timing protocol; `HardwareProfile()` by default.
        evaluate: optional ``callable(artifact, data) -> float`` (higher is better) used
            instead of top-1 accuracy.

    Example:
        >>> import torch
        >>> from autoshrink import HardwareProfile, Plan, compress
        >>> net = torch.nn.Linear(4, 3)
        >>> data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
        >>> art = compress(net, Plan(), train_data=data, example_input=torch.randn(1, 4))
        >>> m = measure(art, eval_data=data, hardware=HardwareProfile(warmup_s=0, repeats=5, energy_s=0.1))
        >>> m.latency_ms > 0 and m.size_bytes == art.size_bytes
        True
    """
    from autoshrink.measuring.accuracy import score
    from autoshrink.measuring.energy import measure_energy
    from autoshrink.measuring.latency import measure_latency
    from autoshrink.measuring.memory import measure_peak_memory
    from autoshrink.measuring.tuning import tune_session
    from autoshrink.phases import phase

    hardware = hardware or HardwareProfile()
    batch = timing_batch(eval_data, hardware.batch_size)
    with phase("session"):
        options = tune_session(artifact, batch, hardware, memory_limit_mb).options
    artifact = artifact.run_with(options)
    with phase("score"):
        quality = score(artifact, eval_data, evaluate) if accuracy else 0.0
    with phase("latency"):
        latency = measure_latency(artifact, batch, hardware)
    with phase("energy"):
        energy = measure_energy(artifact, batch, hardware)
    with phase("memory"):
        memory = measure_peak_memory(artifact, batch, hardware)
    return Measurement(
        metric=(getattr(evaluate, "__name__", type(evaluate).__name__) if evaluate is not None else "top1")
        if accuracy
        else NOT_MEASURED,
        accuracy=quality,
        latency_ms=latency.median_ms,
        latency_p95_ms=latency.p95_ms,
        energy_mj=energy.mj_per_inference,
        size_bytes=artifact.size_bytes,
        num_parameters=artifact.num_parameters,
        runtime=artifact.runtime,
        threads=latency.threads,
        batch_size=latency.batch_size,
        latency_repeats=latency.repeats,
        latency_spread=latency.spread,
        energy_method=energy.method,
        peak_memory_mb=memory.peak_mb,
        session=options.to_dict(),
    )
