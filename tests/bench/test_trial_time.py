from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from autoshrink.bench.trial_time import checkout, write_trial_time

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git repository")
def test_an_older_commit_is_unpacked_as_a_package(tmp_path: Path) -> None:
    first = subprocess.run(["git", "-C", str(REPO), "rev-list", "--max-parents=0", "HEAD"], capture_output=True,
                           text=True, check=True).stdout.split()[0]  # fmt: skip
    code = checkout(first, tmp_path)
    assert (code / "autoshrink" / "__init__.py").is_file()
    assert not (code / "tests").exists()  # only the package: the older tests are not what runs


def test_the_report_compares_medians_measured_in_one_run(tmp_path: Path) -> None:
    run = {"command": "autoshrink search", "seconds": 100.0, "trials": 20, "mean_trial_s": 4.0, "trial_phase_s": 80.0}
    results = {
        "commit abc": run | {"median_trial_s": 8.0, "best": "best under budget: trial 3 a"},
        "this checkout": run | {"median_trial_s": 2.0, "mean_trial_s": 2.0, "best": "best under budget: trial 1 b"},
    }
    text = write_trial_time(results, "abc", tmp_path).read_text()
    assert "**4.0x** lower (mean 2.0x)" in text
    assert "| commit abc | 20 | 8.00 |" in text and "trial 1 b" in text
    assert json.loads((tmp_path / "trial-time.json").read_text())["against"] == "abc"
