"""The Ray Tune searcher of a `RayBackend` search: Tune asks it for trials, and it asks the
driver's Optuna study (`begin`) and records through the driver's `Recorder` (`conclude`).

Tune pickles its searcher (into the experiment's ``tuner.pkl`` and checkpoints), and the study,
the recorder and the progress callbacks need not pickle (the command line's callback holds a
live console). So they stay in the driver process as a `DriverSearch` registered under a key
(`registered`), and the Tune searcher holds only that key (`study_searcher`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.plan import Plan
from autoshrink.searching.backend import Pending, begin, conclude, out_of_time
from autoshrink.searching.recorder import Recorder
from autoshrink.searching.trial import TrialOutcome
from autoshrink.space import SearchSpace

if TYPE_CHECKING:
    import optuna

    from autoshrink.searching.backend import StudyCallback


class DriverSearch:
    """The driver's side of one Ray search: the study, the recorder and the progress callbacks.

    Tune pickles its searcher (into the experiment's ``tuner.pkl`` and checkpoints), and these
    objects need not pickle (the command line's progress callback holds a live console). So they
    stay here, in the driver process, registered under a key (`registered`), and the Tune
    searcher holds only that key (`study_searcher`).
    """

    def __init__(
        self, study: optuna.Study, space: SearchSpace, recorder: Recorder, artifacts_dir: Path,
        callbacks: Sequence[StudyCallback], deadline: float | None = None,
    ) -> None:  # fmt: skip
        self.study, self.space, self.recorder = study, space, recorder
        self.artifacts_dir, self.callbacks, self.deadline = artifacts_dir, callbacks, deadline
        self.pending: dict[str, Pending] = {}
        self.bug: BaseException | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """`begin` a trial and give Tune its config; ``None`` once a bug has stopped the search or
        the time budget has run out (the trials running then finish)."""
        if self.bug is not None or out_of_time(self.deadline):
            return None
        pending = begin(self.study, self.space, self.recorder)
        self.pending[trial_id] = pending
        config: dict[str, Any] = {"plan": pending.plan.to_dict(), "name": pending.name}
        if pending.front is not None:  # the driver's front, by which the worker may stop a distillation
            config["front"] = pending.front.to_dict()
        if pending.reused is not None:  # the same plan was measured: the worker only reports it back
            config["reuse"] = json.dumps(pending.reused.to_dict())
        return config

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """`conclude` the trial with the worker's report; a bug (in a worker or while recording)
        stops asking for trials and is raised once Tune returns. Its trial stays RUNNING, as in
        a local search, and a resumed search cleans it up."""
        pending = self.pending.pop(trial_id)
        if self.bug is not None:
            return
        if result and "bug" in result:
            self.bug = WorkerBug(result["bug"])
            return
        try:
            conclude(self.study, self.recorder, pending, _outcome(pending.plan, result, error, self.artifacts_dir),
                     self.callbacks)  # fmt: skip
        except Exception as exc:
            self.bug = exc


class WorkerBug(RuntimeError):
    """An error in a Ray worker that is not the candidate's (a bug): it stops the search."""


#: The Ray searches running in this (driver) process, by key; see `DriverSearch`.
SEARCHES: dict[str, DriverSearch] = {}


@contextlib.contextmanager
def registered(search: DriverSearch) -> Iterator[str]:
    """Register ``search`` for the duration of the block; yields its key."""
    key = uuid.uuid4().hex
    SEARCHES[key] = search
    try:
        yield key
    finally:
        del SEARCHES[key]


def study_searcher(key: str) -> Any:
    """The Tune searcher of the registered search ``key``; also how a pickled one is rebuilt."""
    return _searcher_class()(key)


@functools.cache
def _searcher_class() -> type:
    """The `ray.tune.search.Searcher` subclass, defined once, on first use (Ray imports late)."""
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """A Ray Tune searcher that asks the driver's study (ask/tell) and records through its
        `Recorder`; it holds only the key of its `DriverSearch`, so it pickles as that key."""

        def __init__(self, key: str) -> None:
            super().__init__(metric=None, mode=None)
            self.key = key

        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return study_searcher, (self.key,)

        @property
        def search(self) -> DriverSearch:
            try:
                return SEARCHES[self.key]
            except KeyError:
                raise RuntimeError(
                    f"the Ray search {self.key!r} is not running in this process: its searcher works only "
                    "in the driver, while RayBackend.run runs (resume a search by running it again)"
                ) from None

        def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
            return True

        # The study is the state, in its database: nothing for Tune to checkpoint.
        def get_state(self) -> dict[str, Any]:
            return {}

        def set_state(self, state: dict[str, Any]) -> None:
            pass

        def save_to_dir(self, *args: Any, **kwargs: Any) -> None:
            pass

        def restore_from_dir(self, *args: Any, **kwargs: Any) -> None:
            pass

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            config = self.search.suggest(trial_id)
            # Tune's own types say dict or None, but FINISHED (a str) is how a searcher says "no more"
            return Searcher.FINISHED if config is None else config  # type: ignore[return-value]

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            self.search.complete(trial_id, result, error)

    return StudySearcher


def _outcome(plan: Plan, result: dict[str, Any] | None, error: bool, artifacts_dir: Path) -> TrialOutcome:
    """The worker's report as a `TrialOutcome`; the artifact's bytes written where the driver keeps them."""
    if error or not result or "outcome" not in result:
        return TrialOutcome(plan, error="the Ray worker running this trial died (see Ray's logs)")
    outcome = TrialOutcome.from_dict(json.loads(result["outcome"]))
    if result.get("artifact") and outcome.artifact_path:
        path = artifacts_dir / Path(outcome.artifact_path).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["artifact"]))
        outcome = TrialOutcome.from_dict(outcome.to_dict() | {"artifact_path": str(path)})
    return outcome
