"""One candidate, wherever it runs: build it, measure it, save it. No Optuna, no MLflow here.

A `TrialRunner` turns a `Plan` into a `TrialOutcome`. It never raises for a problem with the
candidate itself (a technique that fails, a runtime that rejects the model, an ``evaluate``
that raises): that becomes ``TrialOutcome.error``, which the driver records. Anything else
(a bug, Ctrl-C, a full disk) propagates and stops the search, which then resumes on re-run.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from autoshrink.artifact import Artifact
from autoshrink.config import Budget, HardwareProfile
from autoshrink.measuring import Measurement, measure
from autoshrink.measuring.accuracy import score
from autoshrink.phases import collecting
from autoshrink.plan import Plan
from autoshrink.runtimes import AUTO, runtime_supports
from autoshrink.searching.fidelity import Front, StoppedEarly
from autoshrink.sessions import SessionOptions
from autoshrink.store import StoreError
from autoshrink.workloads.base import Workload

#: What a search optimizes, in this order: maximize the first, minimize the others. Energy
#: is an objective only where it is measured by counters, peak memory where asked for
#: (`objectives_for`).
OBJECTIVES = ("accuracy", "latency_ms", "energy_mj")
MEMORY_OBJECTIVE = "peak_memory_mb"


#: Latencies this close to the budget (relative) are timed three times; the slowest counts.
NEAR_BUDGET = 0.2


def objectives_for(energy: bool, memory: bool = False) -> tuple[str, ...]:
    """The objectives of a search: accuracy and latency, then energy and peak memory where they are objectives.

    Example:
        >>> objectives_for(False, memory=True)
        ('accuracy', 'latency_ms', 'peak_memory_mb')
    """
    return (OBJECTIVES if energy else OBJECTIVES[:2]) + ((MEMORY_OBJECTIVE,) if memory else ())


def candidate_errors() -> tuple[type[Exception], ...]:
    """Errors that belong to one candidate: recorded on its trial, and the search goes on."""
    from autoshrink.measuring.accuracy import EvaluationError
    from autoshrink.techniques import CompressionError
    from autoshrink.techniques._onnx import onnx_errors

    # RuntimeError / ValueError: what torch raises for a graph a technique broke.
    return (CompressionError, EvaluationError, RuntimeError, ValueError, *onnx_errors())


@dataclass(frozen=True)
class TrialOutcome:
    """What one candidate came to: its measurement and saved artifact, or its error.

    Example:
        >>> o = TrialOutcome(Plan(bits=8), error="CompressionError: no layer quantized")
        >>> o.failed, TrialOutcome.from_dict(o.to_dict()) == o
        (True, True)
    """

    plan: Plan
    measurement: Measurement | None = None
    error: str | None = None
    artifact_path: str | None = None
    compress_s: float = 0.0
    measure_s: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None
    host: str = ""
    screened: bool = False  # over the budget before distillation: accuracy not measured
    extra_builds: int = 0  # accuracy-aware quantization: builds with more float layers, this one among them
    phases: dict[str, float] = field(default_factory=dict)  # seconds by phase (`autoshrink.phases`), here
    curve: tuple[float, ...] = ()  # distillation: the score on the validation subset after each epoch
    stopped_epoch: int | None = None  # stopped early after this epoch (`fidelity`): not scored on the whole split
    subset_bound: float | None = None  # stopped on its subset score (`fidelity`): the bound on its whole score

    @property
    def failed(self) -> bool:
        return self.error is not None or self.measurement is None

    def values(self, objectives: tuple[str, ...] = OBJECTIVES) -> tuple[float, ...]:
        """The objective values, in the order of ``objectives``."""
        if self.measurement is None:
            raise ValueError("a failed trial has no objective values")
        return tuple(float(getattr(self.measurement, k)) for k in objectives)

    def duplicate(self, of: int) -> TrialOutcome:
        """This outcome, reused by a later trial that sampled the same plan."""
        return replace(self, duplicate_of=of)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan"] = self.plan.to_dict()
        data["measurement"] = self.measurement.to_dict() if self.measurement else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialOutcome:
        fields_ = dict(data)
        fields_["plan"] = Plan.from_dict(fields_["plan"])
        m = fields_.get("measurement")
        fields_["measurement"] = Measurement.from_dict(m) if m else None
        fields_["curve"] = tuple(fields_.get("curve", ()))
        return cls(**fields_)


@contextlib.contextmanager
def measurement_lock() -> Iterator[None]:
    """One measurement at a time per machine (an OS file lock shared by every process on it):
    concurrent trials would otherwise time each other."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    path = Path(tempfile.gettempdir()) / "autoshrink-measure.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_twin(outcomes: Mapping[int, TrialOutcome], plan: Plan) -> tuple[int, TrialOutcome] | None:
    """An earlier trial that measured ``plan`` (not itself a copy, not failed), if any.

    Samplers repeat points in a discrete space; a repeat reuses the measurement.
    """
    for number in sorted(outcomes):
        outcome = outcomes[number]
        if outcome.plan == plan and outcome.duplicate_of is None and not outcome.failed:
            return number, outcome
    return None


@dataclass(frozen=True, eq=False)
class TrialRunner:
    """Builds and measures candidates of one workload; picklable, so it can be shipped.

    ``cache`` keeps what every candidate shares (the teacher's outputs on the training data,
    the speed of each architecture), so it is computed once per search and process.

    Architecture first: latency, energy and size depend on the architecture (pruning, rank,
    bit width, runtime), not on distillation. With a ``budget``, a plan that distills is first
    lowered without distillation and timed (once per architecture); if that is over the
    latency, size or energy budget the candidate is recorded as infeasible with those figures
    and no time is spent distilling it or scoring its accuracy (``screened``). Otherwise it is
    distilled, and its accuracy scored; its speed figures are the architecture's.

    Accuracy-aware quantization: with a budget whose ``max_drop`` is resolved to a score floor and
    a ``ranking`` of the layers (bit width -> layers, most sensitive first), an int8 or 4-bit
    candidate under the floor is built again with its most sensitive layers at the next
    precision up, the fewest that hold the floor: 1, 2, 4, ... layers until one holds, then
    bisected (the score is taken to rise as layers are kept, which the measurements re-check),
    at most half of the ranked layers. If none holds, the best-scoring build is kept. A plan
    whose table was chosen per MAC (`Plan.mixed_by`) is extended in the ``per_mac`` ranking.
    """

    workload: Workload
    hardware: HardwareProfile
    artifacts_dir: Path
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict, repr=False)
    budget: Budget | None = None
    runtimes: tuple[str, ...] = ()
    ranking: tuple[tuple[int, tuple[str, ...]], ...] = ()
    per_mac: tuple[tuple[int, tuple[str, ...]], ...] = ()

    def build(self, plan: Plan, on_epoch: Callable[[int, nn.Module], None] | None = None) -> Artifact:
        from autoshrink.pipeline import compress

        wl = self.workload
        return compress(
            wl.model, plan, train_data=wl.train, example_input=wl.example_input, seed=self.seed,
            cache=self.cache, task=wl.task, output=wl.output, int8_range=self.hardware.int8_range,
            on_epoch=on_epoch,
        )  # fmt: skip

    def _subset(self) -> Any:
        """`fidelity.SUBSET` validation samples drawn from the whole split (`data.spread`), once per search."""
        from autoshrink.data import spread
        from autoshrink.searching.fidelity import SUBSET

        subset = self.cache.get("fidelity_subset")
        if subset is None:
            subset = self.cache["fidelity_subset"] = spread(self.workload.val, SUBSET)
        return subset

    def epoch_score(self, student: nn.Module, plan: Plan) -> float:
        """A distilling student's score on `fidelity.SUBSET` validation samples (`data.spread`; torch, as it is)."""
        from autoshrink.inputs import InputSpec
        from autoshrink.phases import phase

        art = Artifact(plan, "torch", b"", 0, module=student, spec=InputSpec.of(self.workload.example_input))
        with phase("fidelity"):
            return score(art, self._subset(), self.workload.evaluate)

    def subset_first(self, front: Front | None) -> bool:
        """Whether candidates are scored on the validation subset first (`fidelity`: a front to
        compare with and a split at least `fidelity.SUBSET_FIRST_RATIO` times the subset)."""
        from autoshrink.data import dataset_size
        from autoshrink.searching.fidelity import SUBSET, SUBSET_FIRST_RATIO

        return front is not None and dataset_size(self.workload.val) >= SUBSET_FIRST_RATIO * SUBSET

    def score_first_on_subset(self, artifact: Artifact, front: Front | None, speed: Measurement | None) -> float:
        """``artifact``'s score on the validation split; where `subset_first` applies, only if its
        subset score allows it to reach ``front`` (else `StoppedEarly` with the bound)."""
        from torch.utils.data import Subset

        from autoshrink.searching.fidelity import CHUNKS, upper_bound

        wl = self.workload
        costs = tuple(float(getattr(speed, k)) for k in front.costs) if front is not None and speed is not None else None
        if costs is not None and self.subset_first(front) and front.to_beat(costs) is not None:
            subset = self._subset()
            parts = [Subset(subset, range(i, len(subset), CHUNKS)) for i in range(CHUNKS)]
            mean, bound = upper_bound([(score(artifact, part, wl.evaluate), len(part)) for part in parts if len(part)])
            if not front.worth_scoring(bound, costs):
                raise StoppedEarly(artifact.plan.distill_epochs, mean, front.to_beat(costs) or 0.0, bound)
        return score(artifact, wl.val, wl.evaluate)

    def measure(self, artifact: Artifact, accuracy: bool = True) -> Measurement:
        """Measure on this machine, never at the same time as another measurement on it.

        A latency within `NEAR_BUDGET` of the latency budget decides feasibility on a noisy
        machine: it is timed again and the slowest timing is kept (`worst_of`, counting this
        one), the rule the best is re-checked with before it is registered, so the decision
        does not flip.
        """
        with measurement_lock():
            m = measure(
                artifact, eval_data=self.workload.val, hardware=self.hardware, evaluate=self.workload.evaluate,
                accuracy=accuracy, memory_limit_mb=None if self.budget is None else self.budget.memory_mb,
            )  # fmt: skip
            limit = None if self.budget is None else self.budget.latency_ms  # None: a relative one, not resolved yet
            if limit is not None and abs(m.latency_ms / limit - 1) < NEAR_BUDGET:
                from autoshrink.measuring import latency, timing_batch

                batch = timing_batch(self.workload.val, self.hardware.batch_size)
                measured = artifact.run_with(SessionOptions.from_dict(m.session))  # timed again as first timed
                first = latency.Latency(
                    m.latency_ms, m.latency_p95_ms, m.latency_repeats, m.threads, m.batch_size, m.latency_spread
                )
                slowest = latency.worst_of(
                    lambda: latency.measure_latency(measured, batch, self.hardware),
                    key=lambda t: t.median_ms,
                    taken=[first],
                )
                m = replace(
                    m, latency_ms=slowest.median_ms, latency_p95_ms=slowest.p95_ms, latency_spread=slowest.spread,
                    latency_repeats=m.latency_repeats * latency.WORST_OF,
                )  # fmt: skip
            return m

    def speed(
        self, plan: Plan, measure_with: Measurer | None, built: dict[Plan, Artifact] | None = None
    ) -> tuple[Measurement, str, Plan]:
        """Latency, energy and size of ``plan``'s architecture, without distillation (cached),
        and the plan with its runtime settled. Artifacts built for it are left in ``built``.

        A plan whose runtime is ``auto`` while the runner has `runtimes` to compare is lowered
        to each of them that runs its bit width, and the fastest measured one is kept: the
        runtime is chosen by measurement, where the candidates are measured. A runtime that
        cannot take this architecture is passed over (and not tried again for it); if none can,
        the last error is raised.
        """
        cached = self.cache.setdefault("speed", {})
        failed = self.cache.setdefault("runtime_failed", set())  # architectures a runtime could not take
        choices = self.runtime_choices(plan)
        best: tuple[Measurement, str, Plan] | None = None
        for runtime in choices:
            last_chance = len(choices) == 1 or runtime == choices[-1] and best is None
            candidate = replace(plan.on(runtime), distill_epochs=0)
            key = json.dumps(
                [plan.prune, plan.prune_method, plan.rank, plan.rank_method, plan.bits, candidate.resolved_runtime, plan.layer_bits]
            )
            if key in failed and not last_chance:
                continue
            if key not in cached:
                try:
                    artifact = self.build(candidate)
                    if measure_with is None:
                        cached[key] = (self.measure(artifact, accuracy=False), socket.gethostname())
                    else:
                        cached[key] = measure_with(artifact, False)
                except candidate_errors():
                    failed.add(key)
                    if last_chance:
                        raise
                    continue
                if built is not None:
                    built[candidate] = artifact
            m, where = cached[key]
            if best is None or m.latency_ms < best[0].latency_ms:
                best = (m, where, plan.on(runtime))
        assert best is not None  # the last choice raised if no runtime could take the model
        return best

    def runtime_choices(self, plan: Plan) -> list[str]:
        """The runtimes to measure for ``plan``: its own, or for ``auto`` the runner's alternatives."""
        if plan.runtime != AUTO or not self.runtimes:
            return [plan.runtime]
        found = [r for r in self.runtimes if runtime_supports(r, plan.bits)]
        return sorted(found, key=lambda r: r != plan.resolved_runtime) or [plan.runtime]  # the default first

    def __call__(
        self, plan: Plan, *, name: str, measure_with: Measurer | None = None, front: Front | None = None
    ) -> TrialOutcome:
        """Build, measure and save ``plan``'s artifact as ``<artifacts_dir>/<name>.<suffix>``.

        ``measure_with(artifact, accuracy) -> (measurement, where)`` measures elsewhere (a
        target node); by default the artifact is measured here. Under an accuracy-aware budget
        the outcome's plan is the one built, which may keep more layers in float. With a
        ``front`` (`autoshrink.searching.fidelity`), a distilling candidate is scored on the
        validation subset after each epoch and stopped when it can no longer reach it.
        """
        outcome = self.candidate(plan, name=name, measure_with=measure_with, front=front)
        if not self._under_floor(outcome):
            return outcome
        return self._accuracy_aware(outcome, name, measure_with)

    def _under_floor(self, outcome: TrialOutcome) -> bool:
        """Whether accuracy-aware quantization applies to ``outcome``: it scores under the floor."""
        b = self.budget
        if b is None or b.max_drop is None or b.min_accuracy is None or outcome.failed or outcome.screened:
            return False
        assert outcome.measurement is not None
        return (
            outcome.plan.bits != 32
            and bool(dict(self.ranking).get(outcome.plan.bits))
            and (outcome.measurement.accuracy < b.min_accuracy)
        )

    def _accuracy_aware(self, first: TrialOutcome, name: str, measure_with: Measurer | None) -> TrialOutcome:
        """``first`` built again with the fewest most-sensitive layers kept higher that hold the floor
        (see the class doc); the chosen artifact is saved under ``name``, the others removed."""
        assert self.budget is not None and self.budget.min_accuracy is not None
        floor = self.budget.min_accuracy
        table = dict(first.plan.layer_bits)
        ranked = dict(self.ranking)[first.plan.bits]
        if first.plan.mixed_by == "per-mac":
            ranked = dict(self.per_mac).get(first.plan.bits, ranked)
        names = [n for n in ranked if n not in table]
        higher = 32 if first.plan.bits == 8 else 8
        cap = max(1, len(names) // 2)
        tried: dict[int, TrialOutcome] = {0: first}

        def holds(count: int) -> bool:
            plan = replace(first.plan, layer_bits=tuple((table | {n: higher for n in names[:count]}).items()))
            tried[count] = outcome = self.candidate(plan, name=f"{name}-kept{count}", measure_with=measure_with)
            return not outcome.failed and outcome.measurement is not None and outcome.measurement.accuracy >= floor

        low, high, count = 0, None, 1
        while high is None and low < cap:
            count = min(count, cap)
            if holds(count):
                high = count
            else:
                low, count = count, count * 2
        while high is not None and high - low > 1:
            middle = (low + high) // 2
            if holds(middle):
                high = middle
            else:
                low = middle
        scored = [o for o in tried.values() if not o.failed]
        chosen = tried[high] if high is not None else max(scored, key=lambda o: o.values(("accuracy",))[0])
        for outcome in tried.values():
            if outcome is not chosen and outcome is not first and outcome.artifact_path:
                Path(outcome.artifact_path).unlink(missing_ok=True)
        path = chosen.artifact_path
        if chosen is not first and path is not None:
            if first.artifact_path:
                Path(first.artifact_path).unlink(missing_ok=True)
            target = self.artifacts_dir / f"{name}{Path(path).suffix}"
            path = str(Path(path).replace(target))
        return replace(
            chosen, artifact_path=path, extra_builds=len(tried) - 1,
            compress_s=sum(o.compress_s for o in tried.values()), measure_s=sum(o.measure_s for o in tried.values()),
            phases={k: sum(o.phases.get(k, 0.0) for o in tried.values()) for k in {k for o in tried.values() for k in o.phases}},
        )  # fmt: skip

    def candidate(
        self, plan: Plan, *, name: str, measure_with: Measurer | None = None, front: Front | None = None
    ) -> TrialOutcome:
        """``plan`` built, measured and saved as it is (see `__call__`), with the seconds of each
        phase that ran here (`autoshrink.phases`: techniques, scoring, timing...)."""
        with collecting() as seconds:
            outcome = self._candidate(plan, name=name, measure_with=measure_with, front=front)
        return replace(outcome, phases=dict(seconds))

    def _watch(self, plan: Plan, front: Front, speed: Measurement | None, curve: list[float]) -> Callable[[int, nn.Module], None]:
        """The epoch callback of a distilling candidate: its subset score into ``curve``, and
        `StoppedEarly` when ``front`` says it can no longer reach it (never without ``speed``)."""
        costs = tuple(float(getattr(speed, k)) for k in front.costs) if speed is not None else None

        def watch(epoch: int, student: nn.Module) -> None:
            curve.append(self.epoch_score(student, plan))
            if costs is not None and not front.reachable(epoch, plan.distill_epochs, curve[-1], costs):
                raise StoppedEarly(epoch, curve[-1], front.to_beat(costs) or 0.0)

        return watch

    def _candidate(self, plan: Plan, *, name: str, measure_with: Measurer | None, front: Front | None = None) -> TrialOutcome:
        start = time.perf_counter()
        built = start
        where = socket.gethostname()
        choices = self.runtime_choices(plan)
        choose = len(choices) > 1
        # timed first: to choose the runtime, to screen a distilling plan, to score on the subset first
        screen = choose or (self.budget is not None and plan.distill_epochs > 0) or self.subset_first(front)
        curve: list[float] = []
        speed: Measurement | None = None
        try:
            settled = plan if choose else plan.measured_in(choices[0])  # an "auto" left with one runtime runs in it
            timed: dict[Plan, Artifact] = {}  # without distillation, the timed artifact is the candidate
            if screen:
                speed, where, settled = self.speed(plan, measure_with, timed)
                if self._over_budget(speed):
                    now = time.perf_counter()
                    return TrialOutcome(plan, speed, compress_s=now - start, host=where, screened=True)
            watch = self._watch(settled, front, speed, curve) if front is not None and settled.distill_epochs else None
            artifact = timed[settled] if settled in timed else self.build(settled, watch)
            built = time.perf_counter()
            if screen:  # the architecture's speed figures and session options, its own accuracy
                artifact = artifact.with_options(SessionOptions.from_dict(speed.session))
                m = replace(
                    speed, accuracy=self.score_first_on_subset(artifact, front, speed),
                    metric=_metric(self.workload.evaluate), num_parameters=artifact.num_parameters,
                )  # fmt: skip
            elif measure_with is None:
                m = self.measure(artifact)
            else:
                m, where = measure_with(artifact, True)
            artifact = artifact.with_options(SessionOptions.from_dict(m.session))  # saved as measured
            m = replace(m, size_bytes=artifact.size_bytes)
        except StoppedEarly as stop:
            assert speed is not None  # only a screened candidate is stopped
            return TrialOutcome(
                plan, speed, compress_s=(built if built > start else time.perf_counter()) - start, host=where,
                curve=(*curve, stop.score) if stop.bound is not None else tuple(curve), stopped_epoch=stop.epoch,
                subset_bound=stop.bound, measure_s=time.perf_counter() - built if built > start else 0.0,
            )  # fmt: skip
        except candidate_errors() as exc:
            now = time.perf_counter()
            return TrialOutcome(
                plan,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                compress_s=(built if built > start else now) - start,
                measure_s=now - built if built > start else 0.0,
                host=socket.gethostname(),
            )
        measured = time.perf_counter()
        path = self.save(artifact, name)
        return TrialOutcome(
            plan,
            m,
            artifact_path=str(path),
            compress_s=built - start,
            measure_s=measured - built,
            skipped=artifact.skipped,
            host=where,
            curve=tuple(curve),
        )

    def _over_budget(self, speed: Measurement) -> bool:
        """Whether the speed figures alone (accuracy is not measured yet) miss the budget."""
        if self.budget is None:
            return False
        return not Budget.met(self.budget.violations(speed.metrics()), ignore=("min_accuracy",))

    def save(self, artifact: Artifact, name: str) -> Path:
        try:
            return artifact.save(self.artifacts_dir / f"{name}{artifact.suffix}")
        except OSError as exc:
            raise StoreError(f"cannot save the candidate's artifact in {self.artifacts_dir}: {exc}") from exc


def _metric(evaluate: Any) -> str:
    return getattr(evaluate, "__name__", type(evaluate).__name__) if evaluate is not None else "top1"


#: ``measure_with(artifact, accuracy) -> (measurement, where)``: measuring somewhere else.
Measurer = Callable[[Artifact, bool], tuple[Measurement, str]]
