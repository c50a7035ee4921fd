"""A run file: one YAML file that holds a whole search, so that it can be repeated exactly.

Example ``run.yaml``::

    workload:                 # a spec string, or a mapping with `spec` and the workload's options
      spec: torchvision:resnet18
      weights: none
      data: digits
      image_size: 64
      finetune_epochs: 3
    budget: {latency_ms: 5.0, size_mb: 4}
    space: search_spaces/cnn.yaml        # a file (relative to this one) or a mapping
    hardware: {threads: 1, batch_size: 1}
    trials: 20
    experiment: resnet18-digits
    backend: {kind: ray, max_concurrent_trials: 2}   # optional; local by default

``autoshrink search --config run.yaml`` runs it; command-line flags override its values. The
effective settings (after the flags) are logged to the MLflow parent run as ``run.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from autoshrink.config import (
    Budget,
    ConfigError,
    HardwareProfile,
    build_checked,
    check_keys,
    check_search_settings,
    load_yaml_mapping,
)
from autoshrink.space import SearchSpace

_WORKLOAD_PATH_OPTIONS = ("weights",)
BACKEND_KEYS = ("kind", "address", "num_cpus", "max_concurrent_trials", "trial_cpus", "trial_gpus", "measure_on")


@dataclass(frozen=True)
class RunConfig:
    """Everything a search needs besides the model itself: which workload, budget, space...

    Example:
        >>> rc = RunConfig.from_dict({"workload": "digits", "budget": {"latency_ms": 1.0}, "trials": 5})
        >>> rc.budget.latency_ms, rc.trials, rc.workload
        (1.0, 5, 'digits')
        >>> RunConfig.from_dict({"budget": {"latency_ms": 1.0}, "trails": 5})
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: run file: unknown key(s) ['trails']; known: ['accuracy_tolerance', 'backend', 'budget', 'experiment', 'hardware', 'pareto_floor', 'sampler', 'seed', 'space', 'tracking_uri', 'trials', 'warm_start', 'workload', 'workload_options']
    """

    budget: Budget
    workload: str = "digits"
    workload_options: dict[str, Any] = field(default_factory=dict)
    space: SearchSpace | None = None
    hardware: HardwareProfile = field(default_factory=HardwareProfile)
    trials: int = 20
    experiment: str = "autoshrink"
    sampler: str = "tpe-multivariate"
    seed: int = 0
    tracking_uri: str | None = None
    backend: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    accuracy_tolerance: float | None = None
    pareto_floor: float = 0.05
    warm_start: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> RunConfig:
        """Build from a mapping; relative file paths are taken relative to ``base``."""
        check_keys(data, {f.name for f in fields(cls)}, "run file")
        values = dict(data)
        workload = values.get("workload", "digits")
        if isinstance(workload, dict):
            options = dict(workload)
            if "spec" not in options:
                raise ConfigError("run file: workload must be a spec string or a mapping with a 'spec' key")
            values["workload"] = str(options.pop("spec"))
            values["workload_options"] = {**options, **values.get("workload_options", {})}
        elif not isinstance(workload, str):
            raise ConfigError(f"run file: workload must be a spec string or a mapping, got {workload!r}")
        values["workload_options"] = _absolute_paths(dict(values.get("workload_options", {})), base)
        if "budget" not in values or not isinstance(values["budget"], dict):
            raise ConfigError("run file: budget must be a mapping with at least latency_ms")
        values["budget"] = build_checked(Budget, values["budget"], "budget")
        if values.get("space") is not None:
            values["space"] = _space(values["space"], base)
        if values.get("hardware") is not None:
            values["hardware"] = _hardware(values["hardware"], base)
        else:
            values.pop("hardware", None)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        try:
            return cls.from_dict(load_yaml_mapping(p), base=p.resolve().parent)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if str(p) in message else f"{p}: {message}") from None

    def __post_init__(self) -> None:
        from autoshrink.store import check_experiment_name

        check_search_settings(self.trials, self.sampler)
        check_experiment_name(self.experiment)
        check_keys(self.backend, set(BACKEND_KEYS), "backend")
        if self.backend.get("kind", "local") not in ("local", "ray"):
            raise ConfigError(f"backend kind must be local or ray, got {self.backend.get('kind')!r}")

    def make_selection(self) -> Any:
        from autoshrink.searching.finish import Selection

        return Selection(tolerance=self.accuracy_tolerance, pareto_floor=self.pareto_floor)

    def make_backend(self) -> Any:
        """The `Backend` instance the settings describe."""
        options = {k: v for k, v in self.backend.items() if k != "kind" and v is not None}
        if self.backend.get("kind", "local") == "local":
            if options:
                raise ConfigError(f"the local backend takes no options, got {sorted(options)} (use kind: ray)")
            from autoshrink.searching import LocalBackend

            return LocalBackend()
        from autoshrink.searching.ray import RayBackend

        return RayBackend(**options)

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """A copy with the given (non-None) values replaced; ``workload_options`` are merged."""
        given = {k: v for k, v in overrides.items() if v is not None}
        options = given.pop("workload_options", None)
        if "backend" in given:
            given["backend"] = {**self.backend, **given["backend"]}
        # Another workload on the command line: the file's options were for the old one.
        kept = {} if given.get("workload", self.workload) != self.workload else self.workload_options
        return replace(self, **given, workload_options={**kept, **(options or {})})

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": {"spec": self.workload, **self.workload_options},
            "budget": self.budget.to_dict(),
            "space": self.space.to_dict() if self.space is not None else None,
            "hardware": self.hardware.to_dict(),
            "trials": self.trials,
            "experiment": self.experiment,
            "sampler": self.sampler,
            "seed": self.seed,
            "tracking_uri": self.tracking_uri,
            "backend": self.backend,
            "accuracy_tolerance": self.accuracy_tolerance,
            "pareto_floor": self.pareto_floor,
            "warm_start": self.warm_start,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump({k: v for k, v in self.to_dict().items() if v is not None}, sort_keys=False)


def _resolve(value: str, base: Path | None) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() or base is None else (base / p)


def _space(value: Any, base: Path | None) -> SearchSpace:
    if isinstance(value, str):
        return SearchSpace.from_yaml(_resolve(value, base))
    if isinstance(value, dict):
        return SearchSpace.from_dict(value)
    raise ConfigError(f"space must be a file path or a mapping, got {value!r}")


def _hardware(value: Any, base: Path | None) -> HardwareProfile:
    if isinstance(value, str):
        return HardwareProfile.from_yaml(_resolve(value, base))
    if isinstance(value, dict):
        return HardwareProfile.from_dict(value)
    raise ConfigError(f"hardware must be a file path or a mapping, got {value!r}")


def _absolute_paths(options: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """Paths in workload options (``data: imagefolder:dir``, a weights file) made absolute."""
    data = options.get("data")
    if isinstance(data, str) and data.startswith("imagefolder:"):
        options["data"] = f"imagefolder:{_resolve(data.split(':', 1)[1], base)}"
    for key in _WORKLOAD_PATH_OPTIONS:
        value = options.get(key)
        if isinstance(value, str) and Path(value).suffix in (".pt", ".pth", ".bin", ".safetensors"):
            options[key] = str(_resolve(value, base))
    return options
