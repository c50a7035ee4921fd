"""A run file: one YAML file that holds a whole search, so that it can be repeated exactly.

Example ``run.yaml``::

    workload:                 # a spec string, or a mapping with `spec` and the workload's options
      spec: torchvision:resnet18
      weights: none
      data: digits
      image_size: 64
      finetune_epochs: 3
    budget: {speedup: 3, size_mb: 4}      # or latency_ms: 5.0; size_ratio: 4
    space: search_spaces/cnn.yaml        # a file (relative to this one) or a mapping
    hardware: {threads: 1, batch_size: 1}
    trials: 20                           # or none, with time_budget_s: 30m
    experiment: resnet18-digits
    backend: {kind: ray, max_concurrent_trials: 2}   # optional; local by default

``autoshrink search --config run.yaml`` runs it; command-line flags override its values. The
effective settings (after the flags) are logged to the MLflow parent run as ``run.yaml``. In
Python, ``autoshrink.search(workload, RunConfig(...))`` takes the same record.

`RunConfig` is the one list of a search's settings and their defaults: `autoshrink.search`'s
keywords and the command line's flags are its fields. It is a plain record (it builds no
backend and imports nothing of `autoshrink.searching`); the search makes the objects it needs
from it (`autoshrink.searching.call.backend_for`, `selection_for`).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
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
    parse_duration,
)
from autoshrink.space import SearchSpace

_WORKLOAD_PATH_OPTIONS = ("weights",)
#: Where trials can run: ``backend: {kind: ...}``; the other keys are that backend's options.
BACKEND_KINDS = ("local", "ray")


@dataclass(frozen=True)
class RunConfig:
    """Everything a search needs besides the model itself: which workload, budget, space...

    Attributes:
        budget: hard limits (a latency one required: ``latency_ms`` or ``speedup``); candidates
            over any limit are infeasible.
        workload: the workload spec the command line loads (``digits``, ``torchvision:<model>``,
            ``hf:<path>``, ``module:function``, ``file.py:function``); `autoshrink.search` is
            given the workload itself and does not read this.
        workload_options: keyword arguments of that workload's function.
        space: ranges to sample; ``None``: the workload family's space (`SearchSpace.preset`).
        hardware: latency/energy protocol.
        trials: total number of trials in the study (finished ones count on resume); ``None``
            (only with ``time_budget_s``): as many as the time allows.
        time_budget_s: wall-clock seconds for this run of the search (a run file also takes
            ``30m``, ``1.5h``): no trial starts after it, the running one finishes, and the
            best so far is registered. Counted from the start of this run (a resume gets it
            again); the finishing steps (test split, model logging) come after it.
        experiment: MLflow experiment and Optuna study name; the same name resumes.
        sampler: ``"tpe-multivariate"`` (it won the replay benchmark of
            ``results/search-quality.md``), ``"tpe"``, ``"nsga2"`` or ``"random"``; seeded by ``seed``.
        seed: seed of the sampler and of distillation.
        tracking_uri: MLflow store; ``None``: ``sqlite:///`` in ``$AUTOSHRINK_HOME`` or ``./.autoshrink``.
        backend: where trials run: ``{"kind": "local"}`` (this process) or ``{"kind": "ray", ...}``
            with `RayBackend`'s options.
        accuracy_tolerance: validation-accuracy differences up to this are noise: the fastest
            feasible candidate within it of the best wins; ``None``: one standard error.
        pareto_floor: candidates more than this below the baseline's accuracy are kept out of
            the Pareto set (``0`` keeps all).
        warm_start: start a new study with plans that usually work (int8 alone, moderate
            pruning + int8 + distillation) before the sampler takes over.
        energy_objective: optimize energy too. ``None``: only where the machine has energy
            counters (CodeCarbon's estimate, CPU load x TDP, follows latency and adds noise, so
            it is then reported and may be constrained but does not steer the sampler).
        early_stop_margin: a distilling candidate that scores, after an epoch, so low that even
            the largest gain earlier candidates made from that epoch on plus this margin cannot
            reach the Pareto front is stopped (`autoshrink.searching.fidelity`); ``None``: never.
        memory_objective: minimize peak memory too (`autoshrink.measuring.memory`), for a target
            where memory is scarce but has no fixed limit (a limit is ``budget.memory_mb``).

    Example:
        >>> rc = RunConfig.from_dict({"workload": "digits", "budget": {"latency_ms": 1.0}, "trials": 5})
        >>> rc.budget.latency_ms, rc.trials, rc.workload
        (1.0, 5, 'digits')
        >>> RunConfig.from_dict(rc.to_dict()) == rc
        True
        >>> RunConfig.from_dict({"budget": {"latency_ms": 1.0}, "trails": 5})
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: run file: unknown key(s) ['trails']; known: ['accuracy_tolerance', 'backend', 'budget', 'early_stop_margin', 'energy_objective', 'experiment', 'hardware', 'memory_objective', 'pareto_floor', 'sampler', 'seed', 'space', 'time_budget_s', 'tracking_uri', 'trials', 'warm_start', 'workload', 'workload_options']
    """

    budget: Budget
    workload: str = "digits"
    workload_options: dict[str, Any] = field(default_factory=dict)
    space: SearchSpace | None = None
    hardware: HardwareProfile = field(default_factory=HardwareProfile)
    trials: int | None = 20
    time_budget_s: float | None = None
    experiment: str = "autoshrink"
    sampler: str = "tpe-multivariate"
    seed: int = 0
    tracking_uri: str | None = None
    backend: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    accuracy_tolerance: float | None = None
    pareto_floor: float = 0.05
    warm_start: bool = True
    energy_objective: bool | None = None
    memory_objective: bool = False
    early_stop_margin: float | None = 0.01

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of one setting (the only place it is written is the field above).

        Example:
            >>> RunConfig.default("trials"), RunConfig.default("backend")
            (20, {'kind': 'local'})
        """
        for f in fields(cls):
            if f.name == name and f.default is not MISSING:
                return f.default
            if f.name == name and f.default_factory is not MISSING:
                return f.default_factory()
        raise KeyError(f"RunConfig has no default for {name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> RunConfig:
        """Build from a mapping; relative file paths are taken relative to ``base``."""
        check_keys(data, {f.name for f in fields(cls)}, "run file")
        values = dict(data)
        workload = values.get("workload", cls.default("workload"))
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
            raise ConfigError("run file: budget must be a mapping with at least latency_ms or speedup")
        values["budget"] = build_checked(Budget, values["budget"], "budget")
        if values.get("time_budget_s") is not None:
            values["time_budget_s"] = parse_duration(values["time_budget_s"])
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

        if not isinstance(self.budget, Budget):
            raise ConfigError("budget must be an autoshrink.Budget, e.g. Budget(latency_ms=1.5)")
        check_search_settings(self.trials, self.sampler, self.time_budget_s)
        check_experiment_name(self.experiment)
        if self.space is not None and not isinstance(self.space, SearchSpace):
            raise ConfigError(f"space must be an autoshrink.SearchSpace, got {type(self.space).__name__}")
        if not isinstance(self.hardware, HardwareProfile):
            raise ConfigError(f"hardware must be an autoshrink.HardwareProfile, got {type(self.hardware).__name__}")
        if not isinstance(self.backend, dict):
            raise ConfigError(f"backend settings must be a mapping such as {{'kind': 'ray'}}, got {self.backend!r}")
        if not isinstance(self.memory_objective, bool):
            raise ConfigError(f"memory_objective must be true or false, got {self.memory_objective!r}")
        margin = self.early_stop_margin
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1):
            raise ConfigError(f"early_stop_margin must be a number in [0, 1) (points of the score) or null, got {margin!r}")
        if self.backend.get("kind", BACKEND_KINDS[0]) not in BACKEND_KINDS:
            raise ConfigError(f"backend kind must be one of {BACKEND_KINDS}, got {self.backend.get('kind')!r}")

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
        """Plain values, in the shape `from_dict` reads (the workload's options under ``workload``)."""
        out: dict[str, Any] = {"workload": {"spec": self.workload, **self.workload_options}}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("workload", "workload_options"):
                out[f.name] = value.to_dict() if isinstance(value, (Budget, SearchSpace, HardwareProfile)) else value
        return out

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
