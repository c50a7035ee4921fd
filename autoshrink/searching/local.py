"""`LocalBackend`: every trial in this process, one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoshrink.searching.backend import Backend, begin, conclude, out_of_time
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.trial import TrialRunner
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
        deadline: float | None = None,
    ) -> None:
        # ask/tell rather than optimize(): a failed candidate is recorded by us, not logged by
        # Optuna with a traceback, and an interruption leaves the trial RUNNING for resume.
        for _ in range(n_trials):
            if out_of_time(deadline):
                break
            pending = begin(study, space, recorder)
            outcome = pending.reused or runner(pending.plan, name=pending.name, front=pending.front)
            conclude(study, recorder, pending, outcome, callbacks)
