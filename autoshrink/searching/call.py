"""How `search` is called: a `Workload` and a `RunConfig` (or keywords, or a model and its
data), and the `Backend` and `Selection` the settings describe."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from torch import nn

from autoshrink.config import ConfigError, HardwareProfile, check_keys
from autoshrink.data import DataLike
from autoshrink.measuring import Evaluate
from autoshrink.runfile import BACKEND_KINDS, RunConfig
from autoshrink.searching.backend import Backend
from autoshrink.searching.finish import Selection
from autoshrink.workloads.base import Workload


def as_workload(
    workload: Workload | nn.Module,
    *,
    train_data: DataLike | None = None,
    eval_data: DataLike | None = None,
    test_data: DataLike | None = None,
    example_input: Any = None,
    evaluate: Evaluate | None = None,
) -> Workload:
    """A `Workload`, or one made from a model and the separate keywords (the older form)."""
    loose = {"train_data": train_data, "eval_data": eval_data, "test_data": test_data, "example_input": example_input}
    if isinstance(workload, Workload):
        given = sorted(k for k, v in loose.items() if v is not None)
        if given:
            raise ConfigError(f"pass either a Workload or a model with data, not both (got {', '.join(given)})")
        if evaluate is not None:
            raise ConfigError("a Workload carries its own evaluate; set Workload.evaluate instead")
        return workload
    if isinstance(workload, nn.Module):
        missing = sorted(k for k, v in loose.items() if v is None)
        if missing:
            raise ConfigError(f"search(model, ...) also needs {', '.join(missing)} (or pass a Workload)")
        return Workload(
            name=type(workload).__name__,
            model=workload,
            train=train_data,  # type: ignore[arg-type]
            val=eval_data,  # type: ignore[arg-type]
            test=test_data,  # type: ignore[arg-type]
            example_input=example_input,
            evaluate=evaluate,
        )
    raise ConfigError(
        f"search() takes an autoshrink Workload or a torch.nn.Module, got {type(workload).__name__}"
    )


def called_with(
    workload: Workload | nn.Module, run: RunConfig | None, settings: dict[str, Any]
) -> tuple[Workload, RunConfig, str | None]:
    """The workload, the settings and the run-file text of a call to `search`, in either form."""
    if run is None:
        return keyword_run(workload, **settings)
    if not isinstance(run, RunConfig):
        raise ConfigError(f"search()'s settings must be an autoshrink.RunConfig, got {type(run).__name__}")
    if settings:
        raise ConfigError(f"pass the settings as a RunConfig or as keywords, not both (got {sorted(settings)})")
    return as_workload(workload), run, run.to_yaml()


#: The older form's keywords: a model and its data instead of a `Workload` (`as_workload`).
LOOSE_DATA = ("train_data", "eval_data", "test_data", "example_input", "evaluate")


def keyword_run(
    workload: Workload | nn.Module,
    *,
    hardware: HardwareProfile | None = None,
    selection: Selection | None = None,
    run_file: str | None = None,
    **settings: Any,
) -> tuple[Workload, RunConfig, str | None]:
    """The keyword form of `search`: the workload, the `RunConfig` and the run-file text.

    ``settings`` are `RunConfig`'s fields (their defaults are its defaults) and the older form's
    `LOOSE_DATA`; ``hardware=None`` means the default profile, ``selection`` sets
    ``accuracy_tolerance`` and ``pareto_floor``, ``run_file`` is text to log as ``run.yaml``.

    Example:
        >>> import torch
        >>> from autoshrink import Budget
        >>> data = (torch.ones(4, 2), torch.zeros(4, dtype=torch.long))
        >>> wl, run, _ = keyword_run(nn.Linear(2, 2), train_data=data, eval_data=data, test_data=data,
        ...                          example_input=data[0][:1], budget=Budget(latency_ms=1.0), trials=3)
        >>> wl.name, run.trials, run.sampler, run.hardware == HardwareProfile()
        ('Linear', 3, 'tpe-multivariate', True)
    """
    wl = as_workload(workload, **{k: settings.pop(k) for k in LOOSE_DATA if k in settings})
    unknown = sorted(set(settings) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise TypeError(f"search() got unexpected keyword argument(s) {unknown}")
    if selection is not None:
        if {"accuracy_tolerance", "pareto_floor"} & set(settings):
            raise ConfigError("pass selection= or accuracy_tolerance=/pareto_floor=, not both")
        settings |= {"accuracy_tolerance": selection.tolerance, "pareto_floor": selection.pareto_floor}
    if hardware is not None:
        settings["hardware"] = hardware
    return wl, RunConfig(**settings), run_file


def backend_for(settings: Mapping[str, Any]) -> Backend:
    """The `Backend` a run's ``backend`` settings describe; options it does not take are refused
    (`RayBackend`'s are its constructor's parameters).

    Example:
        >>> backend_for({"kind": "local"})
        LocalBackend()
        >>> backend_for({"kind": "ray", "max_concurrent_trials": 2}).max_concurrent_trials
        2
        >>> backend_for({"kind": "ray", "max_trials": 2})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: backend: unknown key(s) ['max_trials']; known: ['address', ...]
    """
    from autoshrink.searching.local import LocalBackend

    options = {k: v for k, v in settings.items() if k != "kind" and v is not None}
    if settings.get("kind", BACKEND_KINDS[0]) == "local":
        if options:
            raise ConfigError(f"the local backend takes no options, got {sorted(options)} (use kind: ray)")
        return LocalBackend()
    from autoshrink.searching.ray import RayBackend

    check_keys(dict(settings), {"kind", *inspect.signature(RayBackend).parameters}, "backend")
    return RayBackend(**options)


def selection_for(run: RunConfig) -> Selection:
    """What "best" and the Pareto set mean under ``run``'s ``accuracy_tolerance`` and ``pareto_floor``."""
    return Selection(tolerance=run.accuracy_tolerance, pareto_floor=run.pareto_floor)
