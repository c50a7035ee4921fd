from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.config import Budget, ConfigError, HardwareProfile


def test_budget_violations_are_signed_margins() -> None:
    budget = Budget(latency_ms=2.0, size_mb=1.0, energy_mj=5.0, min_accuracy=0.9)
    v = budget.violations({"latency_ms": 3.0, "size_bytes": 500_000, "energy_mj": 1.0, "accuracy": 0.95})
    assert v["latency_ms"] == pytest.approx(1.0)  # violated
    assert v["size_mb"] == pytest.approx(-0.5)
    assert v["energy_mj"] == pytest.approx(-4.0)
    assert v["min_accuracy"] == pytest.approx(-0.05)


@pytest.mark.parametrize("kwargs", [{"latency_ms": 0}, {"latency_ms": -1}, {"latency_ms": 1, "min_accuracy": 2}])
def test_bad_budget(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="Budget"):
        Budget(**kwargs)


def test_hardware_yaml(tmp_path: Path) -> None:
    good = tmp_path / "hw.yaml"
    good.write_text("name: edge\nthreads: 2\nbatch_size: 4\n")
    assert HardwareProfile.from_yaml(good).batch_size == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("threads: 2\ncores: 4\n")
    with pytest.raises(ConfigError, match="unknown key"):
        HardwareProfile.from_yaml(bad)
    with pytest.raises(ConfigError, match="no such file"):
        HardwareProfile.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="threads"):
        HardwareProfile(threads=0)


def test_each_hardware_profile_file_loads_and_the_any_runtime_one_is_local_cpu_with_every_runtime() -> None:
    from dataclasses import replace

    folder = Path(__file__).resolve().parents[1] / "search_spaces" / "hardware"
    profiles = {p.stem: HardwareProfile.from_yaml(p) for p in sorted(folder.glob("*.yaml"))}
    assert {"local-cpu", "local-cpu-any-runtime"} <= set(profiles)
    anyrt = profiles["local-cpu-any-runtime"]
    assert anyrt.runtimes == ("torch", "onnxruntime", "openvino")
    assert replace(anyrt, runtimes=None, name="local-cpu") == profiles["local-cpu"]


def test_hardware_profile_for_a_device_autoshrink_does_not_measure() -> None:
    with pytest.raises(ConfigError, match="HardwareProfile.device must be 'cpu'"):
        HardwareProfile(device="cuda")


def test_a_figure_that_could_not_be_measured_misses_its_limit_and_the_sampler_takes_it() -> None:
    # Optuna refuses a NaN constraint: a NaN energy used to stop the whole search.
    import optuna

    from autoshrink.config import Budget

    violations = Budget(latency_ms=1.0, energy_mj=2.0).violations(
        {"latency_ms": 0.5, "size_bytes": 1e6, "energy_mj": float("nan"), "accuracy": 0.9}
    )
    assert not Budget.met(violations)
    trial = optuna.create_study().ask()
    for name, value in violations.items():
        trial.set_constraint(name, value)


# -- relative budgets: the same request on every CPU ------------------------------------------------

BASELINE = {"latency_ms": 3.0, "size_bytes": 2_000_000.0, "accuracy": 0.95}


def test_a_relative_limit_resolves_to_the_baseline_over_x() -> None:
    b = Budget(speedup=4, size_ratio=5).resolved(BASELINE)
    assert b.latency_ms == 0.75 and b.size_mb == 0.4
    assert b.violations(BASELINE | {"latency_ms": 0.7, "size_bytes": 500_000.0, "energy_mj": 0.0}) == pytest.approx(
        {"latency_ms": -0.05, "size_mb": 0.1}
    )


@pytest.mark.parametrize(
    ("absolute", "relative", "expected"),
    [(0.5, 4, 0.5), (1.0, 4, 0.75)],  # both must hold: the stricter limit counts
)
def test_absolute_and_relative_latency_limits_combine(absolute: float, relative: float, expected: float) -> None:
    assert Budget(latency_ms=absolute, speedup=relative).resolved(BASELINE).latency_ms == expected
    assert Budget(size_mb=absolute / 2, size_ratio=relative, speedup=2).resolved(BASELINE).size_mb == min(absolute / 2, 0.5)


def test_an_unresolved_relative_budget_judges_no_latency_yet() -> None:
    b = Budget(speedup=2)
    assert b.relative and b.latency_ms is None
    assert b.violations(BASELINE | {"energy_mj": 0.0}) == {}
    assert not Budget(latency_ms=1.0).relative


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"speedup": 1}, r"Budget.speedup must be a number > 1 \(2 = twice as fast as"),
        ({"speedup": 0.5}, "Budget.speedup must be a number > 1"),
        ({"speedup": -3}, "Budget.speedup must be a number > 1"),
        ({"speedup": "fast"}, "Budget.speedup must be a number > 1.*got 'fast'"),
        ({"speedup": True}, "Budget.speedup must be a number > 1"),
        ({"speedup": float("inf")}, "Budget.speedup must be a number > 1"),
        ({"latency_ms": 1.0, "size_ratio": 1.0}, "Budget.size_ratio must be a number > 1"),
        ({"size_mb": 1.0}, "a latency budget is required: Budget.latency_ms .* or Budget.speedup"),
    ],
)
def test_bad_relative_budgets_get_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Budget(**kwargs)
    assert "\n" not in str(raised.value)


def test_describe_says_both_the_resolved_and_the_relative_limit() -> None:
    assert Budget(speedup=3).describe() == "latency: 3x faster than the baseline"
    resolved = Budget(speedup=3, size_ratio=2, max_drop=1).resolved({"latency_ms": 3.0, "size_bytes": 1e6, "accuracy": 0.9})
    assert resolved.describe() == (
        "latency <= 1.000 ms (3x faster than the baseline), size <= 0.500 MB (2x smaller than the baseline), "
        "score >= 0.8900 (within 1 points of the baseline)"
    )
