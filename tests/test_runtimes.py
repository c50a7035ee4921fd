"""Runtimes as a knob: every runtime's artifact round-trips (file, MLflow) and agrees with torch."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autoshrink.artifact import load_artifact
from autoshrink.config import Budget, ConfigError, HardwareProfile
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.space import SearchSpace
from tests.conftest import agreement, make_case

RUNTIMES = [
    # plan, how close to torch: max abs difference for float, arg-max agreement for int8
    (Plan(), ("exact", 1e-5)),
    (Plan(runtime="onnxruntime"), ("exact", 1e-4)),
    (Plan(runtime="openvino"), ("exact", 1e-4)),
    (Plan(bits=8), ("agree", 0.9)),
    (Plan(bits=8, runtime="openvino"), ("agree", 0.9)),
]


@pytest.mark.parametrize(("plan", "bound"), RUNTIMES, ids=[p.label for p, _ in RUNTIMES])
def test_every_runtime_round_trips_and_agrees_with_torch(plan: Plan, bound, tmp_path: Path) -> None:
    model, (x, y), example = make_case("rescnn")
    art = compress(model, plan, train_data=(x, y), example_input=example)
    assert art.runtime == plan.resolved_runtime
    with torch.no_grad():
        reference = model(x[:64])
    out = art(x[:64])
    kind, limit = bound
    if kind == "exact":
        assert float((out - reference).abs().max()) <= limit
    else:
        assert agreement(out, reference) >= limit
    loaded = load_artifact(art.save(tmp_path / f"model{art.suffix}"))
    assert loaded.runtime == art.runtime and loaded.plan == plan and loaded.size_bytes == art.size_bytes
    torch.testing.assert_close(loaded(x[:64]), out)


def test_auto_passes_over_a_runtime_that_cannot_take_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.searching.trial import TrialRunner
    from autoshrink.techniques import CompressionError
    from tests.tiny import HW, tiny_workload

    broken: set[str] = {"openvino"}
    tried: list[str] = []
    original = TrialRunner.build

    def build(self: TrialRunner, plan: Plan):
        tried.append(plan.runtime)
        if plan.runtime in broken:
            raise CompressionError(f"{plan.runtime} cannot take this model")
        return original(self, plan)

    monkeypatch.setattr(TrialRunner, "build", build)
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "a", runtimes=("onnxruntime", "openvino"))
    outcome = runner(Plan(bits=8), name="t")
    assert not outcome.failed and outcome.measurement.runtime == "onnxruntime"
    outcome = runner(Plan(bits=8, distill_epochs=1), name="t2")  # the same architecture again
    assert not outcome.failed and tried.count("openvino") == 1  # not retried on a runtime that failed it
    broken.add("onnxruntime")
    outcome = runner(Plan(prune=0.5, bits=8), name="u")  # no runtime can take it: the trial fails, with why
    assert outcome.failed and "cannot take this model" in outcome.error


def test_openvino_compiles_per_input_shape_up_to_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink import artifact as artifact_module

    model, (x, y), example = make_case("rescnn")
    art = compress(model, Plan(runtime="openvino"), train_data=(x, y), example_input=example)
    monkeypatch.setattr(artifact_module, "OPENVINO_SHAPES", 2)
    for n in (1, 3, 5, 3):
        with torch.no_grad():
            torch.testing.assert_close(art(x[:n]), model(x[:n]), atol=1e-4, rtol=1e-4)
    fixed = sorted(shapes[0][1][0] for (_, shapes) in art._sessions if shapes is not None)
    assert fixed == [1, 3]  # batch 5 came after the limit: it ran on the any-shape compilation
    assert (1, None) in art._sessions


def test_openvino_outputs_are_not_overwritten_by_the_next_call() -> None:
    """The runner shares the request's output memory; what a call returns must still be its own."""
    model, (x, y), example = make_case("rescnn")
    art = compress(model, Plan(bits=8, runtime="openvino"), train_data=(x, y), example_input=example)
    first = art(x[:1])
    kept = first.clone()
    second = art(x[1:2])
    assert torch.equal(first, kept) and not torch.equal(first, second)


def test_openvino_artifact_deflates_the_graph_but_stores_the_weights(tmp_path: Path) -> None:
    import zipfile

    model, (x, y), example = make_case("rescnn")
    art = compress(model, Plan(bits=8, runtime="openvino"), train_data=(x, y), example_input=example)
    with zipfile.ZipFile(art.save(tmp_path / "m.ovz")) as archive:
        xml, weights = archive.getinfo("model.xml"), archive.getinfo("model.bin")
    assert xml.compress_type == zipfile.ZIP_DEFLATED and xml.compress_size < xml.file_size / 2
    assert weights.compress_type == zipfile.ZIP_STORED
    assert art.size_bytes < xml.file_size + weights.file_size  # the size counted is the file's


@pytest.mark.parametrize("plan", [Plan(runtime="openvino"), Plan(bits=8, runtime="openvino")], ids=lambda p: p.label)
def test_openvino_artifacts_are_served_by_mlflow(plan: Plan, tmp_path: Path) -> None:
    import mlflow

    from autoshrink.tracking import Tracker

    model, (x, y), example = make_case("rescnn")
    art = compress(model, plan, train_data=(x, y), example_input=example)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "serve")
    run = tracker.client.create_run(tracker.experiment_id).info.run_id
    model_uri = tracker.log_model(run, art, x[:2])
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(model_uri)
    torch.testing.assert_close(torch.from_numpy(served.predict(x[:8].numpy())), art(x[:8]))
    assert tracker.download_artifact(run).size_bytes == art.size_bytes  # the measured file itself


def test_runtimes_run_only_the_precisions_they_have() -> None:
    with pytest.raises(ValueError, match=r"runtime='openvino' runs bits in \(32, 8\), got bits=4"):
        Plan(bits=4, runtime="openvino")
    with pytest.raises(ConfigError, match="no runtime of \\['torch'\\] runs 8-bit models"):
        SearchSpace(runtime=("torch",), bits=(32, 8))


def test_the_runtime_is_drawn_among_those_that_run_the_bit_width() -> None:
    space = SearchSpace(bits=(32, 8, 4), runtime=("torch", "onnxruntime", "openvino"))
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        plan = space.sample(study.ask())
        seen.add((plan.bits, plan.resolved_runtime))
    assert seen == {(32, "torch"), (32, "onnxruntime"), (32, "openvino"), (8, "onnxruntime"), (8, "openvino"), (4, "onnxruntime")}
    fixed = optuna.trial.FixedTrial({"prune": 0.0, "rank": "off", "bits": 8, "distill_epochs": 0, "runtime_8": "openvino"})
    assert space.sample(fixed).runtime == "openvino"


def test_a_profile_restricted_to_one_runtime_is_honoured(tmp_path: Path) -> None:
    from autoshrink.searching import search
    from tests.tiny import tiny_workload

    space = SearchSpace(prune=(0.0, 0.3, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0,),
                        runtime=("auto", "onnxruntime", "openvino"))  # fmt: skip
    hardware = HardwareProfile(warmup_s=0.0, repeats=5, energy_s=0.05, runtimes=("openvino",))
    result = search(tiny_workload(tmp_path), budget=Budget(latency_ms=1000.0), space=space, hardware=hardware,
                    trials=4, experiment="ov", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # fmt: skip
    study = optuna.load_study(study_name="ov", storage=f"sqlite:///{tmp_path}/optuna.db")
    runtimes = {Plan.from_dict(t.user_attrs["plan"]).resolved_runtime for t in study.trials}
    assert runtimes == {"openvino"} and result.n_complete == 4
    assert result.best is not None and result.best.measurement.runtime == "openvino"
    with pytest.raises(ConfigError, match="runs only \\['torch'\\]"):
        space.restricted_to(("torch",))


def test_auto_picks_the_fastest_runtime_by_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.searching.trial import TrialRunner
    from tests.tiny import HW, tiny_workload

    builds: list[Plan] = []
    original = TrialRunner.build
    monkeypatch.setattr(TrialRunner, "build", lambda self, plan: builds.append(plan) or original(self, plan))
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "a", runtimes=("onnxruntime", "openvino"))
    assert runner.runtime_choices(Plan(bits=8)) == ["onnxruntime", "openvino"]
    assert runner.runtime_choices(Plan(bits=4)) == ["onnxruntime"]
    assert runner.runtime_choices(Plan(bits=8, runtime="openvino")) == ["openvino"]
    outcome = runner(Plan(bits=8), name="t")
    timed = {json_key: m.latency_ms for json_key, (m, _) in runner.cache["speed"].items()}
    assert len(timed) == 2  # both runtimes were lowered and timed
    assert outcome.measurement.latency_ms == min(timed.values())
    assert outcome.measurement.runtime in ("onnxruntime", "openvino") and outcome.plan == Plan(bits=8)
    assert sorted(p.runtime for p in builds) == ["onnxruntime", "openvino"]  # the timed one is kept, not rebuilt


def test_a_profile_that_names_runtimes_makes_auto_compare_them_with_no_sampled_knob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoshrink.searching import search
    from autoshrink.searching.trial import TrialRunner
    from tests.tiny import tiny_workload

    built: list[Plan] = []
    original = TrialRunner.build
    monkeypatch.setattr(TrialRunner, "build", lambda self, plan: built.append(plan) or original(self, plan))
    space = SearchSpace(prune=(0.0, 0.3, 0.3), rank=("off",), bits=(32, 8), distill_epochs=(0,))  # runtime: [auto]
    hardware = HardwareProfile(warmup_s=0.0, repeats=5, energy_s=0.05, runtimes=("onnxruntime", "openvino"))
    result = search(tiny_workload(tmp_path), budget=Budget(latency_ms=1000.0), space=space, hardware=hardware,
                    trials=3, experiment="auto", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # fmt: skip
    study = optuna.load_study(study_name="auto", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert result.n_complete == 3
    assert not [p for t in study.trials for p in t.params if p.startswith("runtime")]  # nothing left to the sampler
    assert built[0] == Plan(runtime="torch")  # the baseline: fp32 torch whatever the profile
    for t in study.trials:  # every architecture was lowered to both runtimes, and never to torch
        plan = Plan.from_dict(t.user_attrs["plan"])
        ran = {p.runtime for p in built[1:] if (p.prune, p.bits) == (plan.prune, plan.bits)}
        assert ran == {"onnxruntime", "openvino"}
    assert {c.measurement.runtime for c in result.pareto} <= {"onnxruntime", "openvino"}


def test_auto_with_one_runtime_left_runs_in_it(tmp_path: Path) -> None:
    from autoshrink.searching.trial import TrialRunner
    from tests.tiny import HW, tiny_workload

    space = SearchSpace(bits=(32, 8)).restricted_to(("openvino",))
    assert space.runtime == ("auto",) and space.compared_by_auto(("openvino",)) == ("openvino",)
    runner = TrialRunner(tiny_workload(tmp_path), HW, tmp_path / "a", runtimes=("openvino",))
    outcome = runner(Plan(bits=8), name="t")
    assert not outcome.failed and outcome.measurement.runtime == "openvino"


def test_a_runtime_that_is_not_installed_is_a_clear_error_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from autoshrink.searching import search
    from tests.tiny import tiny_workload

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    hardware = HardwareProfile(warmup_s=0.0, repeats=5, energy_s=0.05, runtimes=("onnxruntime", "openvino"))
    with pytest.raises(ConfigError, match=r"names openvino, which is not installed here: pip install 'autoshrink\[openvino\]'"):
        search(tiny_workload(tmp_path), budget=Budget(latency_ms=1000.0), hardware=hardware, trials=2,
               experiment="ov", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # fmt: skip
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was opened
