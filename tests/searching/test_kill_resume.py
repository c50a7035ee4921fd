"""A search killed with SIGKILL mid-trial resumes with the same call and loses nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.searching.conftest import client, mlflow_uri, study

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, time
from autoshrink.config import Budget
from autoshrink.measuring.accuracy import top1_accuracy
from tests.searching.conftest import make_backend, run_search

def slow(artifact, data):
    time.sleep(0.3)
    return top1_accuracy(artifact, data)

run_search(__import__("pathlib").Path(sys.argv[1]), Budget(latency_ms=1000.0), trials=3, experiment="kill",
     evaluate=slow if sys.argv[2] == "slow" else None, backend=make_backend(sys.argv[3]))
"""


def _complete(tmp: Path) -> list[int]:
    try:
        return [t.number for t in study(tmp, "kill").trials if t.state.name == "COMPLETE"]
    except KeyError:  # the study does not exist yet
        return []


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_sigkill_mid_search_then_resume(tmp_path: Path, backend: str) -> None:
    # A killed process cannot remove its temporary folders (a memory measurement's, Ray's results):
    # they go under tmp_path, not into the machine's /tmp; Ray's session folder must stay short-pathed
    # in /tmp (`RayBackend`), so the one the killed run leaves there is removed below.
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path / "tmp")}
    ray_sessions = set(Path("/tmp").glob("ray-*"))
    mlflow_uri(tmp_path)  # the store made here: a killed process leaves no empty store of its own behind
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), "slow", backend], cwd=ROOT, env=env)
    deadline = time.time() + 240
    while len(_complete(tmp_path)) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    for folder in set(Path("/tmp").glob("ray-*")) - ray_sessions:
        shutil.rmtree(folder, ignore_errors=True)
    before = _complete(tmp_path)
    assert 1 <= len(before) < 3, "the kill should land mid-search"

    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "fast", backend], cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0
    after = _complete(tmp_path)
    assert len(after) == 3 and set(before) <= set(after)
    c = client(tmp_path)
    runs = c.search_runs([c.get_experiment_by_name("kill").experiment_id], max_results=100)
    trial_runs = [r for r in runs if r.data.tags.get("autoshrink.role") == "trial"]
    assert sorted(int(r.data.tags["autoshrink.trial"]) for r in trial_runs) == sorted(after)
    assert [r.data.tags.get("autoshrink.role") for r in runs].count("search") == 1
    assert all(r.info.status == "FINISHED" for r in runs)
