"""Helpers shared by the search tests: a small search on the residual CNN in a temporary store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoshrink.config import Budget, HardwareProfile
from autoshrink.searching import SearchResult, search
from autoshrink.space import SearchSpace
from tests.conftest import make_case

SPACE = SearchSpace(prune=(0.0, 0.6, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0, 1))
HW = HardwareProfile(warmup_s=0.0, repeats=10, energy_s=0.1)


BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.slow)]


def make_backend(name: str, concurrency: int = 2) -> Any:
    """A backend by name: the local one, or Ray on the test session's local 2-CPU instance."""
    if name == "local":
        from autoshrink.searching import LocalBackend

        return LocalBackend()
    from autoshrink.searching.ray import RayBackend

    return RayBackend(num_cpus=2, max_concurrent_trials=concurrency)


@pytest.fixture(scope="session")
def ray_session() -> Any:
    """One local Ray for every Ray test (starting it costs seconds); stopped at the end."""
    from autoshrink.searching.ray import RayBackend

    backend = RayBackend(num_cpus=2)
    backend._ensure_ray()
    yield backend
    backend.close()


@pytest.fixture(scope="module", params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return str(request.param)


def run_search(tmp: Path, budget: Budget, trials: int, experiment: str = "exp", **kwargs: Any) -> SearchResult:
    """A search on the small residual CNN with a temporary MLflow/Optuna store in ``tmp``."""
    model, (x, y), example = make_case("rescnn")
    options: dict[str, Any] = {"space": SPACE, "hardware": HW, "seed": 0} | kwargs
    return search(
        model,
        train_data=(x[:256], y[:256]),
        eval_data=(x[256:384], y[256:384]),
        test_data=(x[384:], y[384:]),
        example_input=example,
        budget=budget,
        trials=trials,
        experiment=experiment,
        tracking_uri=f"sqlite:///{tmp}/mlflow.db",
        **options,
    )


def client(tmp: Path) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def study(tmp: Path, name: str = "exp") -> Any:
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/optuna.db")


def runs(tmp: Path, experiment: str) -> list[Any]:
    c = client(tmp)
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def size_budget() -> Budget:
    # Latency always met; size splits the space: about half of the architectures are over.
    return Budget(latency_ms=1000.0, size_mb=0.05)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, backend_name: str) -> tuple[Path, SearchResult]:
    tmp = tmp_path_factory.mktemp(f"search-{backend_name}")
    return tmp, run_search(tmp, size_budget(), trials=8, backend=make_backend(backend_name))
