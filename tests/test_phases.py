"""Where a candidate's time goes: phases are each counted once, where they ran."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from autoshrink.phases import collecting, phase


def test_nested_phases_count_their_own_time_once() -> None:
    with collecting() as seconds:
        with phase("compress"):
            time.sleep(0.01)
            with phase("distill"):
                time.sleep(0.03)
        with phase("distill"):
            time.sleep(0.01)
    assert 0.04 <= seconds["distill"] < 0.08
    assert 0.01 <= seconds["compress"] < 0.03  # its own time, without the distillation inside it


def test_nothing_is_kept_outside_a_collection_and_threads_collect_their_own() -> None:
    with phase("alone"):
        pass
    other: dict[str, float] = {}

    def work() -> None:
        with collecting() as seconds, phase("there"):
            time.sleep(0.01)
        other.update(seconds)

    with collecting() as here:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert here == {} and set(other) == {"there"}


def test_a_search_records_each_trials_phases_and_their_totals(tmp_path: Path) -> None:
    from tests.searching.conftest import runs, tiny_search
    from tests.tiny import tiny_workload

    result = tiny_search(tmp_path, tiny_workload(tmp_path), trials=2)
    trials = [r for r in runs(tmp_path, "e") if r.data.tags.get("autoshrink.role") == "trial"]
    assert len(trials) == 2
    for run in trials:
        assert {"time_score_s", "time_latency_s", "time_energy_s", "time_memory_s"} <= run.data.metrics.keys()
    assert all("time_quantize_s" in run.data.metrics for run in trials)  # every plan is lowered by quantize, fp32 too
    assert result.timings["phase_latency_s"] > 0 and result.timings["phase_score_s"] > 0
