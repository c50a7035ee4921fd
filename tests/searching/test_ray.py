"""What is Ray's own: measurement pinned to a node, the searcher, joining a cluster, settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoshrink.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]

TWO_NODES = """
import json, sys, pathlib
import ray
from ray.cluster_utils import Cluster
from autoshrink.config import Budget
from autoshrink.searching import search
from autoshrink.searching.ray import RayBackend
from tests.tiny import tiny_workload, SPACE, HW

tmp = pathlib.Path(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
edge = cluster.add_node(num_cpus=0, resources={"edge": 1})
ray.init(address=cluster.address, logging_level="ERROR")
result = search(tiny_workload(tmp), budget=Budget(latency_ms=1000), space=SPACE, hardware=HW, trials=2,
                experiment="edge", tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                backend=RayBackend(address=cluster.address, measure_on="edge", max_concurrent_trials=2))
print(json.dumps({"edge": edge.node_id, "n": result.n_complete}))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_every_latency_is_measured_on_the_node_with_the_resource(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([sys.executable, "-c", TWO_NODES, str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["n"] == 2
    import optuna
    from mlflow.tracking import MlflowClient

    study = optuna.load_study(study_name="edge", storage=f"sqlite:///{tmp_path}/optuna.db")
    hosts = [t.user_attrs["outcome"]["host"] for t in study.trials]
    edge = info["edge"][:12]
    assert hosts and all(h.endswith("/" + edge) for h in hosts), (hosts, edge)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("edge")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("autoshrink.role") == "search"][0]
    assert parent.data.tags["baseline_host"].endswith("/" + edge)
    trial_runs = [r for r in client.search_runs([exp.experiment_id]) if "autoshrink.trial" in r.data.tags]
    assert all(r.data.tags["host"].endswith("/" + edge) for r in trial_runs)


def test_a_resource_no_node_has_is_a_clear_error(ray_session) -> None:
    from autoshrink.searching.ray import RayBackend

    with pytest.raises(ConfigError, match="no node of the Ray cluster has the resource 'tpu-edge'"):
        RayBackend(measure_on="tpu-edge")._ensure_ray()


def test_settings_are_checked() -> None:
    from autoshrink.searching.ray import RayBackend

    with pytest.raises(ConfigError, match="max_concurrent_trials must be >= 1"):
        RayBackend(max_concurrent_trials=0)
    assert "measure_on='edge'" in repr(RayBackend(measure_on="edge"))


def test_an_unexpected_worker_error_reaches_the_driver_with_its_message(tmp_path: Path, ray_session) -> None:
    from dataclasses import replace

    from tests.searching.conftest import make_backend, tiny_search
    from tests.tiny import SPACE, tiny_workload

    def broken(artifact, data):
        if artifact.plan.bits == 8:
            raise KeyError("the evaluator lost its labels")  # not a candidate error: a bug in the user's code
        from autoshrink.measuring.accuracy import top1_accuracy

        return top1_accuracy(artifact, data)

    import tempfile

    def tune_folders() -> set[Path]:  # Tune's results folders and the runs inside them
        root = Path(tempfile.gettempdir())
        return set(root.glob("autoshrink-ray-results*")) | set(root.glob("autoshrink-ray-results*/*"))

    before = tune_folders()
    int8 = replace(SPACE, bits=(8,))  # every trial reaches the broken evaluator, two of them at once
    result = tiny_search(tmp_path, tiny_workload(tmp_path, evaluate=broken), trials=2, experiment="worker-error",
                         space=int8, backend=make_backend("ray"))  # fmt: skip
    assert tune_folders() == before  # Tune's folder removed
    assert result.n_failed == 2
    assert all("KeyError" in e and "the evaluator lost its labels" in e for e in result.failures.values())


OWN_RAY = """
import os
from autoshrink.searching.ray import RayBackend
backend = RayBackend(num_cpus=1)
backend._ensure_ray()
folder = backend._temp_dir
assert folder and os.path.isdir(folder), folder
backend.close()
print(os.path.exists(folder))
"""


@pytest.mark.slow
def test_a_local_ray_started_by_the_backend_leaves_no_session_files() -> None:
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([sys.executable, "-c", OWN_RAY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_searcher_pickles_as_the_key_of_its_driver_side_search(tmp_path: Path) -> None:
    """Tune pickles its searcher; the study, recorder and callbacks (a console's lock) stay on the driver."""
    pytest.importorskip("ray")
    import pickle
    import threading

    from ray import cloudpickle

    from autoshrink.searching.ray_searcher import DriverSearch, registered, study_searcher
    from tests.tiny import SPACE

    lock = threading.RLock()  # what rich's console holds, and pickle refuses
    search = DriverSearch(lock, SPACE, lock, tmp_path, [lambda study, trial: lock.acquire()])
    with registered(search) as key:
        for dumps in (pickle.dumps, cloudpickle.dumps):
            copy = pickle.loads(dumps(study_searcher(key)))
            assert copy.search is search  # the same driver-side state, nothing dropped
    with pytest.raises(RuntimeError, match="is not running in this process"):
        copy.suggest("after-the-search")


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_the_cli_on_ray_stops_on_ctrl_c_or_sigterm_and_keeps_its_trials(tmp_path: Path, sig: str) -> None:
    """Tune's Ctrl-C handler ended the run quietly (a best registered after one trial, exit 0), and
    ``ray.init``'s SIGTERM handler aborted the process: both now stop the search as a local one stops.
    The output goes to a file: the command line hands Tune a progress callback that holds the
    console, which used to fail to pickle (a finished search on Ray is `test_search`'s, in process)."""
    pytest.importorskip("ray")
    import signal
    import time

    from tests.searching.conftest import study
    from tests.tiny import write_files

    files = write_files(tmp_path)
    command = [sys.executable, "-m", "autoshrink.cli", "search", "--backend", "ray", "--trials", "12",
               "--workload", f"{files['workload']}:tiny", "--workload-arg", "n=4000", "--space", str(files["space"]),
               "--hardware", str(files["hardware"]), "--latency-budget-ms", "1000", "--experiment", "stop",
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--trial-cpus", "1", "--max-concurrent-trials", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp_path / "search.log"
    with log.open("w") as out:  # Ctrl-C reaches the search even when pytest itself ignores SIGINT
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        try:
            deadline = time.time() + 300
            while "1/12 done" not in log.read_text() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            proc.send_signal(getattr(signal, sig))
            returncode = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:  # it did not stop: do not leave it running
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert returncode == 130, output[-3000:]
    assert "1/12 done" in output  # the progress callback ran in Tune and wrote to the file
    assert "finished trial(s) are kept; run the same command again to resume" in output
    assert "registered:" not in output
    finished = [t for t in study(tmp_path, "stop").trials if t.state.name == "COMPLETE"]
    assert 1 <= len(finished) < 12
