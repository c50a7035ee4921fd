from __future__ import annotations

import subprocess
import sys


def test_import_starts_nothing_heavy() -> None:
    code = (
        "import sys, autoshrink; autoshrink.Plan(prune=0.5); autoshrink.Budget(latency_ms=1);"
        "heavy = [m for m in ('torch', 'mlflow', 'ray', 'codecarbon', 'onnxruntime', 'optuna', 'openvino', 'nncf', 'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_functions_stay_functions_after_submodule_imports() -> None:
    # A subpackage named like a public function would shadow it once imported.
    code = (
        "import autoshrink.searching, autoshrink.pipeline, autoshrink.measuring, autoshrink.cli\n"
        "import autoshrink\n"
        "names = ['compress', 'measure', 'search', 'load_best', 'load_artifact']\n"
        "bad = [n for n in names if not callable(getattr(autoshrink, n)) or type(getattr(autoshrink, n)).__name__ == 'module']\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    import autoshrink

    for name in ("Plan", "Artifact", "Measurement", "HardwareProfile", "Budget", "SearchSpace", "SearchResult"):
        assert isinstance(getattr(autoshrink, name), type)
