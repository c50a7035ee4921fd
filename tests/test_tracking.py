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
