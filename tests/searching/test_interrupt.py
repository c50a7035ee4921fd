"""A search stopped part way (ctrl-c at any stage, a full disk, a bug outside build and measure)
loses no finished trial, leaves no MLflow run RUNNING, and re-running it resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoshrink.store import StoreError
from tests.searching.conftest import completed, runs, tiny_search
from tests.tiny import tiny_workload


def _assert_clean_store(tmp: Path, experiment: str, n: int) -> None:
    """Exactly ``n`` finished trials, one MLflow run each, nothing left RUNNING."""
    assert len(completed(tmp, experiment)) == n
    all_runs = runs(tmp, experiment)
    trials = sorted(int(r.data.tags["autoshrink.trial"]) for r in all_runs if "autoshrink.trial" in r.data.tags)
    assert trials == sorted(completed(tmp, experiment))
    assert all(r.info.status in ("FINISHED", "FAILED") for r in all_runs), [r.info.status for r in all_runs]


def test_disk_full_while_saving_a_candidate_stops_cleanly_and_resumes(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.artifact import Artifact

    real_save = Artifact.save
    saved: list[str] = []

    def save(self, path):
        saved.append(str(path))
        if len(saved) == 3:  # baseline, trial 0, then the disk is full
            raise OSError(28, "No space left on device")
        return real_save(self, path)

    monkeypatch.setattr(Artifact, "save", save)
    wl = tiny_workload(tmp_path)
    with pytest.raises(StoreError, match="cannot save the candidate's artifact.*No space left on device"):
        tiny_search(tmp_path, wl, trials=3)
    assert len(completed(tmp_path)) == 1
    monkeypatch.setattr(Artifact, "save", real_save)
    result = tiny_search(tmp_path, wl, trials=3)
    assert result.n_complete == 3
    _assert_clean_store(tmp_path, "e", 3)


# -- interrupted at every stage: nothing finished is lost, re-running resumes ----------------------


def _interrupt_once(monkeypatch, owner: Any, name: str, after: int = 0) -> list[int]:
    """Make ``owner.name`` raise KeyboardInterrupt on its call number ``after`` (once)."""
    real = getattr(owner, name)
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == after + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


@pytest.mark.parametrize(
    ("where", "owner", "name", "after"),
    [
        ("baseline", "autoshrink.searching.trial.TrialRunner", "build", 0),
        ("compression", "autoshrink.searching.trial.TrialRunner", "build", 2),
        ("measurement", "autoshrink.searching.trial.TrialRunner", "measure", 2),
        ("recording", "autoshrink.searching.recorder.Recorder", "record", 1),
        ("model logging", "autoshrink.tracking.Tracker", "log_model", 0),
        ("registration", "autoshrink.tracking.Tracker", "register_best", 0),
    ],
)
def test_ctrl_c_at_every_stage_then_resume(tmp_path: Path, monkeypatch, where, owner, name, after) -> None:
    import importlib

    module_name, _, cls_name = owner.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    wl = tiny_workload(tmp_path)
    _interrupt_once(monkeypatch, cls, name, after)
    with pytest.raises(KeyboardInterrupt):
        tiny_search(tmp_path, wl, trials=3)
    before = completed(tmp_path) if (tmp_path / "optuna.db").exists() else {}
    monkeypatch.undo()
    result = tiny_search(tmp_path, wl, trials=3)
    after_ = completed(tmp_path)
    assert all(after_[n] == v for n, v in before.items()), f"{where}: a finished trial changed or was lost"
    assert result.n_complete == 3 and result.registered_model == "autoshrink-e@best"
    _assert_clean_store(tmp_path, "e", 3)
    pareto_runs = [r for r in runs(tmp_path, "e") if r.data.tags.get("pareto") == "True"]
    assert pareto_runs and all("autoshrink.model_uri" in r.data.tags for r in pareto_runs)
    parents = [r for r in runs(tmp_path, "e") if r.data.tags.get("autoshrink.role") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_an_interrupted_search_marks_its_run_killed(tmp_path: Path, monkeypatch) -> None:
    from autoshrink.searching.trial import TrialRunner

    _interrupt_once(monkeypatch, TrialRunner, "measure", 1)
    with pytest.raises(KeyboardInterrupt):
        tiny_search(tmp_path, tiny_workload(tmp_path), trials=3)
    parent = [r for r in runs(tmp_path, "e") if r.data.tags.get("autoshrink.role") == "search"][0]
    assert parent.info.status == "KILLED"


def test_a_bug_outside_build_and_measure_stops_the_search_and_resume_cleans_up(tmp_path: Path, monkeypatch) -> None:
    # A ValueError raised while sampling or recording used to become an unrecorded FAIL that the
    # search skipped silently (one trial fewer) and that left its MLflow run RUNNING.
    from autoshrink.searching.recorder import Recorder

    real = Recorder.record
    calls: list[int] = []

    def record(self, trial, run_id, outcome):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("bug in recording")
        return real(self, trial, run_id, outcome)

    monkeypatch.setattr(Recorder, "record", record)
    wl = tiny_workload(tmp_path)
    with pytest.raises(ValueError, match="bug in recording"):
        tiny_search(tmp_path, wl, trials=3)
    monkeypatch.undo()
    result = tiny_search(tmp_path, wl, trials=3)
    assert result.n_complete == 3 and result.n_failed == 0
    _assert_clean_store(tmp_path, "e", 3)
