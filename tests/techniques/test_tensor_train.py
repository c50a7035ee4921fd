from __future__ import annotations

import pytest
import torch
from torch import nn

from autoshrink.inputs import InputSpec
from autoshrink.pipeline import compress, prepare, run_techniques, to_artifact
from autoshrink.plan import Plan
from autoshrink.techniques import CompressionError, Stage, count_parameters
from autoshrink.techniques.quantize import QuantizeConfig
from autoshrink.techniques.tensor_train import (
    PointwiseTensorTrain,
    TensorTrainConfig,
    TensorTrainLinear,
    max_bonds,
    tt_macs,
    tt_parameters,
    tt_shape,
    tt_svd,
)


def _random_chain(out_shape: tuple[int, ...], in_shape: tuple[int, ...], ranks: list[int]) -> TensorTrainLinear:
    torch.manual_seed(0)
    chain = TensorTrainLinear(out_shape, in_shape, ranks, bias=False)
    for core in chain.cores:
        core.data.normal_()
    return chain


@pytest.mark.parametrize(
    ("out_shape", "in_shape", "ranks"),
    [((8, 6), (4, 10), [3]), ((4, 3, 2), (3, 4, 4), [2, 3])],
    ids=["2 cores", "3 cores"],
)
def test_tt_svd_recovers_a_matrix_of_low_tt_rank(out_shape, in_shape, ranks) -> None:
    weight = _random_chain(out_shape, in_shape, ranks).dense_weight()
    rebuilt = TensorTrainLinear(out_shape, in_shape, ranks, bias=False)
    rebuilt.load_cores(tt_svd(weight, out_shape, in_shape, ranks))
    error = (rebuilt.dense_weight() - weight).norm() / weight.norm()
    assert error < 1e-5, float(error)
    # One bond less cannot hold it: the truncation is real.
    fewer = [max(1, r - 1) for r in ranks]
    short = TensorTrainLinear(out_shape, in_shape, fewer, bias=False)
    short.load_cores(tt_svd(weight, out_shape, in_shape, fewer))
    assert (short.dense_weight() - weight).norm() / weight.norm() > 1e-2


@pytest.mark.parametrize("cores", [2, 3])
def test_untruncated_chain_equals_the_dense_layer(cores: int) -> None:
    # Tolerance: float32 round-off of an exact factorization, 1e-5 absolute on outputs of order 1.
    torch.manual_seed(0)
    layer = nn.Linear(48, 24)
    shape = tt_shape(24, 48, cores)
    chain = TensorTrainLinear.from_linear(layer, max_bonds(*shape))
    x = torch.randn(2, 7, 48)
    torch.testing.assert_close(chain(x), layer(x), atol=1e-5, rtol=0)
    assert chain(x).shape == (2, 7, 24)


def test_pointwise_convolution_with_stride_equals_the_conv() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 12, 1, stride=2)
    linear = nn.Linear(16, 12)
    linear.weight.data, linear.bias.data = conv.weight.detach().flatten(1), conv.bias.detach()
    chain = PointwiseTensorTrain(TensorTrainLinear.from_linear(linear, max_bonds(*tt_shape(12, 16, 2))), (2, 2))
    x = torch.randn(2, 16, 9, 9)
    torch.testing.assert_close(chain(x), conv(x), atol=1e-5, rtol=0)


def test_counts_of_the_reshape_rule() -> None:
    out_shape, in_shape = tt_shape(1536, 384, 2)
    assert (out_shape, in_shape) == ((48, 32), (16, 24))
    assert tt_parameters(out_shape, in_shape, [96]) == 96 * (48 * 16 + 32 * 24)
    assert tt_macs(out_shape, in_shape, [96]) == 96 * (384 * 32 + 16 * 1536)
    chain = TensorTrainLinear(out_shape, in_shape, [96])
    assert count_parameters(chain) == tt_parameters(out_shape, in_shape, [96]) + 1536


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10)).eval()
    return model, torch.randn(64, 64)


def test_plan_with_tt_has_fewer_parameters_and_leaves_slow_layers_dense() -> None:
    model, x = _mlp()
    art = compress(model, Plan(rank=0.05, rank_method="tt"), train_data=(x,), example_input=x[:1])
    report = next(r for r in art.reports if r.technique == "tensor_train")
    assert isinstance(art.torch_module[2], TensorTrainLinear)
    assert art.num_parameters < count_parameters(model)
    assert count_parameters(art.torch_module[2]) < count_parameters(model[2])
    assert "output layer" in report.skipped["4"]
    # At half the weights a balanced chain costs several times the dense multiply-adds: left dense.
    with pytest.raises(CompressionError, match="slower than dense"):
        compress(model, Plan(rank=0.5, rank_method="tt"), train_data=(x,), example_input=x[:1])


def test_bonds_go_to_the_layer_that_needs_them() -> None:
    # Same shapes: one weight is a Kronecker product (TT rank 1 in this reshape), one is random.
    torch.manual_seed(0)
    easy, hard = nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False)
    easy.weight.data = torch.kron(torch.randn(8, 8), torch.randn(8, 8)) + 0.01 * torch.randn(64, 64)
    model = nn.Sequential(easy, nn.Tanh(), hard, nn.Tanh(), nn.Linear(64, 3)).eval()
    x = torch.randn(32, 64)
    config = TensorTrainConfig(fraction=0.3, max_macs=None)
    context = prepare(model, train_data=(x,), example_input=x[:1])
    net = run_techniques(Stage(module=nn.Sequential(*model)), [config], context).module
    assert net[0].ranks[0] <= 2 < net[2].ranks[0], (net[0].ranks, net[2].ranks)
    factorized = sum(tt_parameters(net[i].out_shape, net[i].in_shape, net[i].ranks) for i in (0, 2))
    assert factorized <= 0.3 * 2 * 64 * 64


def _built(runtime: str, bits: int = 32) -> tuple[nn.Module, torch.Tensor, object]:
    import copy

    model, x = _mlp()
    context = prepare(model, train_data=(x,), example_input=x[:1])
    configs = [TensorTrainConfig(fraction=0.5, max_macs=None), QuantizeConfig(bits=bits, runtime=runtime)]
    stage = run_techniques(Stage(module=copy.deepcopy(model)), configs, context)
    art = to_artifact(stage, Plan(bits=bits, runtime=runtime), InputSpec.of(x[:1]))
    return stage.module, x, art


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_chain_exports_and_runs_in_both_runtimes(runtime: str) -> None:
    module, x, art = _built(runtime)
    assert isinstance(module[0], TensorTrainLinear) and isinstance(module[2], TensorTrainLinear)
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(art(x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(art(x[:3]), expected[:3], atol=1e-4, rtol=1e-4)  # batch stays dynamic


def test_int8_on_top_quantizes_the_cores() -> None:
    module, x, art = _built("onnxruntime", bits=8)
    ops = [n.op_type for n in art.onnx_model.graph.node]
    assert ops.count("MatMulInteger") >= 4  # two cores for each of the two chains
    with torch.no_grad():
        expected = module(x)
    cosine = torch.nn.functional.cosine_similarity(art(x), expected, dim=-1).mean()
    assert cosine > 0.99, float(cosine)


def _outlier_model() -> tuple[nn.Module, torch.Tensor]:
    """Layers fed inputs where two channels carry most of the energy, as a transformer's do."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 48), nn.Tanh(), nn.Linear(48, 48), nn.Tanh(), nn.Linear(48, 3)).eval()
    x = torch.randn(256, 48)
    x[:, [3, 17]] *= 20
    return model, x


def _first_layer_error(model: nn.Module, x: torch.Tensor, config: TensorTrainConfig) -> tuple[float, dict]:
    """Relative output error of the first layer after ``config`` on the calibration inputs, and the report's details."""
    import copy

    context = prepare(model, train_data=(x,), example_input=x[:1])
    stage = run_techniques(Stage(module=copy.deepcopy(model)), [config], context)
    with torch.no_grad():
        error = (stage.module[0](x) - model[0](x)).norm() / (model[0](x) - model[0].bias).norm()
    return float(error), stage.reports[-1].details


def test_activation_aware_chain_keeps_the_outputs_the_weights_alone_do_not(monkeypatch) -> None:
    from autoshrink.techniques import tensor_train

    model, x = _outlier_model()
    weight, _ = _first_layer_error(model, x, TensorTrainConfig(fraction=0.3, max_macs=None))
    aware, details = _first_layer_error(model, x, TensorTrainConfig(fraction=0.3, max_macs=None, method="activation"))
    assert details["method"] == "activation" and details["not_refitted"] == {} and details["weight_tt"] == {}
    assert aware < 0.5 * weight, (aware, weight)
    # Without the refit only the Kronecker-factored whitening is left: worse.
    monkeypatch.setattr(tensor_train, "SWEEPS", 0)
    whitened, _ = _first_layer_error(model, x, TensorTrainConfig(fraction=0.3, max_macs=None, method="activation"))
    assert aware < whitened, (aware, whitened)


def test_no_whitened_bond_is_allocated_past_what_a_refit_solves(monkeypatch) -> None:
    import copy

    from autoshrink.techniques import tensor_train

    model, x = _outlier_model()
    context = prepare(model, train_data=(x,), example_input=x[:1])
    config = TensorTrainConfig(fraction=0.6, max_macs=None, method="activation")
    free = run_techniques(Stage(module=copy.deepcopy(model)), [config], context).module
    cap = max(free[0].ranks[0], free[2].ranks[0]) - 2  # below the largest bond the budget alone gives
    monkeypatch.setattr(tensor_train, "MAX_REFIT", cap * max(free[0].in_shape))
    stage = run_techniques(Stage(module=copy.deepcopy(model)), [config], context)
    assert stage.reports[-1].details["not_refitted"] == {}
    assert max(stage.module[0].ranks[0], stage.module[2].ranks[0]) <= cap


def test_untruncated_whitened_chain_equals_the_dense_layer() -> None:
    # Folding the whitening back must be exact: at full bond the chain is the layer (float32 round-off).
    from autoshrink.techniques.tensor_train import kronecker_whitening

    model, x = _outlier_model()
    layer = model[0]
    gram = x.T.double() @ x.double() / len(x)
    shape = tt_shape(48, 48, 2)
    chain = TensorTrainLinear.from_linear(layer, max_bonds(*shape), shape, kronecker_whitening(gram, shape[1]), gram)
    with torch.no_grad():
        torch.testing.assert_close(chain(x), layer(x), atol=1e-3, rtol=1e-4)


def test_att_plan_is_the_activation_aware_tensor_train() -> None:
    from autoshrink.pipeline import technique_configs

    plan = Plan(rank=0.5, rank_method="att", bits=8)
    assert "rank0.5att" in plan.label
    assert Plan.from_dict(plan.to_dict()) == plan
    (config, _) = technique_configs(plan)
    assert config == TensorTrainConfig(fraction=0.5, method="activation")
