from __future__ import annotations

import pytest

from autoshrink.plan import Plan


def test_json_round_trip() -> None:
    plan = Plan(prune=0.5, rank=0.25, bits=4, distill_epochs=3)
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prune": 0.95}, "Plan.prune"),
        ({"prune": -0.1}, "Plan.prune"),
        ({"rank": 0.0}, "Plan.rank"),
        ({"rank": 1.0}, "Plan.rank"),
        ({"bits": 16}, "Plan.bits"),
        ({"distill_epochs": -1}, "Plan.distill_epochs"),
        ({"distill_epochs": 1.5}, "Plan.distill_epochs"),
        ({"runtime": "tensorrt"}, "Plan.runtime"),
        ({"runtime": "torch", "bits": 8}, "Plan.runtime"),
        ({"rank": 0.5, "rank_method": "cp"}, "Plan.rank_method"),
        ({"rank_method": "tt"}, "Plan.rank_method"),
        ({"prune": 0.3, "prune_method": "global"}, "Plan.prune_method"),
        ({"bits": 8, "calibration": "kl"}, "Plan.calibration"),
        ({"calibration": "percentile"}, "Plan.calibration"),  # an fp32 plan has no activation ranges
        ({"bits": 8, "runtime": "openvino", "calibration": "entropy"}, "Plan.calibration"),  # NNCF picks its own
        ({"bits": 8, "layer_bits": {"stem": 32}, "mixed_by": "flops"}, "Plan.mixed_by"),
        ({"bits": 8, "mixed_by": "per-mac"}, "Plan.mixed_by"),  # a rule with no layers chosen by it
    ],
)
def test_invalid_plan_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Plan(**kwargs)


def test_unknown_field_in_json_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"Plan: unknown key\(s\)"):
        Plan.from_dict({"prune": 0.1, "sparsity": 0.5})


def test_runtime_resolution_and_label() -> None:
    assert Plan().resolved_runtime == "torch"
    assert Plan(bits=8).resolved_runtime == "onnxruntime"
    assert Plan(prune=0.5, rank=0.5, bits=8, distill_epochs=2).label == "prune0.5-rank0.5-int8-kd2"


def test_plan_with_a_wrongly_typed_field() -> None:
    with pytest.raises(ValueError, match="Plan.prune must be a number in"):
        Plan(prune="0.5")  # type: ignore[arg-type]


def test_prune_method_round_trips_and_picks_the_pruning_configs() -> None:
    from autoshrink.pipeline import technique_configs

    uniform = Plan(prune=0.3, prune_method="uniform", bits=8)
    assert uniform.label == "prune0.3uni-int8" and Plan.from_json(uniform.to_json()) == uniform
    default = Plan(prune=0.3, bits=8)
    assert default.label == "prune0.3-int8" and "prune_method" not in default.to_dict()
    assert "prune_method" not in repr(default) and Plan.from_dict({"prune": 0.3, "bits": 8}) == default
    (by_sensitivity, _), (by_weights, _) = technique_configs(default), technique_configs(uniform)
    assert (by_sensitivity.allocation, by_sensitivity.importance) == ("sensitivity", "activation")
    assert (by_weights.allocation, by_weights.importance) == ("uniform", "magnitude")


def test_rank_method_round_trips_and_the_default_is_not_written() -> None:
    tt = Plan(rank=0.25, rank_method="tt", bits=8, distill_epochs=1)
    assert tt.label == "rank0.25tt-int8-kd1"
    assert Plan.from_json(tt.to_json()) == tt and tt.to_dict()["rank_method"] == "tt"
    svd = Plan(rank=0.25)
    assert "rank_method" not in svd.to_dict() and "rank_method" not in repr(svd)  # stored plans read as before
    assert Plan.from_dict({"rank": 0.25}) == svd and svd.label == "rank0.25-fp32"


def test_calibration_round_trips_reaches_the_quantizer_and_goes_where_it_does_not_apply() -> None:
    from autoshrink.pipeline import technique_configs

    plan = Plan(bits=8, calibration="percentile", layer_bits={"stem": 32})
    assert plan.label == "int8-pct-mixed1" and Plan.from_json(plan.to_json()) == plan
    assert technique_configs(plan)[-1].calibration == "percentile"
    default = Plan(bits=8)
    assert "calibration" not in default.to_dict() and "calibration" not in repr(default)  # stored plans read as before
    assert technique_configs(default)[-1].calibration == "minmax"
    assert plan.measured_in("openvino").calibration == "minmax"  # an auto plan that OpenVINO ran best
    assert plan.measured_in("openvino").label == "int8-ov-mixed1"
    assert plan.on("onnxruntime").calibration == "percentile"


def test_mixed_by_is_in_the_label_and_json_and_left_out_at_its_default() -> None:
    plan = Plan(bits=8, layer_bits={"stem": 32, "b1": 32}, mixed_by="per-mac")
    assert plan.label == "int8-mixed2mac" and Plan.from_json(plan.to_json()) == plan
    default = Plan(bits=8, layer_bits={"stem": 32})
    assert "mixed_by" not in default.to_dict() and "mixed_by" not in repr(default)  # stored plans read as before
