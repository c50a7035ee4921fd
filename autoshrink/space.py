"""`SearchSpace`: the ranges a search samples `Plan`s from, loadable from YAML.

``sample(trial)`` is the one place ``suggest_*`` is called, so any candidate can be rebuilt
from its parameters with ``optuna.trial.FixedTrial(params)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from autoshrink.config import ConfigError, check_keys, load_yaml_mapping
from autoshrink.plan import CALIBRATION_METHODS, MIXED_RULES, PRUNE_METHODS, RANK_METHODS, Plan
from autoshrink.runtimes import ALLOWED_BITS, AUTO, DEFAULT_RUNTIMES, RUNTIMES, runtime_supports

OFF = "off"

#: Mixed precision in the built-in spaces: none, or the most sensitive 5% or 15% of the layers.
PRESET_MIXED: tuple[float, ...] = (0, 0.05, 0.15)
#: Calibration methods the CNN space draws for int8 and 4-bit plans in ONNX Runtime.
PRESET_CALIBRATION: tuple[str, ...] = ("minmax", "percentile")
#: Which layers mixed precision keeps in the CNN space: the deviation ranking and the per-MAC one
#: traded differently on pretrained EfficientNet-Lite (results/amd-avx2/mixed-selection.md).
PRESET_MIXED_BY: tuple[str, ...] = ("deviation", "per-mac")


@dataclass(frozen=True)
class SearchSpace:
    """Ranges for each knob of a `Plan`.

    Attributes:
        prune: ``(low, high, step)`` for the structured-pruning ratio.
        prune_method: how a drawn ratio prunes (``sensitivity``, ``uniform``: `Plan.prune_method`);
            drawn after the ratio, only when it is above 0 and more than one is listed
            (parameter ``prune_method``).
        rank: low-rank fractions to try; ``"off"`` means no factorization.
        rank_method: how a drawn rank factorizes (``svd``, ``asvd``, ``tt``, ``att``: `Plan.rank_method`); drawn
            after the rank, only when the rank is not ``off`` and more than one is listed
            (parameter ``rank_method``).
        bits: bit widths to try (32, 8, 4).
        runtime: runtimes to try (``auto``, ``torch``, ``onnxruntime``, ``openvino``). The
            runtime is drawn after the bit width, among those that run it (parameter
            ``runtime_<bits>``), so the sampler never proposes a pair that cannot run.
        distill_epochs: distillation epochs to try.
        mixed: mixed precision, how many of the most sensitive layers an int8 or 4-bit plan
            keeps at a higher precision (float in int8 plans, int8 in 4-bit ones): a fraction
            in [0, 1) of the layers ranked, rounded up, or a count (an integer >= 1); 0 keeps
            none. Drawn after the bit width (parameter ``mixed``). The ranking is the per-layer
            sensitivity analysis (`autoshrink.sensitivity`), measured once per search before
            the first trial and kept in the study, so a resumed search reuses it.
        calibration: how int8 and 4-bit plans in ONNX Runtime pick activation ranges
            (`Plan.calibration`); drawn after ``mixed``, only for those plans and when more than
            one is listed (parameter ``calibration``). Each method is calibrated once per
            architecture and kept in the search's cache.
        mixed_by: which layers ``mixed`` keeps (`Plan.mixed_by`): ``deviation`` (those that move
            the outputs most when quantized alone) or ``per-mac`` (most per multiply-accumulate:
            more layers for the same latency, `autoshrink.sensitivity.per_mac_ranking`); drawn
            after ``mixed``, only when it is not 0 and more than one is listed (parameter
            ``mixed_by``). Both rankings come from the same analysis.
        ranking: the layers ranked for ``mixed``, most sensitive first, per bit width (set by
            the search with `ranked`; not a setting of its own, not in files).
        per_mac: the same layers ranked by `autoshrink.sensitivity.per_mac_ranking` (likewise).

    Example:
        >>> import optuna
        >>> space = SearchSpace()
        >>> space.sample(optuna.trial.FixedTrial({"prune": 0.5, "rank": "off", "bits": 8, "distill_epochs": 2}))
        Plan(prune=0.5, rank=None, bits=8, distill_epochs=2, runtime='auto')
        >>> both = SearchSpace(rank=(0.5,), rank_method=("svd", "tt"))
        >>> both.sample(optuna.trial.FixedTrial({"prune": 0.0, "rank": 0.5, "rank_method": "tt", "bits": 32,
        ...                                      "distill_epochs": 0})).label
        'rank0.5tt-fp32'

    """

    prune: tuple[float, float, float] = (0.0, 0.7, 0.1)
    prune_method: tuple[str, ...] = (PRUNE_METHODS[0],)
    rank: tuple[float | str, ...] = (OFF, 0.25, 0.5)
    rank_method: tuple[str, ...] = ("svd",)
    bits: tuple[int, ...] = (32, 8, 4)
    runtime: tuple[str, ...] = (AUTO,)
    distill_epochs: tuple[int, ...] = (0, 2, 4)
    mixed: tuple[float, ...] = (0,)
    calibration: tuple[str, ...] = (CALIBRATION_METHODS[0],)
    mixed_by: tuple[str, ...] = (MIXED_RULES[0],)
    ranking: tuple[tuple[int, tuple[str, ...]], ...] = field(default=(), compare=False, repr=False)
    per_mac: tuple[tuple[int, tuple[str, ...]], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.prune) != 3:
            raise ConfigError(f"space.prune must be [low, high, step], got {list(self.prune)}")
        low, high, step = self.prune
        if not (0.0 <= low <= high <= 0.9) or step <= 0:
            raise ConfigError(f"space.prune must satisfy 0 <= low <= high <= 0.9 and step > 0, got {list(self.prune)}")
        _nonempty("prune_method", self.prune_method)
        for m in self.prune_method:
            if m not in PRUNE_METHODS:
                raise ConfigError(f"space.prune_method values must be in {PRUNE_METHODS}, got {m!r}")
        _nonempty("rank", self.rank)
        for r in self.rank:
            if r != OFF and not (isinstance(r, (int, float)) and 0.0 < r < 1.0):
                raise ConfigError(f"space.rank values must be 'off' or in (0, 1), got {r!r}")
        _nonempty("rank_method", self.rank_method)
        for m in self.rank_method:
            if m not in RANK_METHODS:
                raise ConfigError(f"space.rank_method values must be in {RANK_METHODS}, got {m!r}")
        _nonempty("bits", self.bits)
        for b in self.bits:
            if b not in ALLOWED_BITS:
                raise ConfigError(f"space.bits values must be in {ALLOWED_BITS}, got {b!r}")
        _nonempty("runtime", self.runtime)
        for r in self.runtime:
            if r not in RUNTIMES:
                raise ConfigError(f"space.runtime values must be in {RUNTIMES}, got {r!r}")
        for b in self.bits:
            if not self.runtimes_for(b):
                raise ConfigError(f"space: no runtime of {list(self.runtime)} runs {b}-bit models")
        _nonempty("distill_epochs", self.distill_epochs)
        for e in self.distill_epochs:
            if isinstance(e, bool) or not isinstance(e, int) or e < 0:
                raise ConfigError(f"space.distill_epochs values must be integers >= 0, got {e!r}")
        _nonempty("mixed", self.mixed)
        for m in self.mixed:
            count = isinstance(m, int) and not isinstance(m, bool) and m >= 0
            if not count and not (isinstance(m, float) and 0.0 <= m < 1.0):
                raise ConfigError(f"space.mixed values must be a fraction in [0, 1) or a count >= 0, got {m!r}")
        _nonempty("calibration", self.calibration)
        for c in self.calibration:
            if c not in CALIBRATION_METHODS:
                raise ConfigError(f"space.calibration values must be in {CALIBRATION_METHODS}, got {c!r}")
        _nonempty("mixed_by", self.mixed_by)
        for m in self.mixed_by:
            if m not in MIXED_RULES:
                raise ConfigError(f"space.mixed_by values must be in {MIXED_RULES}, got {m!r}")

    @property
    def ranked_bits(self) -> tuple[int, ...]:
        """The bit widths whose plans keep layers at a higher precision: these need a ranking."""
        if not any(self.mixed):
            return ()
        return tuple(b for b in (8, 4) if b in self.bits)

    def ranked(self, ranking: Mapping[int, Sequence[str]], per_mac: Mapping[int, Sequence[str]] | None = None) -> SearchSpace:
        """This space with the layers ``mixed`` keeps, most sensitive first, per bit width (and,
        for ``mixed_by: per-mac``, ranked per multiply-accumulate)."""
        return replace(self, ranking=tuple((int(b), tuple(names)) for b, names in sorted(ranking.items())),
                       per_mac=tuple((int(b), tuple(names)) for b, names in sorted((per_mac or {}).items())))  # fmt: skip

    def kept(self, bits: int, mixed: float, by: str = MIXED_RULES[0]) -> dict[str, int]:
        """The layer table (`Plan.layer_bits`) that keeps ``mixed`` of the ranked layers of a
        ``bits``-bit plan at the next precision up, ranked as ``by`` says (`mixed_by`).

        Example:
            >>> space = SearchSpace(mixed=(0, 0.25, 1)).ranked({8: ["stem", "head", "b1", "b2"]}, {8: ["b2", "stem", "head", "b1"]})
            >>> space.kept(8, 0.25), space.kept(8, 1), space.kept(8, 0), space.kept(8, 1, "per-mac")
            ({'stem': 32}, {'stem': 32}, {}, {'b2': 32})
        """
        if not mixed:
            return {}
        names = dict(self.per_mac if by == "per-mac" else self.ranking).get(bits)
        if names is None:
            raise ValueError(f"space.mixed={mixed} for {bits}-bit plans needs a ranking of the layers (SearchSpace.ranked)")
        count = mixed if isinstance(mixed, int) else math.ceil(mixed * len(names))
        return {name: 32 if bits == 8 else 8 for name in names[:count]}

    def sample(self, trial: Any) -> Plan:
        """Draw one `Plan` from ``trial`` (an Optuna trial or ``FixedTrial``)."""
        low, high, step = self.prune
        prune = trial.suggest_float("prune", low, high, step=step) if high > low else low
        pruning = self.prune_method[0]
        if prune > 0 and len(self.prune_method) > 1:
            pruning = trial.suggest_categorical("prune_method", list(self.prune_method))
        rank = trial.suggest_categorical("rank", list(self.rank))
        method = self.rank_method[0]
        if rank != OFF and len(self.rank_method) > 1:
            method = trial.suggest_categorical("rank_method", list(self.rank_method))
        bits = trial.suggest_categorical("bits", list(self.bits))
        epochs = trial.suggest_categorical("distill_epochs", list(self.distill_epochs))
        runtimes = self.runtimes_for(int(bits))
        runtime = trial.suggest_categorical(f"runtime_{bits}", runtimes) if len(runtimes) > 1 else runtimes[0]
        mixed: float = 0
        if bits != 32:
            mixed = trial.suggest_categorical("mixed", list(self.mixed)) if len(self.mixed) > 1 else self.mixed[0]
        by = self.mixed_by[0] if mixed else MIXED_RULES[0]
        if mixed and len(self.mixed_by) > 1:
            by = trial.suggest_categorical("mixed_by", list(self.mixed_by))
        calibration = CALIBRATION_METHODS[0]
        if bits != 32 and runtime in (AUTO, "onnxruntime"):
            calibration = self.calibration[0]
            if len(self.calibration) > 1:
                calibration = trial.suggest_categorical("calibration", list(self.calibration))
        return Plan(
            prune=round(float(prune), 6),
            prune_method=str(pruning) if prune > 0 else PRUNE_METHODS[0],
            rank=None if rank == OFF else float(rank),
            rank_method="svd" if rank == OFF else str(method),
            bits=int(bits),
            distill_epochs=int(epochs),
            runtime=str(runtime),
            layer_bits=tuple(self.kept(int(bits), mixed, str(by)).items()),
            calibration=str(calibration),
            mixed_by=str(by),
        )

    def runtimes_for(self, bits: int) -> list[str]:
        """The space's runtimes that run ``bits``-bit models, in the space's order."""
        return [r for r in self.runtime if runtime_supports(r, bits)]

    def restricted_to(self, allowed: tuple[str, ...] | None) -> SearchSpace:
        """This space with only the runtimes a hardware profile has. ``auto`` (which then picks
        among them) stays where they run every bit width of the space, unless it could only be
        the one runtime the space already lists.

        Example:
            >>> SearchSpace(runtime=("auto", "openvino"), bits=(32, 8)).restricted_to(("openvino",)).runtime
            ('openvino',)
            >>> SearchSpace(bits=(32, 8)).restricted_to(("onnxruntime", "openvino")).runtime
            ('auto',)
        """
        if allowed is None:
            return self
        others = tuple(r for r in self.runtime if r != AUTO and r in allowed)
        covered = all(any(runtime_supports(a, b) for a in allowed) for b in self.bits)
        auto = covered and (not others or len(set(allowed)) > 1)
        kept = tuple(r for r in self.runtime if r in others or (r == AUTO and auto))
        if not kept:
            raise ConfigError(f"the hardware profile runs only {list(allowed)}; the space offers {list(self.runtime)}")
        return replace(self, runtime=kept)

    def compared_by_auto(self, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
        """The runtimes an ``auto`` plan is lowered to and timed in, the fastest kept: those the
        space lists besides ``auto`` and those the hardware profile names (``allowed``), plus
        the default ones (torch, ONNX Runtime) where the profile names none. Empty when neither
        lists a runtime: ``auto`` is then torch for fp32 and ONNX Runtime for int8 and 4-bit,
        measured once (the default; it needs no OpenVINO).

        Example:
            >>> SearchSpace().compared_by_auto(None)
            ()
            >>> SearchSpace(runtime=("auto", "openvino")).compared_by_auto(None)
            ('torch', 'onnxruntime', 'openvino')
            >>> SearchSpace().compared_by_auto(("onnxruntime", "openvino"))
            ('onnxruntime', 'openvino')
        """
        named = [r for r in self.runtime if r != AUTO] + list(allowed or ())
        if AUTO not in self.runtime or not named:
            return ()
        pool = named if allowed is not None else [*DEFAULT_RUNTIMES, *named]
        return tuple(r for r in dict.fromkeys(pool) if allowed is None or r in allowed)

    @classmethod
    def preset(cls, family: str | None = None) -> SearchSpace:
        """The default space for a model family (``None``: the general default).

        ``search_spaces/<family>.yaml`` holds the same ranges as a file to copy and edit;
        an unknown family gets the general default.

        Example:
            >>> SearchSpace.preset().mixed  # the presets search mixed precision; SearchSpace() does not
            (0, 0.05, 0.15)
        """
        presets = _presets()
        return presets.get(family or "default", presets["default"])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("ranking")  # measured, not set: kept in the study
        data.pop("per_mac")
        if self.runtime == (AUTO,):
            data.pop("runtime")  # the default, as before the knob existed: stored studies still match
        if self.mixed == (0,):
            data.pop("mixed")  # likewise
        if self.rank_method == ("svd",):
            data.pop("rank_method")  # likewise
        if self.prune_method == (PRUNE_METHODS[0],):
            data.pop("prune_method")  # likewise
        if self.calibration == (CALIBRATION_METHODS[0],):
            data.pop("calibration")  # likewise
        if self.mixed_by == (MIXED_RULES[0],):
            data.pop("mixed_by")  # likewise
        low, high, step = self.prune
        data["prune"] = {"low": low, "high": high, "step": step}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        check_keys(data, {f.name for f in fields(cls)} - {"ranking", "per_mac"}, "search space")
        kwargs: dict[str, Any] = {}
        if "prune" in data:
            p = data["prune"]
            if not isinstance(p, dict) or set(p) - {"low", "high", "step"}:
                raise ConfigError(f"space.prune must be a mapping with low, high, step; got {p!r}")
            kwargs["prune"] = (float(p.get("low", 0.0)), float(p.get("high", 0.0)), float(p.get("step", 0.1)))
        for key in ("prune_method", "rank", "rank_method", "bits", "distill_epochs", "runtime", "mixed", "calibration", "mixed_by"):
            if key in data:
                values = data[key]
                if isinstance(values, dict):
                    values = values.get("choices")
                if not isinstance(values, list):
                    raise ConfigError(f"space.{key} must be a list (or {{choices: [...]}}), got {values!r}")
                kwargs[key] = tuple(OFF if v in (None, OFF, False) and key == "rank" else v for v in values)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Load a space file; errors name the file and the offending key."""
        try:
            return cls.from_dict(load_yaml_mapping(path))
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if str(path) in message else f"{path}: {message}") from None


def _presets() -> dict[str, SearchSpace]:
    """Built-in spaces by model family; ``search_spaces/<name>.yaml`` are copies (a test checks)."""
    return {
        "default": SearchSpace(mixed=PRESET_MIXED),
        # Calibration: MinMax or Percentile won by turns on pretrained CNNs (README), so CNNs draw
        # both; likewise which layers mixed precision keeps.
        "cnn": SearchSpace(mixed=PRESET_MIXED, calibration=PRESET_CALIBRATION, mixed_by=PRESET_MIXED_BY),
        # Encoders lose more to low rank; their low rank is activation-aware, and pruning by
        # sensitivity holds them without distillation up to about 0.3 (results/retraining-free.md:
        # MiniLM 0.962 cosine in int8); distillation stays drawn for models with more data.
        "transformer": SearchSpace(prune=(0.0, 0.6, 0.1), rank=(OFF, 0.5, 0.75), rank_method=("asvd",), bits=(32, 8, 4),
                                    distill_epochs=(0, 2, 4), mixed=PRESET_MIXED),
    }


def _nonempty(name: str, values: tuple[Any, ...]) -> None:
    if not values:
        raise ConfigError(f"space.{name} must list at least one value")
