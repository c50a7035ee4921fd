"""`Backend`: where a search's candidates are built and timed."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.plan import Plan
from autoshrink.searching.fidelity import Front, front_of
from autoshrink.searching.recorder import CandidateFailed, CandidateStopped, Recorder
from autoshrink.searching.study import finished_outcomes
from autoshrink.searching.trial import TrialOutcome, TrialRunner, find_twin, measurement_lock
from autoshrink.space import SearchSpace
from autoshrink.tracking import trial_name

if TYPE_CHECKING:
    import optuna

    from autoshrink.measuring.latency import Latency

    StudyCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class Backend(abc.ABC):
    """Where candidates are built and timed.

    Contract:

    * `run` adds ``n_trials`` finished trials to ``study``, fewer when ``deadline`` (a
      `time.monotonic` time) passes: no trial starts after it, those running finish. Each plan is drawn with
      ``space.sample(trial)`` from the study's own sampler, and each trial is recorded with
      ``recorder.start`` before and ``recorder.record`` after it runs, **in the process that
      owns the study** (workers only compute): both backends do it with `begin` and
      `conclude`. A candidate that fails is recorded as a FAIL trial and the search goes on.
      Any other exception (a bug, here or in a worker) stops `run` and propagates. ``callbacks``
      are called like Optuna's ``optimize`` callbacks after every finished trial.
    * `evaluate` builds and measures one plan where trials are measured (the baseline), so it
      is comparable with the candidates.
    * `retime` times a saved artifact again, also where trials are measured, and returns the
      median latency in ms, holding the machine's measurement lock like every measurement.
    * `close` releases what the backend started (a local Ray instance, say).
    """

    @abc.abstractmethod
    def run(
        self,
        study: optuna.Study,
        space: SearchSpace,
        runner: TrialRunner,
        recorder: Recorder,
        *,
        n_trials: int,
        callbacks: Sequence[StudyCallback] = (),
        deadline: float | None = None,
    ) -> None: ...

    def evaluate(self, runner: TrialRunner, plan: Plan, *, name: str) -> TrialOutcome:
        return runner(plan, name=name)

    def retime(self, artifact_path: str, batch: Inputs, hardware: HardwareProfile) -> Latency:
        """The saved artifact timed again where trials are measured (here)."""
        from autoshrink.artifact import load_artifact
        from autoshrink.measuring.latency import measure_latency

        artifact = load_artifact(artifact_path)
        with measurement_lock():
            return measure_latency(artifact, batch, hardware)

    def close(self) -> None:  # noqa: B027 - a hook with a do-nothing default, not abstract
        """Release resources; the default backend holds none."""


@dataclass(frozen=True)
class Pending:
    """A trial asked of the study and opened in the recorder, not yet told (see `begin`)."""

    trial: optuna.Trial
    plan: Plan
    run_id: str
    #: The measurement of an earlier trial of the same plan: reported again, not rebuilt.
    reused: TrialOutcome | None
    #: What a distilling candidate must still be able to reach (`fidelity`), None: the rule is off.
    front: Front | None = None

    @property
    def name(self) -> str:
        """The trial's name, also its artifact's file name: ``trial-007``."""
        return trial_name(self.trial.number)


def out_of_time(deadline: float | None) -> bool:
    """Whether ``deadline`` (a `time.monotonic` time, or None for none) has passed: no trial starts then.

    >>> out_of_time(None), out_of_time(0.0)
    (False, True)
    """
    import time

    return deadline is not None and time.monotonic() >= deadline


def begin(study: optuna.Study, space: SearchSpace, recorder: Recorder) -> Pending:
    """The first half of every backend's trial: ask the study, draw the plan, open its run.

    A plan an earlier trial measured comes back with that measurement (``reused``): samplers
    repeat points of a discrete space.
    """
    trial = study.ask()
    plan = space.sample(trial)
    run_id = recorder.start(trial, plan)
    finished = finished_outcomes(study)
    twin = find_twin(finished, plan)
    margin = recorder.early_stop_margin
    front = None if margin is None else front_of(finished, recorder.budget, recorder.objectives, margin)
    return Pending(trial, plan, run_id, twin[1].duplicate(twin[0]) if twin else None, front)


def conclude(
    study: optuna.Study, recorder: Recorder, pending: Pending, outcome: TrialOutcome,
    callbacks: Sequence[StudyCallback] = (),
) -> optuna.trial.FrozenTrial:  # fmt: skip
    """The second half: record the outcome, tell the study (FAIL for a failed candidate, PRUNED
    for one stopped early), call back.

    An exception while recording is a bug: it propagates and the trial stays RUNNING, which a
    resumed search cleans up.
    """
    from optuna.trial import TrialState

    try:
        values = recorder.record(pending.trial, pending.run_id, outcome)
    except CandidateFailed:
        frozen = study.tell(pending.trial, state=TrialState.FAIL)
    except CandidateStopped:
        frozen = study.tell(pending.trial, state=TrialState.PRUNED)
    else:
        frozen = study.tell(pending.trial, list(values))
    for callback in callbacks:
        callback(study, frozen)
    return frozen
