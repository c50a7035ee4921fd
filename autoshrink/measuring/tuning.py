"""Session options chosen by measurement: the fastest options for an artifact on this target.

`tune_session` times the option sets of `autoshrink.sessions.variants` (the defaults, then one
change at a time) on the profile's batch and threads, interleaved so that a drift of the
machine hits them all alike: each set gets two blocks of the profile's ``repeats`` (at least
10) after 10 warm-up runs, and keeps its faster block median. The rule:

1. with a memory limit, the sets whose measured peak memory (`autoshrink.measuring.memory`)
   is over it are dropped (unless all are: then the one with the least memory is kept);
2. the fastest remaining set wins, but any set within `TIE` (3%) of it counts as equally fast,
   and among those the defaults win, else the one with the least memory (measured only with a
   limit), else the earlier in `variants`' order. A 3% tie keeps noise from choosing options.

The chosen options' latency is then measured by the full protocol like any other
(`autoshrink.measuring.latency`); these short timings only choose.

Example:
    >>> import torch
    >>> from autoshrink import HardwareProfile, Plan, compress
    >>> art = compress(torch.nn.Linear(8, 4), Plan(bits=8), train_data=(torch.randn(16, 8),),
    ...                example_input=torch.randn(1, 8))
    >>> tuned = tune_session(art, torch.randn(1, 8), HardwareProfile(repeats=10))
    >>> sorted(tuned.timings)[0]
    'defaults'
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

from autoshrink.artifact import Artifact
from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.sessions import SessionOptions, variants

#: Options within this fraction of the fastest count as equally fast.
TIE = 0.03
WARMUP_RUNS = 10
ROUNDS = 2


@dataclass(frozen=True)
class Tuned:
    """The chosen options, and what each option set measured (keyed by `SessionOptions.describe`):
    its median milliseconds in the short protocol, and its peak memory in MB where measured."""

    options: SessionOptions
    timings: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)


def fixed_options(hardware: HardwareProfile) -> SessionOptions | None:
    """The options a profile fixes (``default`` or a mapping), or None when it asks to tune."""
    if hardware.session == "tune":
        return None
    return SessionOptions() if hardware.session == "default" else hardware.session


def tune_session(
    artifact: Artifact, batch: Inputs, hardware: HardwareProfile, memory_limit_mb: float | None = None
) -> Tuned:
    """The session options ``artifact`` runs fastest with here (see the module doc for the rule);
    a torch artifact has none to choose."""
    if artifact.runtime == "torch":
        return Tuned(SessionOptions())
    fixed = fixed_options(hardware)
    if fixed is not None:
        return Tuned(fixed)
    sets = variants(artifact.runtime, hardware.threads)
    if len(sets) == 1:
        return Tuned(sets[0])
    timings = _time(artifact, batch, hardware, sets)
    memory: dict[SessionOptions, float] = {}
    if memory_limit_mb is not None:
        from autoshrink.measuring.memory import measure_peak_memory

        memory = {o: measure_peak_memory(_with(artifact, o), batch, hardware).peak_mb for o in sets}
        fitting = [o for o in sets if memory[o] <= memory_limit_mb]
        sets = fitting or [min(sets, key=lambda o: memory[o])]
    fastest = min(timings[o] for o in sets)
    tied = [o for o in sets if timings[o] <= fastest * (1 + TIE)]
    default = SessionOptions()
    chosen = default if default in tied else min(tied, key=lambda o: memory.get(o, 0.0))
    return Tuned(
        chosen,
        {o.describe(): timings[o] for o in timings},
        {o.describe(): mb for o, mb in memory.items()},
    )


def _with(artifact: Artifact, options: SessionOptions) -> Artifact:
    """``artifact`` run with ``options``, for measuring only (its payload's metadata unchanged)."""
    return replace(artifact, options=options, _sessions={})


def _time(
    artifact: Artifact, batch: Inputs, hardware: HardwareProfile, sets: list[SessionOptions]
) -> dict[SessionOptions, float]:
    from autoshrink.measuring.latency import timed_block, torch_threads

    repeats = max(10, hardware.repeats)
    best: dict[SessionOptions, float] = {}
    with torch_threads(hardware.threads):
        runs = {}
        for options in sets:
            candidate = _with(artifact, options)
            run, feed = candidate.runner(hardware.threads), candidate.feed(batch)
            for _ in range(WARMUP_RUNS):
                run(feed)
            runs[options] = (run, feed)
        for _ in range(ROUNDS):
            for options, (run, feed) in runs.items():
                median = statistics.median(timed_block(run, feed, repeats))
                best[options] = min(best.get(options, median), median)
    return best
