"""Built-in workloads, looked up by name.

Example:
    >>> from autoshrink import workloads
    >>> "digits" in workloads.available()
    True
"""

from __future__ import annotations

from collections.abc import Callable

from autoshrink.workloads.base import Workload

__all__ = ["Workload", "available", "load"]


def _digits(**kwargs: object) -> Workload:
    from autoshrink.workloads.digits import load_digits_workload

    return load_digits_workload(**kwargs)  # type: ignore[arg-type]


_REGISTRY: dict[str, Callable[..., Workload]] = {"digits": _digits}


def available() -> list[str]:
    """Names accepted by `load`."""
    return sorted(_REGISTRY)


def load(name: str, **kwargs: object) -> Workload:
    """Load a built-in workload by name (``"digits"`` needs no download)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; available: {available()}") from None
    return factory(**kwargs)
