"""The search-cost report: the rule on and off, or this code against an earlier commit's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._report import Report
from benchmarks.search_cost import checkout, write


def _run(seed: int, label: str, seconds: float, phases: dict[str, float]) -> dict:
    return {"seed": seed, "rule": True, "run": label, "seconds": seconds, "trials": 12, "complete": 12 if seconds < 2000 else 5,
            "distill_s": phases.get("distill", 0.0), "memory_s": 1.0, "session_s": 2.0, "stopped": 0,
            "best": f"best under budget: trial 0 ({label})", "phases": phases}  # fmt: skip


def test_before_and_after_rows_and_their_medians(tmp_path: Path) -> None:
    results = [_run(0, "after", 1147.0, {"distill": 145.0, "prune": 88.0}), _run(0, "before (417f8bf)", 2900.0, {})]
    path = write(results, Report("search-cost", tmp_path, stem="search-cost-lite1"), "lite1")
    text = path.read_text()
    assert "by the code of commit 417f8bf (`before`)" in text
    assert "| 0 | after | 1147 | 12 of 12 | 145 |" in text and "| 0 | before (417f8bf) | 2900 | 5 of 12 | 0 |" in text
    assert "Median whole command: 1147 s (after), 2900 s (before (417f8bf))" in text
    assert "| 0 | after | 145.0 | 88.0 |" in text and "| 0 | before (417f8bf) | 0.0 | 0.0 |" in text


def test_a_commit_is_checked_out_as_code_to_run(tmp_path: Path) -> None:
    if not (Path(__file__).resolve().parents[2] / ".git").exists():
        pytest.skip("not a git checkout")
    code = checkout("HEAD", tmp_path / "code")
    assert (code / "autoshrink" / "__init__.py").is_file() and (code / "benchmarks" / "search_cost.py").is_file()
