"""autoshrink: find the best real compressed version of a trained PyTorch model.

Importing the package is cheap: torch, ONNX Runtime, MLflow, Ray and CodeCarbon load only
when a function that needs them is called.

Example:
    >>> import autoshrink
    >>> autoshrink.Plan(prune=0.5, bits=8).label
    'prune0.5-int8'
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Plan": "autoshrink.plan",
    "Budget": "autoshrink.config",
    "HardwareProfile": "autoshrink.config",
    "ConfigError": "autoshrink.config",
    "Artifact": "autoshrink.artifact",
    "load_artifact": "autoshrink.artifact",
    "compress": "autoshrink.pipeline",
    "CompressionError": "autoshrink.techniques",
    "measure": "autoshrink.measuring",
    "Measurement": "autoshrink.measuring",
    "workloads": "autoshrink.workloads",
    "SearchSpace": "autoshrink.space",
    "RunConfig": "autoshrink.runfile",
    "search": "autoshrink.searching",
    "load_best": "autoshrink.searching",
    "SearchResult": "autoshrink.searching",
    "Candidate": "autoshrink.searching",
    "Selection": "autoshrink.searching",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autoshrink' has no attribute {name!r}")
    module = import_module(_EXPORTS[name])
    value = module if name == "workloads" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
