"""A search's cache: int8 calibration ranges kept on disk, so a resumed search (or another
process) reuses them; other entries stay in memory."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from autoshrink.config import Budget
from autoshrink.searching import Progress
from autoshrink.searching.cache import SearchCache
from autoshrink.space import SearchSpace
from tests.conftest import count_calibrations
from tests.searching.conftest import run_search

INT8 = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(8,), distill_epochs=(0,))  # one plan


def test_only_stored_strings_reach_the_disk_and_a_pickled_cache_keeps_its_folder(tmp_path: Path) -> None:
    cache = SearchCache(tmp_path)
    cache["ort-calibration:k"] = "ranges"
    cache["ort-calibration:not-a-string"] = {"a": 1}
    cache["speed"] = "in memory only"
    assert len(list(tmp_path.iterdir())) == 1
    shipped = pickle.loads(pickle.dumps(cache))  # as a Ray worker receives it
    assert shipped.folder == tmp_path and shipped["speed"] == "in memory only"
    fresh = SearchCache(tmp_path)
    assert fresh.get("ort-calibration:k") == "ranges" and fresh.loaded == 1
    assert "ort-calibration:not-a-string" not in fresh and "speed" not in fresh
    assert "ort-calibration:other" not in fresh and fresh.get("ort-calibration:other", 0) == 0
    assert "ort-calibration:k" not in SearchCache(None)  # no folder: memory only
    assert SearchCache(tmp_path).setdefault("ort-calibration:k", "other") == "ranges"  # read from disk first


def test_a_resumed_search_reuses_the_calibration_of_the_interrupted_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoshrink.searching.trial import TrialRunner

    calibrations = count_calibrations(monkeypatch)
    real = TrialRunner.measure

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if calibrations:  # the int8 candidate is built and calibrated: ctrl-c while it is measured
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TrialRunner, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_search(tmp_path, Budget(latency_ms=1000.0), trials=1, space=INT8)
    assert len(calibrations) == 1
    assert len(list((tmp_path / "cache" / "exp").iterdir())) == 1
    monkeypatch.setattr(TrialRunner, "measure", real)
    said: list[str] = []

    def progress(p: Progress) -> None:
        said.append(p.last)

    result = run_search(tmp_path, Budget(latency_ms=1000.0), trials=1, space=INT8, progress=progress)
    assert result.n_complete == 1
    assert len(calibrations) == 1, "the resumed search calibrated the same graph again"
    assert any("reused 1 int8 calibration" in line for line in said), said
