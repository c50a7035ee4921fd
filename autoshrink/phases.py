"""Where a candidate's time goes: named phases, timed where they run, collected per trial.

A technique or a measurement wraps its work in ``with phase("distill"):``; a trial collects
the phases run inside it with ``with collecting() as seconds:``. A phase inside another counts
only in the inner one (the outer one gets its own time), so the phases of a trial add up to no
more than its wall time. Outside `collecting`, `phase` only times and forgets: no global
state is kept between trials, and threads or processes each collect their own.

Example:
    >>> import time
    >>> with collecting() as seconds:
    ...     with phase("quantize"):
    ...         with phase("calibrate"):
    ...             time.sleep(0.02)
    >>> sorted(seconds), seconds["calibrate"] >= 0.02 > seconds["quantize"]
    (['calibrate', 'quantize'], True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The phases being collected (name -> seconds) and the stack of open phases' child time.
_COLLECTED: ContextVar[dict[str, float] | None] = ContextVar("autoshrink_phases", default=None)
_OPEN: ContextVar[tuple[list[float], ...]] = ContextVar("autoshrink_open_phases", default=())


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` (its own time: phases opened inside it count there)."""
    children = [0.0]
    outer = _OPEN.get()
    token = _OPEN.set((*outer, children))
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        _OPEN.reset(token)
        if outer:
            outer[-1][0] += elapsed
        found = _COLLECTED.get()
        if found is not None:
            found[name] = found.get(name, 0.0) + elapsed - children[0]


@contextmanager
def collecting() -> Iterator[dict[str, float]]:
    """Collect the phases run inside the block into the dict it yields (seconds by name)."""
    seconds: dict[str, float] = {}
    token = _COLLECTED.set(seconds)
    try:
        yield seconds
    finally:
        _COLLECTED.reset(token)


def summary(seconds: dict[str, float], most: int = 4) -> str:
    """The largest phases in a few words, for a progress line.

    >>> summary({"distill": 9.14, "quantize": 2.0, "score": 0.31, "latency": 0.62, "memory": 0.1})
    'distill 9.1 s, quantize 2.0 s, latency 0.6 s, score 0.3 s'
    """
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])[:most]
    return ", ".join(f"{name} {value:.1f} s" for name, value in ranked)
