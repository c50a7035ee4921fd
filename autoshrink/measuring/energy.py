"""Energy per inference, measured with CodeCarbon while the artifact runs back to back.

CodeCarbon runs offline (no network), in process mode (only this process's CPU share is
counted) and writes no files. It reads hardware counters where the machine has them (Intel
RAPL, NVIDIA NVML); where it has none it *estimates* power from CPU load and a TDP figure.
Every result carries ``method`` saying which of the two it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from autoshrink._quiet import quiet_codecarbon
from autoshrink.artifact import Artifact
from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.measuring.latency import prepared_runner, torch_threads

KWH_TO_MJ = 3.6e9
_warmed = False


@dataclass(frozen=True)
class Energy:
    """Millijoules of CPU energy per inference (one batch), and how they were obtained."""

    mj_per_inference: float
    method: str
    inferences: int
    seconds: float


def energy_counters_available() -> bool:
    """Whether this machine exposes CPU energy counters (Intel RAPL) that can be read.

    Without them CodeCarbon estimates energy from CPU load and a TDP figure: an estimate that
    moves with latency and adds its own noise (see ``results/noise.md``), so a search then
    reports energy but does not optimize it.
    """
    import glob

    for path in glob.glob("/sys/class/powercap/intel-rapl:*/energy_uj"):
        try:
            with open(path) as handle:
                handle.read()
            return True
        except OSError:
            continue
    return False


def _tracker(hardware: HardwareProfile) -> Any:
    quiet_codecarbon()
    from codecarbon import OfflineEmissionsTracker

    return OfflineEmissionsTracker(
        country_iso_code=hardware.country_iso_code,
        tracking_mode="process",
        output_methods=[],
        save_to_file=False,
        measure_power_secs=1,
        log_level="error",
        allow_multiple_runs=True,
    )


def _method(tracker: Any) -> str:
    import codecarbon

    modes = [
        f"{type(h).__name__}:{getattr(h, '_mode', 'n/a')}"
        for h in getattr(tracker, "_hardware", [])
        if type(h).__name__ in ("CPU", "GPU")
    ]
    counters = any(m.split(":")[1] in ("intel_rapl", "intel_power_gadget", "apple_powermetrics") for m in modes)
    kind = "hardware counters" if counters else "estimate (no RAPL/NVML counters: CPU load x TDP)"
    return f"codecarbon {codecarbon.__version__} {kind}; {', '.join(modes) or 'no CPU reading'}"


def measure_energy(artifact: Artifact, batch: Inputs, hardware: HardwareProfile) -> Energy:
    """Run ``artifact`` for ``hardware.energy_s`` seconds under CodeCarbon; mJ per inference."""
    global _warmed
    if not _warmed:
        # CodeCarbon's first start detects hardware (~1.5 s), and the first window of a
        # process read several times too high here: run one throwaway window first.
        _warmed = True
        measure_energy(artifact, batch, HardwareProfile(**{**hardware.to_dict(), "energy_s": 0.5}))
    with torch_threads(hardware.threads):
        run, feed = prepared_runner(artifact, batch, hardware.threads)
        run(feed)
        tracker = _tracker(hardware)
        tracker.start()
        start, count = time.perf_counter(), 0
        while count < 10 or time.perf_counter() - start < hardware.energy_s:
            run(feed)
            count += 1
        elapsed = time.perf_counter() - start
        tracker.stop()
    data = tracker.final_emissions_data
    return Energy(
        mj_per_inference=float(data.cpu_energy) * KWH_TO_MJ / count,
        method=_method(tracker),
        inferences=count,
        seconds=elapsed,
    )
