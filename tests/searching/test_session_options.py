"""Session options through a search: saved with each artifact, tagged on MLflow, loaded back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autoshrink.artifact import load_artifact
from autoshrink.config import HardwareProfile
from autoshrink.searching import load_best
from autoshrink.sessions import SessionOptions
from autoshrink.space import SearchSpace
from tests.searching.conftest import client, tiny_search
from tests.tiny import HW, tiny_workload


def test_fixed_options_round_trip_through_mlflow(tmp_path: Path) -> None:
    fixed = replace(HW, session={"memory_arena": False, "graph_optimization": "extended"})
    int8_only = SearchSpace(prune=(0.0, 0.3, 0.3), rank=("off",), bits=(8,), distill_epochs=(0,))
    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=2, hardware=fixed, space=int8_only)
    wanted = SessionOptions(memory_arena=False, graph_optimization="extended")
    runs = client(tmp_path).search_runs([client(tmp_path).get_experiment_by_name("e").experiment_id])
    onnx = [r for r in runs if r.data.tags.get("runtime") == "onnxruntime"]
    assert onnx and {r.data.tags["session"] for r in onnx} == {wanted.describe()}
    int8 = [c for c in result.pareto if c.measurement.runtime == "onnxruntime"]
    assert int8 and all(c.measurement.session == wanted.to_dict() for c in int8)
    art = load_best("e", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert art.runtime == "onnxruntime" and art.options == wanted
    assert art.session().get_session_options().enable_cpu_mem_arena is False
    assert all(c.artifact_path and load_artifact(c.artifact_path).options == wanted for c in int8)
    assert isinstance(HardwareProfile.from_dict(fixed.to_dict()).session, SessionOptions)
