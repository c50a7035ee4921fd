"""`SessionOptions`: validation, the dict form, the variants timed, what a session gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink import Plan, compress
from autoshrink.artifact import load_artifact
from autoshrink.config import ConfigError, HardwareProfile
from autoshrink.runtimes import get
from autoshrink.sessions import SessionOptions, openvino_config, ort_session_options, variants


def _int8() -> object:
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    return compress(net, Plan(bits=8), train_data=(torch.randn(32, 16),), example_input=torch.randn(1, 16))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"graph_optimization": "max"}, "graph_optimization must be one of"),
        ({"performance_hint": "fast"}, "performance_hint must be one of"),
        ({"memory_arena": "no"}, "memory_arena must be true or false"),
        ({"streams": True}, "streams must be an integer"),
        ({"arena": False}, r"unknown session option\(s\) \['arena'\]"),
    ],
)
def test_bad_options_are_one_line_errors(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SessionOptions.from_dict(bad)


def test_only_what_differs_from_the_defaults_is_written() -> None:
    assert SessionOptions().to_dict() == {}
    opts = SessionOptions(graph_optimization="basic", memory_pattern=False)
    assert opts.to_dict() == {"graph_optimization": "basic", "memory_pattern": False}
    assert SessionOptions.from_dict(opts.to_dict()) == opts


def test_threads_never_exceed_what_the_caller_asks() -> None:
    assert SessionOptions().threads_for(4) == 4
    assert SessionOptions(threads=2).threads_for(4) == 2
    assert SessionOptions(threads=8).threads_for(4) == 4
    assert SessionOptions(threads=2).threads_for(None) == 2
    assert SessionOptions().threads_for(None) == 1


def test_variants_change_one_thing_at_a_time_from_the_defaults() -> None:
    for runtime in ("onnxruntime", "openvino"):
        found = variants(runtime, 4)
        assert found[0] == SessionOptions() and len(set(found)) == len(found) > 2
        assert any(o.threads == 2 for o in found)  # fewer threads than the profile's are tried
        assert all(o.threads is None or o.threads <= 4 for o in found)
    assert all(o.threads is None for o in variants("onnxruntime", 1))
    assert variants("torch", 4) == [SessionOptions()]


def test_onnxruntime_sessions_get_the_options() -> None:
    import onnxruntime as ort

    opts = ort_session_options(SessionOptions(graph_optimization="basic", memory_arena=False, threads=2), 4)
    assert opts.intra_op_num_threads == 2
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.enable_cpu_mem_arena is False and opts.enable_mem_pattern is True


def test_openvino_config_keeps_f32_and_takes_the_options() -> None:
    config = openvino_config(SessionOptions(performance_hint="THROUGHPUT", cpu_pinning=False, streams=2), 2)
    assert config["INFERENCE_PRECISION_HINT"] == "f32"
    assert (config["PERFORMANCE_HINT"], config["NUM_STREAMS"], config["ENABLE_CPU_PINNING"]) == ("THROUGHPUT", 2, False)
    assert "ENABLE_CPU_PINNING" not in openvino_config(SessionOptions(), 1)


def test_options_travel_with_the_saved_artifact(tmp_path: Path) -> None:
    art = _int8()
    tuned = art.with_options(SessionOptions(memory_arena=False, graph_optimization="extended"))
    assert tuned.options != art.options and abs(tuned.size_bytes - art.size_bytes) < 200
    loaded = load_artifact(tuned.save(tmp_path / f"m{tuned.suffix}"))
    assert loaded.options == tuned.options
    assert loaded.session().get_session_options().enable_cpu_mem_arena is False
    x = torch.randn(3, 16)
    torch.testing.assert_close(loaded(x), art(x))  # same answers
    assert load_artifact(art.save(tmp_path / f"d{art.suffix}")).options == SessionOptions()


@pytest.mark.skipif(not get("openvino").installed(), reason="OpenVINO is not installed")
def test_openvino_options_travel_with_the_saved_artifact(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(16, 4))
    art = compress(net, Plan(runtime="openvino"), train_data=(torch.randn(8, 16),), example_input=torch.randn(1, 16))
    tuned = art.with_options(SessionOptions(performance_hint="THROUGHPUT"))
    loaded = load_artifact(tuned.save(tmp_path / f"m{tuned.suffix}"))
    assert loaded.options.performance_hint == "THROUGHPUT"
    assert str(loaded.session().get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")


def test_a_torch_artifact_takes_no_runtime_options() -> None:
    art = compress(torch.nn.Linear(4, 2), Plan(), train_data=(torch.randn(8, 4),), example_input=torch.randn(1, 4))
    with pytest.raises(ValueError, match="a torch artifact has no session options"):
        art.with_options(SessionOptions(memory_arena=False))


def test_a_profile_fixes_or_tunes_the_options() -> None:
    assert HardwareProfile().session == "tune" and "session" not in HardwareProfile().to_dict()
    fixed = HardwareProfile.from_dict({"session": {"memory_arena": False}})
    assert fixed.session == SessionOptions(memory_arena=False)
    assert HardwareProfile.from_dict(fixed.to_dict()) == fixed
    with pytest.raises(ConfigError, match="HardwareProfile.session must be"):
        HardwareProfile(session="fastest")
    with pytest.raises(ConfigError, match="unknown session option"):
        HardwareProfile.from_dict({"session": {"arena": False}})
