"""Frozen configuration objects: the budget a candidate must meet and the hardware it runs on."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from autoshrink.runtimes import AUTO, RUNTIMES, not_installed


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says which field and why."""


#: Optuna samplers a search can use (see `autoshrink.searching.study.make_sampler`).
SAMPLERS = ("tpe", "tpe-multivariate", "nsga2", "random")


def check_search_settings(trials: object, sampler: object, time_budget_s: object = None) -> None:
    """Refuse a trial count, sampler name or time budget a search cannot use (before anything
    heavy runs). ``trials`` may be ``None`` (no cap) only with a time budget."""
    if time_budget_s is not None and (
        isinstance(time_budget_s, bool) or not isinstance(time_budget_s, (int, float))
        or not math.isfinite(time_budget_s) or time_budget_s <= 0
    ):  # fmt: skip
        raise ConfigError(f"the time budget must be a positive number of seconds, got {time_budget_s!r}")
    if trials is None and time_budget_s is None:
        raise ConfigError("trials is required without a time budget: set trials, or a time budget (--time-budget 30m)")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"trials must be an integer >= 1, got {trials!r}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


#: Units a duration may be written in, in seconds.
_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration(seconds: float) -> str:
    """A number of seconds as a person writes it, the inverse of `parse_duration`.

    >>> duration(120), duration(124.6), duration(3900), duration(45)
    ('2m', '2m05s', '1h05m', '45s')
    """
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as ``90s``, ``30m``, ``1.5h``.

    Example:
        >>> parse_duration("30m"), parse_duration("1.5h"), parse_duration(45), parse_duration("120")
        (1800.0, 5400.0, 45.0, 120.0)
        >>> parse_duration("soon")
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: a time budget is seconds or a number with s, m or h (90s, 30m, 1.5h), got 'soon'
    """
    import re

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(value))
        if found is None:
            raise ConfigError(f"a time budget is seconds or a number with s, m or h (90s, 30m, 1.5h), got {value!r}")
        seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"the time budget must be positive, got {value!r}")
    return seconds


def check_installed(runtimes: set[str]) -> None:
    """Refuse, before anything runs, a search that would use a runtime this machine lacks
    (``auto`` would otherwise pass over it in silence).

    >>> check_installed({"auto", "onnxruntime"})
    """
    missing = not_installed(runtimes)
    if missing:
        raise ConfigError(
            f"the space or hardware profile names {missing[0].name}, which is not installed here: "
            f"pip install 'autoshrink[{missing[0].extra}]'"
        )


def _positive_or_none(owner: str, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{owner}.{name} must be a positive number or None, got {value!r}")


@dataclass(frozen=True)
class Budget:
    """Hard limits a candidate must meet to count as feasible.

    A latency limit is required: in milliseconds (``latency_ms``), relative to the uncompressed
    model (``speedup``), or both. Relative limits mean the same on every CPU: they are fixed once
    the search has measured its baseline (`resolved`), kept with the study (a resumed search
    judges by the limits its finished trials were judged by) and logged in milliseconds / MB.

    Attributes:
        latency_ms: median batch latency limit in milliseconds.
        size_mb: artifact size limit in megabytes (10**6 bytes).
        energy_mj: energy per inference limit in millijoules.
        min_accuracy: lowest acceptable score on the evaluation split, in [0, 1].
        max_drop: the most the score may fall below the uncompressed model's, in points
            (hundredths of the workload's metric: 1.0 = 0.01 of top-1 or agreement). Fixed once
            the search has measured its baseline (`resolved`) as a floor on the score, which
            both limits hold together; an int8 or 4-bit candidate under it keeps its most
            sensitive layers in float, the fewest that hold it (accuracy-aware quantization).
        speedup: at least this many times faster than the uncompressed model measured in the
            same search (> 1): the latency limit is the baseline's median latency / ``speedup``.
            With ``latency_ms`` too, both hold (the lower limit counts).
        size_ratio: at least this many times smaller than the uncompressed model's saved
            artifact (> 1): the size limit is the baseline's bytes / ``size_ratio``. With
            ``size_mb`` too, both hold.
        memory_mb: peak resident memory limit in megabytes: what a process that loads the
            artifact and runs it at the profile's batch size needs, its runtime included
            (`autoshrink.measuring.memory`).

    Example:
        >>> b = Budget(latency_ms=1.5, min_accuracy=0.97)
        >>> b.violations({"latency_ms": 1.0, "size_bytes": 10, "energy_mj": 1.0, "accuracy": 0.99})
        {'latency_ms': -0.5, 'min_accuracy': -0.020000000000000018}
        >>> Budget(speedup=3).resolved({"latency_ms": 3.0, "size_bytes": 1e6, "accuracy": 0.99}).latency_ms
        1.0
    """

    latency_ms: float | None = None
    size_mb: float | None = None
    energy_mj: float | None = None
    min_accuracy: float | None = None
    max_drop: float | None = None
    speedup: float | None = None
    size_ratio: float | None = None
    memory_mb: float | None = None

    def __post_init__(self) -> None:
        if self.latency_ms is None and self.speedup is None:
            raise ConfigError(
                "a latency budget is required: Budget.latency_ms (milliseconds) or Budget.speedup "
                "(times faster than the uncompressed model)"
            )
        _positive_or_none("Budget", "latency_ms", self.latency_ms)
        _positive_or_none("Budget", "size_mb", self.size_mb)
        _positive_or_none("Budget", "energy_mj", self.energy_mj)
        _positive_or_none("Budget", "memory_mb", self.memory_mb)
        for name, example in (("speedup", "fast"), ("size_ratio", "small")):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 1
            ):
                raise ConfigError(
                    f"Budget.{name} must be a number > 1 (2 = twice as {example} as the uncompressed model), got {value!r}"
                )
        if self.min_accuracy is not None and not (
            isinstance(self.min_accuracy, (int, float)) and 0.0 <= self.min_accuracy <= 1.0
        ):
            raise ConfigError(f"Budget.min_accuracy must be in [0, 1], got {self.min_accuracy!r}")
        if self.max_drop is not None and (
            isinstance(self.max_drop, bool)
            or not isinstance(self.max_drop, (int, float))
            or not 0 <= self.max_drop <= 100
        ):
            raise ConfigError(
                f"Budget.max_drop must be points in [0, 100] (1.0 = 0.01 of the score), got {self.max_drop!r}"
            )

    @property
    def relative(self) -> bool:
        """Whether a limit depends on the baseline (``speedup``, ``size_ratio``, ``max_drop``)."""
        return any(v is not None for v in (self.speedup, self.size_ratio, self.max_drop))

    def resolved(self, baseline: Mapping[str, float]) -> Budget:
        """This budget with its relative limits turned into the absolute ones they mean for a
        baseline measured at ``baseline`` (`Measurement.metrics`: ``latency_ms``, ``size_bytes``,
        ``accuracy``); where an absolute limit is also set, the stricter one holds.

        Example:
            >>> base = {"latency_ms": 3.0, "size_bytes": 2e6, "accuracy": 0.95}
            >>> Budget(latency_ms=1.0, max_drop=1.0).resolved(base).min_accuracy
            0.94
            >>> Budget(latency_ms=1.0, max_drop=1.0, min_accuracy=0.945).resolved(base).min_accuracy
            0.945
            >>> b = Budget(latency_ms=2.0, speedup=2, size_ratio=4).resolved(base)
            >>> b.latency_ms, b.size_mb
            (1.5, 0.5)
        """
        out = self
        if self.speedup is not None:
            out = replace(out, latency_ms=_tighter(self.latency_ms, baseline["latency_ms"] / self.speedup))
        if self.size_ratio is not None:
            out = replace(out, size_mb=_tighter(self.size_mb, baseline["size_bytes"] / 1e6 / self.size_ratio))
        if self.max_drop is not None:
            out = replace(
                out, min_accuracy=_tighter(self.min_accuracy, baseline["accuracy"] - self.max_drop / 100, floor=True)
            )
        return out

    def with_limits(self, limits: Mapping[str, float]) -> Budget:
        """This budget with the given absolute limits (``latency_ms``, ``size_mb``,
        ``min_accuracy``) in place: the ones a study resolved once and keeps.

        >>> Budget(speedup=2).with_limits({"latency_ms": 0.5}).latency_ms
        0.5
        """
        return replace(self, **{k: float(v) for k, v in limits.items()})

    def describe(self) -> str:
        """The limits in words, each relative one with what it resolved to.

        >>> Budget(speedup=3).resolved({"latency_ms": 3.0, "size_bytes": 1e6, "accuracy": 1}).describe()
        'latency <= 1.000 ms (3x faster than the baseline)'
        >>> Budget(latency_ms=1.0, size_mb=0.3).describe()
        'latency <= 1.000 ms, size <= 0.300 MB'
        """
        parts = [
            _limit("latency <=", self.latency_ms, "{:.3f} ms", self.speedup, "{:g}x faster than the baseline"),
            _limit("size <=", self.size_mb, "{:.3f} MB", self.size_ratio, "{:g}x smaller than the baseline"),
            _limit("energy <=", self.energy_mj, "{:g} mJ", None, ""),
            _limit("peak memory <=", self.memory_mb, "{:g} MB", None, ""),
            _limit("score >=", self.min_accuracy, "{:.4f}", self.max_drop, "within {:g} points of the baseline"),
        ]
        return ", ".join(p for p in parts if p)

    def violations(self, metrics: dict[str, float]) -> dict[str, float]:
        """Constraint values (<= 0 means met) for each limit that is set.

        ``metrics`` needs ``latency_ms``, ``size_bytes``, ``energy_mj`` and ``accuracy``. A figure
        that could not be measured (NaN) misses its limit by infinity: it meets no limit, and the
        sampler, which refuses NaN constraints, can still be told.

        Example:
            >>> Budget(latency_ms=1.0, energy_mj=2.0).violations(
            ...     {"latency_ms": 0.5, "size_bytes": 1e6, "energy_mj": float("nan"), "accuracy": 0.9})
            {'latency_ms': -0.5, 'energy_mj': inf}
        """
        out = {} if self.latency_ms is None else {"latency_ms": metrics["latency_ms"] - self.latency_ms}
        if self.size_mb is not None:
            out["size_mb"] = metrics["size_bytes"] / 1e6 - self.size_mb
        if self.energy_mj is not None:
            out["energy_mj"] = metrics["energy_mj"] - self.energy_mj
        if self.memory_mb is not None:
            out["memory_mb"] = metrics.get("peak_memory_mb", math.nan) - self.memory_mb
        if self.min_accuracy is not None:
            out["min_accuracy"] = self.min_accuracy - metrics["accuracy"]
        return {name: math.inf if math.isnan(value) else value for name, value in out.items()}

    @staticmethod
    def met(violations: Mapping[str, float], ignore: Collection[str] = ()) -> bool:
        """True when every constraint value is <= 0 (the one definition of "feasible").

        A value that is not a number (NaN: a figure that could not be measured) meets no limit.
        ``ignore`` names constraints left out, e.g. ``("min_accuracy",)`` to screen a candidate
        on its speed before its accuracy is measured.

        Example:
            >>> Budget.met({"latency_ms": 0.0, "min_accuracy": 0.02})
            False
            >>> Budget.met({"latency_ms": 0.0, "min_accuracy": 0.02}, ignore=("min_accuracy",))
            True
            >>> Budget.met({"energy_mj": float("nan")})
            False
        """
        return all(v <= 0 for k, v in violations.items() if k not in ignore)

    def relative_violation(self, violations: dict[str, float]) -> float:
        """How far over the budget, each excess divided by its limit, summed (0 when met).

        Example:
            >>> b = Budget(latency_ms=2.0, size_mb=1.0)
            >>> b.relative_violation({"latency_ms": 1.0, "size_mb": -0.5})
            0.5
        """
        limits = {
            "latency_ms": self.latency_ms,
            "size_mb": self.size_mb,
            "energy_mj": self.energy_mj,
            "memory_mb": self.memory_mb,
            "min_accuracy": self.min_accuracy,
        }
        return sum(max(v, 0.0) / (limits[k] or 1.0) for k, v in violations.items())

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _limit(name: str, value: float | None, form: str, relative: float | None, relative_form: str) -> str:
    """One limit in words for `Budget.describe`: its value, its relative form, or both."""
    rel = None if relative is None else relative_form.format(relative)
    if value is None:
        return "" if rel is None else f"{name.split()[0]}: {rel}"
    return f"{name} {form.format(value)}" + ("" if rel is None else f" ({rel})")


def _tighter(limit: float | None, value: float, *, floor: bool = False) -> float:
    """The stricter of an absolute ``limit`` (if set) and the ``value`` a relative one resolved to:
    the lower of two upper limits, the higher of two floors (a floor is never below 0)."""
    value = max(round(value, 12), 0.0) if floor else round(value, 12)
    if limit is None:
        return value
    return max(limit, value) if floor else min(limit, value)


@dataclass(frozen=True)
class HardwareProfile:
    """Where and how latency is measured.

    Attributes:
        name: a label for reports.
        device: ``"cpu"`` (the runtimes autoshrink targets today).
        threads: intra-op threads for torch and ONNX Runtime. 1 is the stable default on
            shared machines; more threads are noisier.
        batch_size: batch size of one timed inference.
        warmup_s: minimum warm-up time before timing (at least 10 iterations are run too).
        repeats: timed iterations per block; three blocks are run and the fastest median kept.
        energy_s: seconds of back-to-back inference measured by CodeCarbon for energy.
        country_iso_code: country for CodeCarbon's carbon intensity (offline mode).
        runtimes: the runtimes this target has (e.g. ``["onnxruntime"]``); ``None``: any.
            A search only proposes plans for these, and a plan with ``runtime: auto`` is timed
            in each of them that runs its bit width, the fastest kept (with ``None``, ``auto``
            is torch for fp32 and ONNX Runtime for int8 / 4-bit, unless the space lists others).
        int8_range: int8 weights over their ``full`` range, or a ``reduced`` (7-bit) one that
            cannot saturate the int16 sums of x86 CPUs without VNNI; ``auto`` (default) chooses
            for the CPU that builds the model. Force it when the target is another kind of CPU.
        session: how ONNX Runtime and OpenVINO sessions are set up: ``tune`` (default) times a
            few option sets on every candidate and keeps the fastest (within the memory
            budget), ``default`` uses the defaults, a mapping of `autoshrink.sessions.SessionOptions`
            fields (``{memory_arena: false}``) fixes them. The options used travel with the artifact.

    Example:
        >>> HardwareProfile().threads
        1
    """

    name: str = "local-cpu"
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    warmup_s: float = 0.5
    repeats: int = 50
    energy_s: float = 1.0
    country_iso_code: str = "USA"
    runtimes: tuple[str, ...] | None = None
    int8_range: str = "auto"
    session: Any = "tune"

    def __post_init__(self) -> None:
        from autoshrink.host import INT8_RANGES
        from autoshrink.sessions import SessionOptions

        if isinstance(self.session, Mapping):
            object.__setattr__(self, "session", SessionOptions.from_dict(self.session))
        elif not isinstance(self.session, SessionOptions) and self.session not in ("tune", "default"):
            raise ConfigError(
                f"HardwareProfile.session must be 'tune', 'default' or a mapping of session options, got {self.session!r}"
            )

        if self.device != "cpu":
            raise ConfigError(f"HardwareProfile.device must be 'cpu', got {self.device!r}")
        for name in ("threads", "batch_size", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"HardwareProfile.{name} must be an integer >= 1, got {value!r}")
        for name in ("warmup_s", "energy_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"HardwareProfile.{name} must be a number >= 0, got {value!r}")
        if self.int8_range not in INT8_RANGES:
            raise ConfigError(f"HardwareProfile.int8_range must be one of {INT8_RANGES}, got {self.int8_range!r}")
        if self.runtimes is not None:
            object.__setattr__(self, "runtimes", tuple(self.runtimes))
            unknown = [r for r in self.runtimes if r not in RUNTIMES or r == AUTO]
            if unknown or not self.runtimes:
                raise ConfigError(
                    f"HardwareProfile.runtimes must list runtimes of {RUNTIMES[1:]}, got {list(self.runtimes)}"
                )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.runtimes is None:
            data.pop("runtimes")  # as before runtimes existed: stored studies still match
        else:
            data["runtimes"] = list(self.runtimes)
        if self.int8_range == "auto":
            data.pop("int8_range")  # the default, as before it existed: stored studies still match
        if self.session == "tune":
            data.pop("session")  # likewise
        elif not isinstance(self.session, str):
            data["session"] = self.session.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        return build_checked(cls, data, "hardware profile")

    @classmethod
    def from_yaml(cls, path: str | Path) -> HardwareProfile:
        return cls.from_dict(load_yaml_mapping(path))


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; raise `ConfigError` with the path otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_keys(data: dict[str, Any], known: set[str], what: str) -> None:
    """Refuse keys a mapping should not have, naming them and the ones it may have."""
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")


def build_checked(cls: Any, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)`` for a dataclass, with unknown keys refused by `check_keys`."""
    check_keys(data, {f.name for f in fields(cls)}, what)
    return cls(**data)
