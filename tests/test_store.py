"""`autoshrink.store`: a store folder that cannot be written, and an experiment already being searched."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from autoshrink.searching import search
from autoshrink.store import StoreError
from tests.searching.conftest import BUDGET, tiny_search
from tests.tiny import HW, SPACE, tiny_workload


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_store(tmp_path: Path) -> None:
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StoreError, match="cannot write to the store folder"):
            search(tiny_workload(tmp_path), budget=BUDGET, space=SPACE, hardware=HW, trials=1,
                   tracking_uri=f"sqlite:///{store}/mlflow.db")  # fmt: skip
    finally:
        store.chmod(stat.S_IRWXU)


def test_store_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write to the store folder"):
        search(tiny_workload(tmp_path), budget=BUDGET, space=SPACE, hardware=HW, trials=1,
               tracking_uri=f"sqlite:///{blocker}/sub/mlflow.db")  # fmt: skip


def test_the_same_experiment_searched_twice_at_once_is_refused(tmp_path: Path) -> None:
    from autoshrink.store import experiment_lock

    with experiment_lock(tmp_path, "e"), pytest.raises(StoreError, match=r"'e' is being searched right now by pid \d+"):
        tiny_search(tmp_path, tiny_workload(tmp_path))
