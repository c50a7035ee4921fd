"""`LocalBackend`: every trial in this process, one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoshrink.searching.backend import Backend
from autoshrink.searching.recorder import CandidateFailed, Recorder
from autoshrink.searching.study import finished_outcomes
from autoshrink.searching.trial import TrialRunner, find_twin
from autoshrink.space import SearchSpace

if TYPE_CHECKING:
    import optuna

    from autoshrink.searching.backend import StudyCallback


class LocalBackend(Backend):
    """Runs the search in the calling process with Optuna's ``optimize`` (the default).

    Example:
        >>> from autoshrink.searching import LocalBackend
        >>> LocalBackend()
        LocalBackend()
    """

    def __repr__(self) -> str:
        return "LocalBackend()"

    def run(
        self,
        study: optuna.Study,
        space: SearchSpace,
        runner: TrialRunner,
        recorder: Recorder,
        *,
        n_trials: int,
        callbacks: Sequence[StudyCallback] = (),
    ) -> None:
        from optuna.trial import TrialState

        # ask/tell rather than optimize(): a failed candidate is recorded by us, not logged by
        # Optuna with a traceback, and an interruption leaves the trial RUNNING for resume.
        for _ in range(n_trials):
            trial = study.ask()
            plan = space.sample(trial)
            run_id = recorder.start(trial, plan)
            twin = find_twin(finished_outcomes(study), plan)
            outcome = twin[1].duplicate(twin[0]) if twin else runner(plan, name=f"trial-{trial.number:03d}")
            try:
                values = recorder.record(trial, run_id, outcome)
            except CandidateFailed:
                frozen = study.tell(trial, state=TrialState.FAIL)
            else:
                frozen = study.tell(trial, list(values))
            for callback in callbacks:
                callback(study, frozen)
