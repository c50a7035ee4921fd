from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from autoshrink.config import ConfigError
from autoshrink.space import PRESET_MIXED, SearchSpace

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family", ["default", "cnn", "transformer"])
def test_each_space_file_is_its_built_in_preset(family: str) -> None:
    # The files are what users copy and edit; the presets are what a search uses by default.
    assert SearchSpace.from_yaml(ROOT / "search_spaces" / f"{family}.yaml") == SearchSpace.preset(family)


def test_unknown_family_gets_the_default() -> None:
    assert SearchSpace.preset("graph-network") == SearchSpace.preset(None) == SearchSpace(mixed=PRESET_MIXED)


def test_space_serializes_for_mlflow_params() -> None:
    text = json.dumps(SearchSpace().to_dict())
    assert SearchSpace.from_dict(json.loads(text)) == SearchSpace()


def test_any_sampled_plan_can_be_rebuilt_without_a_study() -> None:
    space = SearchSpace()
    study = optuna.create_study()
    trial = study.ask()
    plan = space.sample(trial)
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == plan


def test_space_yaml_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "space.yaml"
    bad.write_text("prune: {low: 0.5, high: 0.2, step: 0.1}\n")
    with pytest.raises(ConfigError, match="space.yaml.*low <= high"):
        SearchSpace.from_yaml(bad)
    bad.write_text("bits: {choices: [32, 16]}\n")
    with pytest.raises(ConfigError, match="bits"):
        SearchSpace.from_yaml(bad)
    bad.write_text("prune: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        SearchSpace.from_yaml(bad)
    bad.write_text("bitz: [8]\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bitz'\]"):
        SearchSpace.from_yaml(bad)


def test_the_runtimes_space_file_is_the_default_with_the_runtime_knob() -> None:
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "runtimes.yaml")
    default = SearchSpace.preset("default")
    assert space.runtime == ("auto", "onnxruntime", "openvino")
    assert (space.prune, space.rank, space.bits, space.distill_epochs) == (
        default.prune, default.rank, default.bits, default.distill_epochs)  # fmt: skip


def test_mixed_keeps_the_most_sensitive_layers_of_the_ranking() -> None:
    ranking = {8: ["stem", "head", "b1", "b2"], 4: ["head", "b2"]}
    space = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(32, 8, 4), distill_epochs=(0,), mixed=(0, 0.5, 1))
    ranked = space.ranked(ranking)
    int8 = ranked.sample(optuna.trial.FixedTrial({"bits": 8, "mixed": 0.5, "rank": "off", "distill_epochs": 0}))
    assert dict(int8.layer_bits) == {"stem": 32, "head": 32}  # half of four, most sensitive first, in float
    int4 = ranked.sample(optuna.trial.FixedTrial({"bits": 4, "mixed": 1, "rank": "off", "distill_epochs": 0}))
    assert dict(int4.layer_bits) == {"head": 8}  # a count; in a 4-bit plan kept at int8
    fp32 = ranked.sample(optuna.trial.FixedTrial({"bits": 32, "rank": "off", "distill_epochs": 0}))
    assert fp32.layer_bits == ()  # a float plan draws no mixed
    assert ranked == space and ranked.to_dict() == space.to_dict()  # the ranking is measured, not a setting
    with pytest.raises(ValueError, match="needs a ranking"):
        space.sample(optuna.trial.FixedTrial({"bits": 8, "mixed": 0.5, "rank": "off", "distill_epochs": 0}))


def test_mixed_values_are_checked_and_read_from_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="space.mixed values"):
        SearchSpace(mixed=(1.5,))
    with pytest.raises(ConfigError, match="space.mixed values"):
        SearchSpace(mixed=(-1,))
    path = tmp_path / "space.yaml"
    path.write_text("bits: [8]\nmixed: [0, 0.1, 3]\n")
    assert SearchSpace.from_yaml(path).mixed == (0, 0.1, 3)
    assert SearchSpace.from_dict(SearchSpace(mixed=(0, 2)).to_dict()).mixed == (0, 2)


def test_prune_method_is_drawn_only_for_a_ratio_and_round_trips() -> None:
    space = SearchSpace(prune=(0.0, 0.5, 0.5), prune_method=("sensitivity", "uniform"))
    params = {"rank": "off", "bits": 32, "distill_epochs": 0}
    drawn = space.sample(optuna.trial.FixedTrial({**params, "prune": 0.5, "prune_method": "uniform"}))
    assert drawn.prune_method == "uniform"
    off = space.sample(optuna.trial.FixedTrial({**params, "prune": 0.0}))  # no prune_method parameter needed
    assert off.prune == 0 and off.prune_method == "sensitivity"
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    assert "prune_method" not in SearchSpace().to_dict()  # the default space reads as before
    with pytest.raises(ConfigError, match="prune_method"):
        SearchSpace(prune_method=("global",))


def test_rank_method_is_drawn_only_for_a_rank_and_round_trips() -> None:
    space = SearchSpace(rank=("off", 0.5), rank_method=("svd", "tt"))
    params = {"prune": 0.0, "bits": 32, "distill_epochs": 0}
    assert space.sample(optuna.trial.FixedTrial({**params, "rank": 0.5, "rank_method": "tt"})).rank_method == "tt"
    off = space.sample(optuna.trial.FixedTrial({**params, "rank": "off"}))  # no rank_method parameter needed
    assert off.rank is None and off.rank_method == "svd"
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    assert "rank_method" not in SearchSpace().to_dict()  # the default space reads as before
    study = optuna.create_study()
    trial = study.ask()
    plan = space.sample(trial)
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == plan
    with pytest.raises(ConfigError, match="rank_method"):
        SearchSpace(rank_method=("svd", "cp"))


def test_calibration_is_drawn_only_for_quantized_plans_in_onnx_runtime_and_round_trips() -> None:
    space = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(32, 8), runtime=("onnxruntime", "openvino"),
                        distill_epochs=(0,), calibration=("minmax", "entropy"))  # fmt: skip
    ort = space.sample(optuna.trial.FixedTrial({"rank": "off", "bits": 8, "runtime_8": "onnxruntime",
                                                "distill_epochs": 0, "calibration": "entropy"}))  # fmt: skip
    assert ort.calibration == "entropy" and ort.label == "int8-ent"
    for params in ({"bits": 8, "runtime_8": "openvino"}, {"bits": 32, "runtime_32": "onnxruntime"}):
        plan = space.sample(optuna.trial.FixedTrial({"rank": "off", "distill_epochs": 0, **params}))
        assert plan.calibration == "minmax"  # no calibration parameter drawn, none needed
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    assert "calibration" not in SearchSpace().to_dict()  # the default space reads as before
    assert SearchSpace.preset("cnn").calibration == ("minmax", "percentile")
    with pytest.raises(ConfigError, match="calibration"):
        SearchSpace(calibration=("kl",))


def test_mixed_by_draws_the_per_mac_ranking_only_for_mixed_plans_and_round_trips() -> None:
    space = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(32, 8), distill_epochs=(0,), mixed=(0, 2),
                        mixed_by=("deviation", "per-mac")).ranked({8: ["stem", "head", "b1"]}, {8: ["b1", "b2", "stem"]})  # fmt: skip
    common = {"rank": "off", "distill_epochs": 0, "bits": 8}
    cheap = space.sample(optuna.trial.FixedTrial({**common, "mixed": 2, "mixed_by": "per-mac"}))
    assert dict(cheap.layer_bits) == {"b1": 32, "b2": 32} and cheap.label == "int8-mixed2mac"
    costly = space.sample(optuna.trial.FixedTrial({**common, "mixed": 2, "mixed_by": "deviation"}))
    assert dict(costly.layer_bits) == {"stem": 32, "head": 32} and costly.label == "int8-mixed2"
    uniform = space.sample(optuna.trial.FixedTrial({**common, "mixed": 0}))  # no mixed_by parameter drawn
    assert uniform.layer_bits == () and uniform.mixed_by == "deviation"
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    assert "mixed_by" not in SearchSpace().to_dict()  # the default space reads as before
    with pytest.raises(ConfigError, match="mixed_by"):
        SearchSpace(mixed_by=("flops",))


def test_the_pretrained_cnn_space_file_searches_int8_precision_only() -> None:
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "pretrained-cnn.yaml")
    assert (space.prune, space.rank, space.bits, space.distill_epochs) == ((0.0, 0.0, 0.1), ("off",), (8,), (0,))
    assert space.mixed == (0, 0.05, 0.15) and space.calibration == ("minmax", "percentile")
