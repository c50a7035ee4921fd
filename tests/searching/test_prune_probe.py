"""Pruning by sensitivity in a search: the channel groups probed once per study, kept, logged,
handed to every candidate, reused on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoshrink.config import Budget
from autoshrink.searching import Progress
from autoshrink.space import SearchSpace
from tests.searching.conftest import client, run_search, study

PRUNED = SearchSpace(prune=(0.2, 0.4, 0.2), rank=("off",), bits=(32,), distill_epochs=(0,))


def test_a_search_probes_the_groups_once_logs_them_and_a_resume_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoshrink.techniques import _allocate

    probes: list[int] = []
    original = _allocate._probe
    monkeypatch.setattr(_allocate, "_probe", lambda *a, **k: probes.append(1) or original(*a, **k))
    said: list[str] = []

    def progress(p: Progress) -> None:
        said.append(f"{p.stage}: {p.last}")

    result = run_search(tmp_path, Budget(latency_ms=1000.0), trials=3, space=PRUNED, sampler="random", progress=progress)
    assert probes == [1]  # once for the search, not once per pruned candidate
    assert sum("probing each channel group" in line for line in said) == 1
    c = client(tmp_path)
    rows = json.loads(Path(c.download_artifacts(result.parent_run_id, "prune_sensitivity.json", str(tmp_path))).read_text())
    assert len(rows) >= 2 and all(r["error"] >= 0 and r["params"] > 0 for r in rows)
    stored = study(tmp_path).user_attrs["prune_probe"]["groups"]
    assert [g["name"] for g in stored] == [r["name"] for r in rows]

    said.clear()
    run_search(tmp_path, Budget(latency_ms=1000.0), trials=4, space=PRUNED, sampler="random", progress=progress)
    assert probes == [1]  # the resumed search took it from the study
    assert any("reusing the channel groups' sensitivity" in line for line in said)
    assert len(study(tmp_path).trials) == 4
