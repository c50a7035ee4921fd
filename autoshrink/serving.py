"""An MLflow ``pyfunc`` model that serves any autoshrink artifact file (used for OpenVINO ones).

ONNX Runtime artifacts are logged with MLflow's ONNX flavor and torch ones with its PyTorch
flavor; an OpenVINO artifact has no MLflow flavor, and an ONNX Runtime one that keeps layers at a
higher precision must not be opened with ONNX Runtime's default rewrites (MLflow's ONNX flavor
would), so those are logged as this ``pyfunc`` model:
``mlflow.pyfunc.load_model(uri).predict(inputs)`` loads the exact measured file and runs it.
Importing this module imports MLflow: only model logging and serving do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel


class ArtifactModel(PythonModel):
    """Serves the artifact file logged under ``artifacts["artifact"]``."""

    def load_context(self, context: Any) -> None:
        from autoshrink.artifact import load_artifact

        self.artifact = load_artifact(context.artifacts["artifact"])

    # ``np.ndarray`` is a hint MLflow infers no schema from, so it passes inputs through as given
    # (an array, a DataFrame, or a dict of arrays for a model with several inputs).
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        data: Any = model_input
        if hasattr(data, "to_numpy"):  # a DataFrame: one column per input or one input
            data = data.to_numpy()
        if isinstance(data, dict):
            out = self.artifact({k: torch.from_numpy(np.asarray(v)) for k, v in data.items()})
        else:
            out = self.artifact(torch.from_numpy(np.asarray(data)))
        return np.asarray(out.numpy())
