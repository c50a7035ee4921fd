"""`Backend`: where a search's candidates are built and timed."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.plan import Plan
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.trial import TrialOutcome, TrialRunner
from autoshrink.space import SearchSpace

if TYPE_CHECKING:
    import optuna

    StudyCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class Backend(abc.ABC):
    """Where candidates are built and timed.

    Contract:

    * `run` adds ``n_trials`` finished trials to ``study``. Each plan is drawn with
      ``space.sample(trial)`` from the study's own sampler, and each trial is recorded with
      ``recorder.start`` before and ``recorder.record`` after it runs, **in the process that
      owns the study** (workers only compute). A candidate that fails is recorded by
      ``recorder.record``, which then raises `CandidateFailed`: the backend marks that trial
      FAIL and goes on. Any other exception stops `run` and propagates. ``callbacks`` are
      called like Optuna's ``optimize`` callbacks after every finished trial.
    * `evaluate` builds and measures one plan where trials are measured (the baseline), so it
      is comparable with the candidates.
    * `retime` times a saved artifact again, also where trials are measured, and returns the
      median latency in ms.
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
    ) -> None: ...

    def evaluate(self, runner: TrialRunner, plan: Plan, *, name: str) -> TrialOutcome:
        return runner(plan, name=name)

    def retime(self, artifact_path: str, batch: Inputs, hardware: HardwareProfile) -> float:
        from autoshrink.artifact import load_artifact
        from autoshrink.measuring.latency import measure_latency

        return measure_latency(load_artifact(artifact_path), batch, hardware).median_ms

    def close(self) -> None:  # noqa: B027 - a hook with a do-nothing default, not abstract
        """Release resources; the default backend holds none."""
