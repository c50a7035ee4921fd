"""Mixed precision in a search: the layers ranked once per study, kept, logged, reused on resume."""

from __future__ import annotations

import json
from pathlib import Path

from autoshrink.config import Budget
from autoshrink.searching import Progress
from autoshrink.space import SearchSpace
from tests.searching.conftest import HW, client, run_search, study

# Only int8 plans, which keep none or the one most sensitive layer in float.
MIXED = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(8,), distill_epochs=(0,), mixed=(0, 1))


def test_a_search_ranks_the_layers_once_keeps_the_worst_in_float_and_a_resume_reuses_the_ranking(tmp_path: Path) -> None:
    said: list[str] = []

    def progress(p: Progress) -> None:
        said.append(f"{p.stage}: {p.last}")

    result = run_search(tmp_path, Budget(latency_ms=1000.0), trials=4, space=MIXED, sampler="random", progress=progress)
    assert sum("measuring each layer quantized alone at 8 bits" in line for line in said) == 1
    c = client(tmp_path)
    logged = {a.path for a in c.list_artifacts(result.parent_run_id)}
    assert {"sensitivity.json", "sensitivity.png"} <= logged
    rows = json.loads(Path(c.download_artifacts(result.parent_run_id, "sensitivity.json", str(tmp_path))).read_text())
    scored = [r for r in rows if not r["error"]]
    assert len(scored) >= 3 and all(r["technique"] == "int8" for r in rows)
    assert [r["deviation"] for r in scored] == sorted((r["deviation"] for r in scored), reverse=True)  # ranked
    worst = scored[0]["layer"]
    plans = [t.user_attrs["plan"] for t in study(tmp_path).trials]
    mixed = [p for p in plans if p.get("layer_bits")]
    assert mixed, "a random sampler over two values drew mixed=1 in four trials"  # seed 0: it does
    assert all(p["layer_bits"] == {worst: 32} for p in mixed)  # the most sensitive layer, in float
    assert all(p.get("layer_bits") in (None, {worst: 32}) for p in plans)

    # A study measured under another ranking rule keeps its order on resume: its plans do not change.
    stored = study(tmp_path)
    rows = stored.user_attrs["sensitivity"]["int8"]
    stored.set_user_attr("sensitivity", {"int8": rows[1:] + rows[:1]})
    other = rows[1]["layer"]
    said.clear()
    run_search(tmp_path, Budget(latency_ms=1000.0), trials=10, space=MIXED, sampler="random", progress=progress)
    assert not any("measuring each layer" in line for line in said)
    assert any("reusing the per-layer sensitivity" in line for line in said)
    trials = study(tmp_path).trials
    assert len(trials) == 10
    resumed = [t.user_attrs["plan"].get("layer_bits") for t in trials[4:]]
    assert {other: 32} in resumed and all(bits in (None, {other: 32}) for bits in resumed), resumed


def test_max_drop_keeps_the_fewest_sensitive_layers_in_float_that_hold_the_floor(tmp_path: Path) -> None:
    from autoshrink.artifact import load_artifact
    from autoshrink.searching import search
    from tests.conftest import fragile_workload

    wl = fragile_workload()  # uniform int8 loses most answers: the outlier between a1 and a2
    space = SearchSpace(prune=(0.0, 0.0, 0.1), rank=("off",), bits=(8,), distill_epochs=(0,))
    result = search(wl, budget=Budget(latency_ms=1000.0, max_drop=1.0), trials=1, space=space, experiment="drop",
                    tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", hardware=HW)  # fmt: skip
    (trial,) = study(tmp_path, "drop").trials
    kept = trial.user_attrs["plan"]["layer_bits"]
    rows = study(tmp_path, "drop").user_attrs["sensitivity"]["int8"]  # most sensitive first
    assert {"a1", "a2"} <= set(kept) and set(kept) == {r["layer"] for r in rows[: len(kept)]}  # the top of the ranking
    assert set(kept.values()) == {32}
    floor = client(tmp_path).get_run(result.parent_run_id).data.metrics["budget_min_accuracy_resolved"]
    assert floor == round(result.baseline.measurement.accuracy - 0.01, 12)
    assert result.best is not None and result.best.measurement.accuracy >= floor
    assert dict(result.best.plan.layer_bits) == kept == dict(load_artifact(result.best.artifact_path).plan.layer_bits)
    assert not list(Path(result.best.artifact_path).parent.glob("*-kept*"))  # the other builds are gone
    builds = client(tmp_path).get_run(trial.user_attrs["run_id"]).data.metrics["accuracy_aware_builds"]
    assert builds >= 2  # one layer, two, ... re-measured each time


def test_a_search_keeps_the_layers_of_the_per_mac_ranking_where_the_space_says_so(tmp_path: Path) -> None:
    from dataclasses import replace

    from autoshrink.sensitivity import LayerSensitivity, per_mac_ranking

    space = replace(MIXED, mixed=(1,), mixed_by=("per-mac",))
    run_search(tmp_path, Budget(latency_ms=1000.0), trials=1, space=space, sampler="random")
    stored = study(tmp_path)
    rows = [LayerSensitivity.from_dict(r) for r in stored.user_attrs["sensitivity"]["int8"]]
    assert all(r.macs > 0 for r in rows if not r.error), rows  # counted for every scored layer
    (first,) = [t.user_attrs["plan"] for t in stored.trials]
    assert first["layer_bits"] == {per_mac_ranking(rows)[0]: 32} and first["mixed_by"] == "per-mac", first

    # Make the most sensitive layer the costliest by far: a resumed search must now keep another one.
    costly = [replace(rows[0], macs=10**12), *rows[1:]]
    stored.set_user_attr("sensitivity", {"int8": [r.to_dict() for r in costly]})
    cheap = per_mac_ranking(costly)[0]
    assert cheap != rows[0].layer
    run_search(tmp_path, Budget(latency_ms=1000.0), trials=3, space=space, sampler="random")
    resumed = [t.user_attrs["plan"]["layer_bits"] for t in study(tmp_path).trials[1:]]
    assert resumed and all(bits == {cheap: 32} for bits in resumed), resumed



def test_max_drop_extends_a_per_mac_plan_in_the_per_mac_ranking(tmp_path: Path) -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from autoshrink.plan import Plan
    from autoshrink.searching.trial import TrialOutcome, TrialRunner

    built: list[Plan] = []

    class Runner(TrialRunner):  # every extension holds the floor: the first one tried is kept
        def candidate(self, plan: Plan, **kwargs: object) -> TrialOutcome:
            built.append(plan)
            return TrialOutcome(plan, measurement=SimpleNamespace(accuracy=1.0))  # type: ignore[arg-type]

    budget = Budget(latency_ms=1e6, max_drop=1.0).resolved({"latency_ms": 1e6, "size_bytes": 1.0, "accuracy": 1.0})
    runner = Runner(workload=None, hardware=None, artifacts_dir=tmp_path, budget=budget,  # type: ignore[arg-type]
                    ranking=((8, ("a", "b", "c")),), per_mac=((8, ("c", "b", "a")),))  # fmt: skip
    for mixed_by, first, added in (("per-mac", "c", "b"), ("deviation", "a", "b")):
        plan = Plan(bits=8, layer_bits={first: 32}, mixed_by=mixed_by)
        chosen = runner._accuracy_aware(TrialOutcome(plan), name="t", measure_with=None)
        assert dict(chosen.plan.layer_bits) == {first: 32, added: 32} == dict(built[-1].layer_bits)
    plan = Plan(bits=8, layer_bits={"b": 32}, mixed_by="per-mac")
    assert dict(runner._accuracy_aware(TrialOutcome(plan), name="t", measure_with=None).plan.layer_bits) == {"b": 32, "c": 32}
    assert dict(replace(runner, per_mac=())._accuracy_aware(TrialOutcome(plan), name="t", measure_with=None)
                .plan.layer_bits) == {"b": 32, "a": 32}  # no per-MAC ranking (a study from before): deviation order
