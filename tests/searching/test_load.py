"""`load_best`: what it answers when no logged model meets the budget asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.config import Budget
from autoshrink.searching import load_best
from tests.searching.conftest import tiny_search
from tests.tiny import tiny_workload


def test_load_best_under_a_budget_nothing_meets(tmp_path: Path) -> None:
    tiny_search(tmp_path, tiny_workload(tmp_path), trials=2)
    with pytest.raises(LookupError, match="no logged Pareto model of 'e' meets"):
        load_best("e", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", budget=Budget(latency_ms=1e-9))
