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


def test_a_locked_store_is_waited_for_and_any_other_error_raised_at_once() -> None:
    """A Ray worker held the store's write lock past what MLflow waits (about 20 s measured) on a
    loaded machine, and a Ctrl-C'd search ended in "database is locked" instead of marking its run
    killed. (Checked once for real: a run marked KILLED while another connection held BEGIN
    EXCLUSIVE for 25 s; too slow for the suite.)"""
    import pytest
    from mlflow.exceptions import MlflowException

    from autoshrink.tracking import PatientClient

    class Store:
        def __init__(self, errors: list[str]) -> None:
            self.errors, self.calls = errors, 0

        def set_terminated(self, run_id: str, status: str) -> str:
            self.calls += 1
            if self.errors:
                raise MlflowException(self.errors.pop(0))
            return status

    busy = Store(["(sqlite3.OperationalError) database is locked"] * 3)
    assert PatientClient(busy, first_wait_s=0.001).set_terminated("r", "KILLED") == "KILLED" and busy.calls == 4
    broken = Store(["no such run", "never reached"])
    with pytest.raises(MlflowException, match="no such run"):
        PatientClient(broken, first_wait_s=0.001).set_terminated("r", "KILLED")
    assert broken.calls == 1
    stuck = Store(["database is locked"] * 100)
    with pytest.raises(MlflowException, match="database is locked"):
        PatientClient(stuck, wait_s=0.05, first_wait_s=0.01).set_terminated("r", "KILLED")
    assert 2 <= stuck.calls < 10
    assert isinstance(Tracker("sqlite:///:memory:", "patient").client, PatientClient)


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
