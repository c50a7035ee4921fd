"""Latency of an artifact in its own runtime: warm-up, many repeats, median and p95."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from autoshrink.artifact import Artifact
from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs, batch_size

BLOCKS = 3
MIN_WARMUP_ITERS = 10
UNSTABLE_SPREAD = 1.5
#: Timings of a latency that decides something (`worst_of`); the slowest is kept.
WORST_OF = 3

T = TypeVar("T")


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch: the fastest of three block medians, and that block's p95."""

    median_ms: float
    p95_ms: float
    repeats: int
    threads: int
    batch_size: int
    spread: float  # p90 / p10 within the kept block; > 1.5 means the machine was noisy


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepared_runner(artifact: Artifact, batch: Inputs, threads: int) -> tuple[Callable[[Any], Any], Any]:
    """The artifact's fastest call path and the input in the form it takes."""
    return artifact.runner(threads), artifact.feed(batch)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def timed_block(run: Callable[[Any], Any], feed: Any, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` back-to-back calls ``run(feed)``, sorted."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)


def _as_ms(timing: Any) -> float:
    return float(timing)


def worst_of(
    time_once: Callable[[], T], n: int = WORST_OF, *, key: Callable[[T], float] = _as_ms, taken: Sequence[T] = ()
) -> T:
    """The slowest of ``n`` timings: how a latency that decides something is timed (a candidate
    near the latency budget, the best before it is registered), so that one lucky run on a
    noisy machine does not decide it.

    ``time_once()`` times once and returns milliseconds, or a timing that ``key`` turns into
    them (the slowest timing is returned whole). Timings in ``taken`` were made already and
    count towards ``n``.

    Example:
        >>> timings = iter([1.0, 3.0, 2.0])
        >>> worst_of(lambda: next(timings))
        3.0
    """
    return _pick(max, time_once, n, key, taken)


def fastest_of(
    time_once: Callable[[], T], n: int = WORST_OF, *, key: Callable[[T], float] = _as_ms, taken: Sequence[T] = ()
) -> T:
    """The fastest of ``n`` timings (as `worst_of`, the other way round): how the baseline is
    timed, since every speed-up and relative budget is read against it and one slow block would
    flatter every candidate.

    Example:
        >>> timings = iter([3.0, 1.0])
        >>> fastest_of(lambda: next(timings), taken=[2.0])
        1.0
    """
    return _pick(min, time_once, n, key, taken)


def _pick(pick: Callable[..., T], time_once: Callable[[], T], n: int, key: Callable[[T], float], taken: Sequence[T]) -> T:
    if n < 1:
        raise ValueError(f"a timing needs at least one run, got n={n}")
    timings = [*taken, *(time_once() for _ in range(n - len(taken)))]
    return pick(timings, key=key)


def measure_latency(artifact: Artifact, batch: Inputs, hardware: HardwareProfile) -> Latency:
    """Time ``artifact`` on ``batch`` following the protocol in the README.

    Warm up for at least ``hardware.warmup_s`` and 10 iterations, then time three blocks of
    ``hardware.repeats`` iterations and keep the block with the lowest median. If that block
    is noisy (p90/p10 > 1.5) the three blocks are measured once more.
    """
    with torch_threads(hardware.threads):
        run, feed = prepared_runner(artifact, batch, hardware.threads)
        start, iters = time.perf_counter(), 0
        while iters < MIN_WARMUP_ITERS or time.perf_counter() - start < hardware.warmup_s:
            run(feed)
            iters += 1
        best: list[float] = []
        for _attempt in range(2):
            blocks = [timed_block(run, feed, hardware.repeats) for _ in range(BLOCKS)]
            best = min(blocks, key=statistics.median)
            if _percentile(best, 0.9) / max(_percentile(best, 0.1), 1e-9) <= UNSTABLE_SPREAD:
                break
    return Latency(
        median_ms=statistics.median(best),
        p95_ms=_percentile(best, 0.95),
        repeats=hardware.repeats * BLOCKS,
        threads=hardware.threads,
        batch_size=batch_size(batch),
        spread=_percentile(best, 0.9) / max(_percentile(best, 0.1), 1e-9),
    )
