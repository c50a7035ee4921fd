"""`Tracker`: how the MLflow experiment is made."""

from __future__ import annotations

from pathlib import Path

from autoshrink.tracking import EXPERIMENT_KIND, Tracker


def test_the_experiment_is_a_model_training_experiment_in_the_mlflow_ui(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "kind")
    key, value = EXPERIMENT_KIND
    assert tracker.client.get_experiment(tracker.experiment_id).tags[key] == value == "custom_model_development"
    old = tracker.client.create_experiment("older")  # made before the tag existed: set when opened
    Tracker(uri, "older")
    assert tracker.client.get_experiment(old).tags[key] == value


def test_a_model_with_layers_kept_in_float_is_served_as_it_was_measured(tmp_path: Path) -> None:
    """MLflow's ONNX flavour opens ONNX Runtime with its default rewrites, one of which quantizes
    the float layers again; such a model is logged through autoshrink's own session instead."""
    import mlflow
    import torch

    from tests.conftest import float_layer_case

    art, x = float_layer_case()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "served")
    run = tracker.client.create_run(tracker.experiment_id).info.run_id
    model_uri = tracker.log_model(run, art, x[:2])
    mlflow.set_tracking_uri(uri)
    served = torch.from_numpy(mlflow.pyfunc.load_model(model_uri).predict(x[64:].numpy()))
    with torch.no_grad():
        expected = art(x[64:])
    assert float((served - expected).abs().max() / expected.abs().max()) < 1e-5
