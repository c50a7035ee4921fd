from __future__ import annotations

import subprocess
import sys


def test_import_starts_nothing_heavy() -> None:
    code = (
        "import sys, autoshrink; autoshrink.Plan(prune=0.5); autoshrink.Budget(latency_ms=1);"
        "heavy = [m for m in ('torch', 'mlflow', 'ray', 'codecarbon', 'onnxruntime', 'optuna') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_names() -> None:
    import autoshrink

    for name in ("Plan", "compress", "measure", "Artifact", "Measurement", "HardwareProfile", "Budget", "workloads"):
        assert hasattr(autoshrink, name)
