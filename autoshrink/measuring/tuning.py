"""Session options chosen by measurement: the fastest options for an artifact on this target.

`tune_session` times the option sets of `autoshrink.sessions.variants` (the defaults, then one
change at a time) on the profile's batch and threads, interleaved so that a drift of the
machine hits them all alike: after 10 warm-up runs each, up to `ROUNDS` rounds time one block
of half the profile's ``repeats`` (at least 10) per set; a set that is not ahead of the
reference in a round cannot win (rule 2) and is not timed again, so a candidate for which
nothing beats the defaults costs one round. The rule:

1. the reference is the defaults; with a memory limit, the sets whose measured peak memory
   (`autoshrink.measuring.memory`) is over it are dropped first, and if the defaults are among
   them the reference is the set with the least memory that fits (or, if none fits, the one
   with the least memory, which is then chosen);
2. a set replaces the reference only if its block median is more than `TIE` (3%) below the
   reference's **in every round**; of those, the one with the lowest median wins. A short
   timing that is faster once is noise on a shared machine (it was, on the first version of
   this rule, which took the best of two rounds: `results/memory.md`).

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
from dataclasses import dataclass, field

from autoshrink.artifact import Artifact
from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.sessions import SessionOptions, variants

#: Options within this fraction of the fastest count as equally fast.
TIE = 0.03
WARMUP_RUNS = 10
ROUNDS = 3


@dataclass(frozen=True)
class Tuned:
    """The chosen options, and what each option set measured (keyed by `SessionOptions.describe`):
    its lowest block median in milliseconds, and its peak memory in MB where measured."""

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
    memory: dict[SessionOptions, float] = {}
    reference = SessionOptions()
    if memory_limit_mb is not None:
        from autoshrink.measuring.memory import measure_peak_memory

        memory = {o: measure_peak_memory(artifact.run_with(o), batch, hardware).peak_mb for o in sets}
        fitting = [o for o in sets if memory[o] <= memory_limit_mb]
        if reference not in fitting:
            reference = min(fitting or sets, key=lambda o: memory[o])
        sets = fitting or [reference]
    rounds = _time(artifact, batch, hardware, sets, reference)
    better = [o for o in sets if _beats(rounds[o], rounds[reference])]
    chosen = min(better, key=lambda o: min(rounds[o])) if better else reference
    return Tuned(
        chosen,
        {o.describe(): min(ms) for o, ms in rounds.items()},
        {o.describe(): mb for o, mb in memory.items()},
    )


def _beats(times: list[float], reference: list[float]) -> bool:
    """Whether ``times`` are more than `TIE` below ``reference`` in every round (a set dropped
    after a round has fewer times, and does not).

    >>> _beats([0.9, 0.95], [1.0, 1.0]), _beats([0.9, 0.99], [1.0, 1.0]), _beats([0.9], [1.0, 1.0])
    (True, False, False)
    """
    return len(times) == len(reference) and all(t < r * (1 - TIE) for t, r in zip(times, reference, strict=True))


def _time(
    artifact: Artifact, batch: Inputs, hardware: HardwareProfile, sets: list[SessionOptions],
    reference: SessionOptions,
) -> dict[SessionOptions, list[float]]:
    """Each set's block median (ms) in each interleaved round it stayed in: after each round,
    the sets not ahead of ``reference`` by `TIE` are dropped, and the rounds end when none is left."""
    from autoshrink.measuring.latency import timed_block, torch_threads

    repeats = max(10, hardware.repeats // 2)
    medians: dict[SessionOptions, list[float]] = {o: [] for o in sets}
    if sets == [reference]:  # nothing to compare with
        return medians
    with torch_threads(hardware.threads):
        runs = {}
        for options in sets:
            candidate = artifact.run_with(options)
            run, feed = candidate.runner(hardware.threads), candidate.feed(batch)
            for _ in range(WARMUP_RUNS):
                run(feed)
            runs[options] = (run, feed)
        racing = list(runs)
        for _ in range(ROUNDS):
            for options in racing:
                run, feed = runs[options]
                medians[options].append(statistics.median(timed_block(run, feed, repeats)))
            racing = [o for o in racing if o == reference or _beats(medians[o], medians[reference][: len(medians[o])])]
            if racing == [reference]:
                break
    return medians
