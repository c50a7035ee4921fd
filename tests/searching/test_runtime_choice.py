"""How a trial picks the runtime of a plan: `auto` lowers an architecture to each runtime the
hardware profile names and keeps the fastest by measurement, passes over one that cannot take the
model, and a sampled runtime is drawn among those that run the bit width."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autoshrink.config import Budget, ConfigError, HardwareProfile
from autoshrink.plan import Plan
from autoshrink.space import SearchSpace


def test_auto_passes_over_a_runtime_that_cannot_take_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshrink.searching.trial import TrialRunner
    from autoshrink.techniques import CompressionError
    from tests.tiny import HW, tiny_workload

    broken: set[str] = {"openvino"}
    tried: list[str] = []
    original = TrialRunner.build

    def build(self: TrialRunner, plan: Plan, on_epoch=None):
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
    monkeypatch.setattr(TrialRunner, "build", lambda self, plan, *a: builds.append(plan) or original(self, plan, *a))
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
    monkeypatch.setattr(TrialRunner, "build", lambda self, plan, *a: built.append(plan) or original(self, plan, *a))
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
