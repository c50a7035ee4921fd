"""An MLflow ``pyfunc`` model that serves any autoshrink artifact file (used for OpenVINO ones).

ONNX Runtime artifacts are logged with MLflow's ONNX flavor and torch ones with its PyTorch
flavor; an OpenVINO artifact has no MLflow flavor, so it is logged as this ``pyfunc`` model:
``mlflow.pyfunc.load_model(uri).predict(inputs)`` loads the exact measured file and runs it.
Importing this module imports MLflow: only model logging and serving do.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

# MLflow warns, when this class is defined, that predict has no type hints; they would make it
# convert inputs to lists, which an artifact does not take.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)

    class ArtifactModel(PythonModel):
        """Serves the artifact file logged under ``artifacts["artifact"]``."""

        def load_context(self, context: Any) -> None:
            from autoshrink.artifact import load_artifact

            self.artifact = load_artifact(context.artifacts["artifact"])

        # No type hints on predict: MLflow reads them to infer a signature and warns about Any.
        def predict(self, context, model_input, params=None):
            import torch

            if hasattr(model_input, "to_numpy"):  # a DataFrame: one column per input or one input
                model_input = model_input.to_numpy()
            if isinstance(model_input, dict):
                out = self.artifact({k: torch.from_numpy(np.asarray(v)) for k, v in model_input.items()})
            else:
                out = self.artifact(torch.from_numpy(np.asarray(model_input)))
            return np.asarray(out.numpy())
