"""OpenVINO artifacts (`autoshrink.techniques._openvino` and its runner): compiled per input shape
up to a limit, outputs a call keeps, a zip that deflates the graph but stores the weights, and
served by MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from tests.conftest import make_case


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


def test_nncf_finds_the_layers_biases_so_its_bias_correction_changes_the_model() -> None:
    # Read with Core.read_model, each bias reached its layer through a Reshape of a computed
    # shape: NNCF found no bias, and its bias correction changed nothing.
    pytest.importorskip("nncf")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    from autoshrink.inputs import InputSpec
    from autoshrink.techniques import _openvino
    from autoshrink.techniques._onnx import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()  # fmt: skip
    x = torch.randn(64, 3, 8, 8)
    spec = InputSpec.of(x[:1])
    onnx_bytes = export_onnx(net, x[:1], spec).SerializeToString()
    outputs = []
    for off in (False, True):
        model = _openvino.quantize_nncf(_openvino.from_onnx(onnx_bytes), x, spec, transformer=False, reduce_range=False,
                                        options={"fast_bias_correction": True, "advanced_parameters":
                                                 AdvancedQuantizationParameters(disable_bias_correction=off)})  # fmt: skip
        compiled = _openvino.compile_model(_openvino.pack(model, {}), 1)
        outputs.append(torch.from_numpy(compiled({spec.names[0]: x.numpy()})[0]))
    assert not torch.allclose(outputs[0], outputs[1])
