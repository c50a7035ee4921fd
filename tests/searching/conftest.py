"""Helpers shared by the search tests: a small search on the residual CNN in a temporary store."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoshrink.config import Budget, HardwareProfile
from autoshrink.measuring import Measurement
from autoshrink.measuring.latency import Latency
from autoshrink.plan import Plan
from autoshrink.searching import Progress, SearchResult, search
from autoshrink.searching.result import Candidate
from autoshrink.space import SearchSpace
from tests.conftest import make_case
from tests.tiny import HW as TINY_HW
from tests.tiny import SPACE as TINY_SPACE

SPACE = SearchSpace(prune=(0.0, 0.6, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0, 1))
HW = HardwareProfile(warmup_s=0.0, repeats=10, energy_s=0.1)


#: The validation split of `run_search` (``x[256:384]``): what the default accuracy tolerance is sized by.
VAL_SAMPLES = 128


def make_candidate(n: int, acc: float, ms: float, size: int = 100, budget_ms: float = 2.0) -> Candidate:
    """Trial ``n``'s candidate, measured at ``acc`` and ``ms``, under a ``budget_ms`` latency budget."""
    m = Measurement(acc, ms, ms, 0.1, size, 10, "torch", 1, 1, 150, 1.0, "-")
    return Candidate(n, Plan(), m, {"latency_ms": ms - budget_ms})


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


@functools.cache
def _empty_mlflow_store() -> Path:
    """An empty MLflow store, made once per test process (removed at its exit)."""
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="autoshrink-test-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()  # builds the schema
    return folder / "mlflow.db"


def mlflow_uri(tmp: Path) -> str:
    """``sqlite:///{tmp}/mlflow.db``, a new store started as a copy of an empty one: MLflow builds a
    new store's schema by running its migrations (1.4-2.3 s here), and the suite makes about 80
    stores. Autoshrink's own first use of a new store is tested where the store is not made here
    (`tests/test_tracking.py`, `tests/test_cli.py`)."""
    store = tmp / "mlflow.db"
    if not store.exists():
        shutil.copyfile(_empty_mlflow_store(), store)
    return f"sqlite:///{store}"


def run_search(tmp: Path, budget: Budget, trials: int, experiment: str = "exp", **kwargs: Any) -> SearchResult:
    """A search on the small residual CNN with a temporary MLflow/Optuna store in ``tmp`` (the
    distillation early-stop rule off unless asked for: these tests count finished trials)."""
    model, (x, y), example = make_case("rescnn")
    options: dict[str, Any] = {"space": SPACE, "hardware": HW, "seed": 0, "early_stop_margin": None} | kwargs
    return search(
        model,
        train_data=(x[:256], y[:256]),
        eval_data=(x[256 : 256 + VAL_SAMPLES], y[256 : 256 + VAL_SAMPLES]),
        test_data=(x[384:], y[384:]),
        example_input=example,
        budget=budget,
        trials=trials,
        experiment=experiment,
        tracking_uri=mlflow_uri(tmp),
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


def completed(tmp: Path, experiment: str = "e") -> dict[int, Any]:
    """The objective values of each finished trial of ``experiment``, by trial number."""
    return {t.number: t.values for t in study(tmp, experiment).trials if t.state.name == "COMPLETE"}


#: A latency budget every candidate of the tiny workload meets (`tiny_search`).
BUDGET = Budget(latency_ms=1000.0)


def tiny_search(tmp: Path, wl: Any, trials: int = 2, experiment: str = "e", **kwargs: Any) -> SearchResult:
    """`search` of ``wl`` (a `tests.tiny` workload, or whatever a test passes in its place) on the
    tiny space and hardware under `BUDGET`, with a temporary MLflow/Optuna store in ``tmp``."""
    options: dict[str, Any] = {"space": TINY_SPACE, "hardware": TINY_HW, "budget": BUDGET, "early_stop_margin": None} | kwargs
    return search(wl, trials=trials, experiment=experiment, tracking_uri=mlflow_uri(tmp), **options)


def size_budget() -> Budget:
    # Latency always met; size splits the space: about half of the architectures are over.
    return Budget(latency_ms=1000.0, size_mb=0.05)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, backend_name: str) -> tuple[Path, SearchResult]:
    tmp = tmp_path_factory.mktemp(f"search-{backend_name}")
    return tmp, run_search(tmp, size_budget(), trials=8, backend=make_backend(backend_name))


class NullTracker:
    """Stands in for `Tracker` where a test records trials without an MLflow store."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: "run"


def recorded_study(outcomes: list[Any], budget: Budget) -> Any:
    """An in-memory study with one trial per `TrialOutcome`, recorded as a search records them."""
    import optuna

    from autoshrink.searching.recorder import Recorder

    recorder = Recorder(NullTracker(), "parent", budget, ("accuracy", "latency_ms"))  # type: ignore[arg-type]
    st = optuna.create_study(directions=["maximize", "minimize"])
    for outcome in outcomes:
        trial = st.ask()
        st.tell(trial, list(recorder.record(trial, recorder.start(trial, outcome.plan), outcome)))
    return st


#: One plan per bit width, unpruned: fp32 (in torch) and int8 (in ONNX Runtime).
BY_BITS = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(32, 8), distill_epochs=(0,))


@dataclass
class Staged:
    """A finished search whose figures were set by bit width (`staged_search`)."""

    tmp: Path
    experiment: str
    budget: Budget
    result: SearchResult
    events: list[tuple[str, str]]  # ("retime", artifact path) and ("register", run id), in order
    progress: list[Progress]

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.tmp}/mlflow.db"

    def by_bits(self, bits: int) -> Candidate:
        return next(c for c in self.result.pareto if c.plan.bits == bits)


def staged_search(
    tmp: Path,
    *,
    accuracy: dict[int, float],
    latency: dict[int, float],
    retimed: dict[int, float] | None = None,
    budget: Budget = Budget(latency_ms=100.0),
    experiment: str = "staged",
    trials: int = 4,
) -> Staged:
    """A real search on `BY_BITS` whose figures are set by bit width: the workload's evaluate
    returns ``accuracy[bits]``, every timing during the search gives ``latency[bits]`` ms, and
    re-timing a candidate before registration gives ``retimed[bits]`` (default: ``latency``)."""
    from autoshrink.artifact import load_artifact
    from autoshrink.measuring import latency as latency_module
    from autoshrink.measuring.latency import Latency
    from autoshrink.searching import LocalBackend
    from autoshrink.tracking import Tracker

    events: list[tuple[str, str]] = []
    progress: list[Progress] = []

    def timed(artifact: Any, batch: Any, hardware: HardwareProfile) -> Latency:
        ms = latency[artifact.plan.bits]
        return Latency(ms, ms, hardware.repeats, hardware.threads, 1, 1.0)

    def staged(artifact: Any, data: Any) -> float:
        return accuracy[artifact.plan.bits]

    class Logged(LocalBackend):
        def retime(self, artifact_path: str, batch: Any, hardware: HardwareProfile) -> Latency:
            events.append(("retime", artifact_path))
            return Latency((retimed or latency)[load_artifact(artifact_path).plan.bits], 0.0, 1, 1, 1, 1.0)

    register = Tracker.register_best

    def logged_register(self: Tracker, model_uri: str, run_id: str) -> tuple[str, str]:
        events.append(("register", run_id))
        return register(self, model_uri, run_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latency_module, "measure_latency", timed)
        patch.setattr(Tracker, "register_best", logged_register)
        result = run_search(
            tmp, budget, trials, experiment, space=BY_BITS, sampler="random", warm_start=False,
            energy_objective=False, evaluate=staged, backend=Logged(), progress=progress.append,
        )  # fmt: skip
    assert {c.plan.bits for c in result.pareto} == {32, 8}, "the search should have measured both plans"
    return Staged(tmp, experiment, budget, result, events, progress)
