"""`autoshrink.runtimes`: each runtime's record states facts the rest of the package lives by."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoshrink.artifact import load_artifact
from autoshrink.config import ConfigError, HardwareProfile, check_installed
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.runtimes import (
    ALLOWED_BITS,
    AUTO,
    BY_NAME,
    DEFAULT_RUNTIMES,
    EXTRAS,
    RUNTIME_BITS,
    RUNTIMES,
    Runtime,
    default_runtime,
    from_suffix,
    get,
)
from autoshrink.space import SearchSpace
from autoshrink.techniques.quantize import QuantizeConfig

ROOT = Path(__file__).resolve().parents[1]
RECORDS = list(BY_NAME.values())
PAIRS = [(r, b) for r in RECORDS for b in r.bits]


def _ids(pair: tuple[Runtime, int]) -> str:
    return f"{pair[0].name}-{pair[1]}"


@pytest.mark.parametrize("runtime", RECORDS, ids=lambda r: r.name)
def test_plan_and_quantize_accept_exactly_the_bit_widths_the_record_names(runtime: Runtime) -> None:
    for bits in ALLOWED_BITS:
        if bits in runtime.bits:
            assert Plan(bits=bits, runtime=runtime.name).resolved_runtime == runtime.name
            QuantizeConfig(bits=bits, runtime=runtime.name)
        else:
            with pytest.raises(ValueError, match="runs bits in"):
                Plan(bits=bits, runtime=runtime.name)
            with pytest.raises(ValueError, match="runs bits in"):
                QuantizeConfig(bits=bits, runtime=runtime.name)
    assert set(runtime.bits) <= set(ALLOWED_BITS)


def test_the_vocabulary_is_the_records_and_plan_keeps_its_names() -> None:
    import autoshrink.plan as plan

    assert RUNTIMES == (AUTO, "torch", "onnxruntime", "openvino")
    assert RUNTIME_BITS == {"torch": (32,), "onnxruntime": (32, 8, 4), "openvino": (32, 8)}
    assert (plan.ALLOWED_BITS, plan.RUNTIMES, plan.RUNTIME_BITS) == (ALLOWED_BITS, RUNTIMES, RUNTIME_BITS)
    assert len({r.suffix for r in RECORDS}) == len(RECORDS)  # load_artifact tells them apart by it
    assert all(from_suffix(r.suffix) is r for r in RECORDS)
    with pytest.raises(ConfigError, match="must list runtimes"):
        HardwareProfile(runtimes=(AUTO,))
    with pytest.raises(ConfigError, match="space.runtime values"):
        SearchSpace(runtime=("tensorrt",))


def test_auto_is_torch_for_fp32_and_onnx_runtime_below() -> None:
    assert [default_runtime(b) for b in ALLOWED_BITS] == ["torch", "onnxruntime", "onnxruntime"]
    assert DEFAULT_RUNTIMES == ("torch", "onnxruntime")
    for bits in ALLOWED_BITS:
        assert bits in get(default_runtime(bits)).bits  # "auto" always becomes a runtime that runs it
        assert Plan(bits=bits).resolved_runtime == default_runtime(bits)
    labels = {(r.name, b): Plan(bits=b, runtime=r.name).label for r, b in PAIRS}
    assert labels == {
        ("torch", 32): "fp32",
        ("onnxruntime", 32): "fp32-ort", ("onnxruntime", 8): "int8", ("onnxruntime", 4): "int4",
        ("openvino", 32): "fp32-ov", ("openvino", 8): "int8-ov",
    }  # fmt: skip


@pytest.mark.parametrize(("runtime", "bits"), PAIRS, ids=[_ids(p) for p in PAIRS])
def test_each_runtime_builds_its_bit_widths_and_its_suffix_round_trips(
    runtime: Runtime, bits: int, tmp_path: Path
) -> None:
    if not runtime.installed():
        pytest.skip(f"{runtime.name} is not installed")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(64, 64)
    art = compress(model, Plan(bits=bits, runtime=runtime.name), train_data=(x,), example_input=x[:1])
    assert art.runtime == runtime.name and art.suffix == runtime.suffix

    path = art.save(tmp_path / f"model{art.suffix}")
    back = load_artifact(path)
    assert (back.runtime, back.plan, back.payload) == (runtime.name, art.plan, art.payload)

    feed = back.feed(x[:2])
    if runtime.feed == "numpy":
        assert isinstance(feed, dict) and all(isinstance(v, np.ndarray) for v in feed.values())
    else:
        assert isinstance(feed, torch.Tensor)
    out = back(x[:2])
    assert isinstance(out, torch.Tensor) and out.shape == (2, 8)


@pytest.mark.parametrize("runtime", RECORDS, ids=lambda r: r.name)
def test_the_mlflow_flavour_and_pins_exist(runtime: Runtime) -> None:
    if not runtime.installed():
        pytest.skip(f"{runtime.name} is not installed")
    importlib.import_module(f"mlflow.{runtime.mlflow_flavor}")
    requirements = runtime.pip_requirements()
    assert [r.split("==")[0] for r in requirements if "==" in r] == list(runtime.mlflow_pins)
    assert all(r.split("==")[1][:1].isdigit() and "+" not in r for r in requirements if "==" in r)
    assert ("autoshrink" in requirements) == runtime.serves_with_autoshrink
    assert runtime.name in runtime.mlflow_pins  # the model is served by the version it was measured in
    assert runtime.mlflow_flavor != "onnx" or "onnx" in runtime.mlflow_pins  # mlflow.onnx loads it with onnx
    assert runtime.serves_with_autoshrink == (runtime.mlflow_flavor != "onnx")  # torch classes, the pyfunc wrapper


def test_each_extra_is_declared_and_installs_the_modules_the_record_checks() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    assert EXTRAS == {r.name: r.modules for r in RECORDS if r.extra is not None}
    for runtime in RECORDS:
        if runtime.extra is None:
            assert runtime.modules == () and runtime.installed()
            continue
        line = re.search(rf"^{runtime.extra} = \[(.*)\]$", pyproject, re.MULTILINE)
        assert line, f"pyproject.toml declares no extra {runtime.extra!r}"
        declared = {re.split(r"[<>=\[;]", req.strip(' "'))[0] for req in line.group(1).split(",")}
        assert set(runtime.modules) == declared


def test_a_missing_extra_is_refused_with_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    check_installed({AUTO, "torch", "onnxruntime"})
    with pytest.raises(ConfigError, match=r"names openvino, which is not installed here: pip install 'autoshrink\[openvino\]'"):
        check_installed({"onnxruntime", "openvino"})


def test_the_registry_imports_no_torch_and_nothing_of_autoshrink() -> None:
    import subprocess

    code = (
        "import sys; import autoshrink.runtimes; "
        "print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('autoshrink')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "['autoshrink',", "'autoshrink.runtimes']"]
