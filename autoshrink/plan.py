"""`Plan`: the knobs of one compression candidate."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from autoshrink.config import build_checked

# The runtime vocabulary lives in `autoshrink.runtimes`; these names stay importable from here.
from autoshrink.runtimes import (
    ALLOWED_BITS,
    AUTO,
    RUNTIME_BITS,
    RUNTIMES,
    default_runtime,
    get,
    resolve,
    runtime_supports,
)

#: How ``Plan.rank`` factorizes a layer: truncated SVD or a tensor train (MPO).
RANK_METHODS = ("svd", "asvd", "tt", "att")
#: How ``Plan.prune`` chooses what goes (`Plan.prune_method`); the first is the default.
PRUNE_METHODS = ("sensitivity", "uniform")
#: How ONNX Runtime's static int8 picks each activation's range (`Plan.calibration`), with the tag
#: a plan's label shows; the first is the default (`autoshrink.techniques.quantize.CALIBRATIONS`).
CALIBRATION_TAGS = {"minmax": "", "percentile": "pct", "percentile-99.99": "pct4", "entropy": "ent"}
CALIBRATION_METHODS = tuple(CALIBRATION_TAGS)
#: How a plan's layer table was chosen (`Plan.mixed_by`) and its tag in the label: the layers that
#: move the outputs most (`autoshrink.sensitivity.ranking`), or most per multiply-accumulate
#: (`autoshrink.sensitivity.per_mac_ranking`).
MIXED_TAGS = {"deviation": "", "per-mac": "mac"}
MIXED_RULES = tuple(MIXED_TAGS)
#: How an int8 plan's static recipe (CNNs, in ONNX Runtime or OpenVINO) rounds its weights (`Plan.rounding`) and the
#: tag in the label: to fit each layer's output (GPTQ with bias correction,
#: `autoshrink.techniques._rounding`) or to the nearest level (the runtime's own rounding).
ROUNDING_TAGS = {"gptq": "", "nearest": "near"}
ROUNDINGS = tuple(ROUNDING_TAGS)
#: The runtimes whose int8 weights `Plan.rounding` rounds (both take the weights' grid per channel from their largest).
ROUNDED_RUNTIMES = ("onnxruntime", "openvino")


def _shown(name: str, value: Any) -> bool:
    """Fields at their default that older plans lacked are left out of ``repr``."""
    return not (
        (name == "layer_bits" and not value)
        or (name == "rank_method" and value == "svd")
        or (name == "prune_method" and value == PRUNE_METHODS[0])
        or (name == "calibration" and value == CALIBRATION_METHODS[0])
        or (name == "mixed_by" and value == MIXED_RULES[0])
        or (name == "rounding" and value == ROUNDINGS[0])
    )


@dataclass(frozen=True)
class Plan:
    """One candidate: how hard to prune, factorize, distill and quantize.

    Techniques are applied in the fixed order prune -> low rank -> distill -> quantize.

    Attributes:
        prune: how much structured pruning removes, in [0, 0.9]: as many parameters as removing
            that fraction of every channel group (channels, FFN neurons, attention heads) would.
        prune_method: where they come from: ``"sensitivity"`` (each group probed alone once, the
            budget shared out so that the groups whose loss changes the output least lose most,
            and within a group the channels carrying the least variance on calibration data go;
            no group loses more than half or ``prune``, so from 0.5 up every group loses
            ``prune``; `autoshrink.techniques._allocate`) or ``"uniform"`` (every group loses ``prune`` of
            its channels, the smallest weights first). Both refit the layers that lost inputs.
        rank: fraction of each factorizable layer's weights kept by low-rank
            factorization, in (0, 1); ``None`` turns low rank off.
        rank_method: how ``rank`` factorizes: ``"svd"`` (two thin layers by truncated SVD of the
            weights), ``"asvd"`` (the same, activation-aware: ranks and factors from the layers'
            inputs on calibration data, `autoshrink.techniques.lowrank`), ``"tt"`` (a tensor train of two cores, `autoshrink.techniques.tensor_train`; layers
            where it would be slower than dense are left dense) or ``"att"`` (the same,
            activation-aware: cores fitted to the layers' outputs on calibration data).
        bits: 32 (float), 8 (int8 with integer kernels) or 4 (4-bit weights where the
            runtime has a kernel, int8 elsewhere).
        distill_epochs: epochs of knowledge distillation from the original model, >= 0.
        runtime: ``"auto"`` (torch for 32 bits, ONNX Runtime for 8/4), ``"torch"`` (32 bits),
            ``"onnxruntime"`` (32, 8, 4) or ``"openvino"`` (32, 8; the ``openvino`` extra).
        layer_bits: mixed precision, a table keyed by layer (the torch module's name, as in
            ``model.named_modules()``): the layers named stay at a higher precision than
            ``bits``, 32 (float) in an int8 plan, 32 or 8 in a 4-bit plan. Given as a mapping
            or pairs; kept as sorted pairs so that the plan stays hashable.
        calibration: how an int8 or 4-bit plan lowered by ONNX Runtime's static recipe (the
            convolutions) picks each activation's range: ``"minmax"`` (the default),
            ``"percentile"``, ``"percentile-99.99"`` or ``"entropy"``. No choice won on
            pretrained CNNs (README, "Which int8 calibration"), so a space can search it.
            OpenVINO's NNCF picks its own ranges, and the dynamic recipe (transformers) has none.
        mixed_by: how ``layer_bits`` was chosen, for the label and the record: ``"deviation"``
            (the layers that move the outputs most when quantized alone) or ``"per-mac"`` (most
            per multiply-accumulate, label ``mixed<n>mac``). The table itself is what is built.
        rounding: how the int8 weights of the static recipe (the convolutions, and every layer
            of a CNN, in ONNX Runtime; in OpenVINO all but the depthwise ones) are rounded: ``"gptq"`` (the default: each layer's levels
            chosen so that its output on calibration data stays close, with bias correction)
            or ``"nearest"`` (label ``-near``: each weight to its nearest level).

    Example:
        >>> p = Plan(prune=0.5, rank=0.5, bits=8, distill_epochs=2)
        >>> Plan.from_json(p.to_json()) == p
        True
        >>> Plan(bits=3)
        Traceback (most recent call last):
        ...
        ValueError: Plan.bits must be one of (32, 8, 4), got 3
        >>> tt = Plan(rank=0.25, rank_method="tt", bits=8)
        >>> tt.label, Plan.from_json(tt.to_json()) == tt
        ('rank0.25tt-int8', True)
        >>> Plan(prune=0.3, prune_method="uniform").label
        'prune0.3uni-fp32'
        >>> mixed = Plan(bits=8, layer_bits={"features.0": 32, "classifier": 32})
        >>> mixed.label, mixed.layer_bits, Plan.from_json(mixed.to_json()) == mixed
        ('int8-mixed2', (('classifier', 32), ('features.0', 32)), True)
        >>> Plan(bits=8, calibration="percentile").label
        'int8-pct'
        >>> Plan(bits=8, rounding="nearest").label
        'int8-near'
    """

    prune: float = 0.0
    rank: float | None = None
    bits: int = 32
    distill_epochs: int = 0
    runtime: str = "auto"
    layer_bits: tuple[tuple[str, int], ...] = ()
    rank_method: str = "svd"
    prune_method: str = PRUNE_METHODS[0]
    calibration: str = CALIBRATION_METHODS[0]
    mixed_by: str = MIXED_RULES[0]
    rounding: str = ROUNDINGS[0]

    def __post_init__(self) -> None:
        table = dict(self.layer_bits.items() if isinstance(self.layer_bits, dict) else self.layer_bits)
        object.__setattr__(self, "layer_bits", tuple(sorted((str(k), v) for k, v in table.items())))
        if not isinstance(self.prune, (int, float)) or not 0.0 <= self.prune <= 0.9:
            raise ValueError(f"Plan.prune must be a number in [0, 0.9], got {self.prune!r}")
        if self.rank is not None and (
            not isinstance(self.rank, (int, float)) or not 0.0 < self.rank < 1.0
        ):
            raise ValueError(
                f"Plan.rank must be None (off) or a number in (0, 1), got {self.rank!r}"
            )
        if self.rank_method not in RANK_METHODS:
            raise ValueError(f"Plan.rank_method must be one of {RANK_METHODS}, got {self.rank_method!r}")
        if self.rank_method != "svd" and self.rank is None:
            raise ValueError(f"Plan.rank_method={self.rank_method!r} needs a rank (a fraction in (0, 1)), got rank=None")
        if self.prune_method not in PRUNE_METHODS:
            raise ValueError(f"Plan.prune_method must be one of {PRUNE_METHODS}, got {self.prune_method!r}")
        if self.bits not in ALLOWED_BITS:
            raise ValueError(f"Plan.bits must be one of {ALLOWED_BITS}, got {self.bits!r}")
        if not isinstance(self.distill_epochs, int) or self.distill_epochs < 0:
            raise ValueError(
                f"Plan.distill_epochs must be an integer >= 0, got {self.distill_epochs!r}"
            )
        if self.runtime not in RUNTIMES:
            raise ValueError(f"Plan.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if not runtime_supports(self.runtime, self.bits):
            raise ValueError(
                f"Plan.runtime={self.runtime!r} runs bits in {RUNTIME_BITS[self.runtime]}, got bits={self.bits}"
            )
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"Plan.calibration must be one of {CALIBRATION_METHODS}, got {self.calibration!r}")
        if self.calibration != CALIBRATION_METHODS[0] and (self.bits == 32 or self.resolved_runtime != "onnxruntime"):
            raise ValueError(
                f"Plan.calibration={self.calibration!r} applies to int8 and 4-bit plans in ONNX Runtime, "
                f"not to a {self.bits}-bit plan in {self.resolved_runtime}"
            )
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"Plan.rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.rounding != ROUNDINGS[0] and (self.bits == 32 or self.resolved_runtime not in ROUNDED_RUNTIMES):
            raise ValueError(
                f"Plan.rounding={self.rounding!r} applies to int8 and 4-bit plans in ONNX Runtime or OpenVINO, "
                f"not to a {self.bits}-bit plan in {self.resolved_runtime}"
            )
        if self.mixed_by not in MIXED_RULES:
            raise ValueError(f"Plan.mixed_by must be one of {MIXED_RULES}, got {self.mixed_by!r}")
        if self.mixed_by != MIXED_RULES[0] and not self.layer_bits:
            raise ValueError(f"Plan.mixed_by={self.mixed_by!r} says how layer_bits was chosen, but layer_bits is empty")
        higher = tuple(b for b in (32, 8) if b > self.bits and runtime_supports(self.runtime, b))
        for layer, bits in self.layer_bits:
            if bits not in higher:
                raise ValueError(
                    f"Plan.layer_bits[{layer!r}] must be one of {higher} in a {self.bits}-bit plan "
                    f"(a higher precision that {self.resolved_runtime} runs), got {bits!r}"
                )

    def __repr__(self) -> str:  # a uniform plan reads as it always has: no empty table
        shown = {f.name: getattr(self, f.name) for f in fields(self) if _shown(f.name, getattr(self, f.name))}
        return f"Plan({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def resolved_runtime(self) -> str:
        """The runtime the artifact will need: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``."""
        return resolve(self.runtime, self.bits)

    def measured_in(self, runtime: str) -> Plan:
        """This plan as it ran: an ``auto`` runtime that a search settled by measurement named.

        Example:
            >>> Plan(prune=0.3, bits=8).measured_in("openvino").label
            'prune0.3-int8-ov'
            >>> Plan(prune=0.3, bits=8).measured_in("onnxruntime") == Plan(prune=0.3, bits=8)
            True
        """
        if self.runtime == AUTO and runtime != self.resolved_runtime:
            return self.on(runtime)
        return self

    def on(self, runtime: str) -> Plan:
        """This plan in ``runtime``; a calibration that only ONNX Runtime uses (or a rounding that
        neither ONNX Runtime nor OpenVINO does) goes back to the default elsewhere.

        Example:
            >>> Plan(bits=8, calibration="percentile").on("openvino").label
            'int8-ov'
        """
        resolved = resolve(runtime, self.bits)
        keeps = resolved == "onnxruntime"
        return replace(self, runtime=runtime, calibration=self.calibration if keeps else CALIBRATION_METHODS[0],
                       rounding=self.rounding if resolved in ROUNDED_RUNTIMES else ROUNDINGS[0])  # fmt: skip

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``prune0.5-rank0.5-int8-kd2``."""
        parts = []
        if self.prune:
            parts.append(f"prune{self.prune:g}{'' if self.prune_method == PRUNE_METHODS[0] else self.prune_method[:3]}")
        if self.rank is not None:
            parts.append(f"rank{self.rank:g}{'' if self.rank_method == 'svd' else self.rank_method}")
        parts.append("fp32" if self.bits == 32 else f"int{self.bits}")
        if CALIBRATION_TAGS[self.calibration]:
            parts.append(CALIBRATION_TAGS[self.calibration])
        if ROUNDING_TAGS[self.rounding]:
            parts.append(ROUNDING_TAGS[self.rounding])
        if self.resolved_runtime != default_runtime(self.bits):  # e.g. -ort for fp32, -ov
            parts.append(get(self.resolved_runtime).tag)
        if self.layer_bits:
            parts.append(f"mixed{len(self.layer_bits)}{MIXED_TAGS[self.mixed_by]}")
        if self.distill_epochs:
            parts.append(f"kd{self.distill_epochs}")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layer_bits"] = dict(self.layer_bits)  # a table keyed by layer in JSON, YAML and MLflow
        if not self.layer_bits:
            del out["layer_bits"]  # uniform plans read as they always have
        if self.rank_method == "svd":
            del out["rank_method"]  # likewise for the default factorization
        if self.prune_method == PRUNE_METHODS[0]:
            del out["prune_method"]  # and the default pruning
        if self.calibration == CALIBRATION_METHODS[0]:
            del out["calibration"]  # and the default calibration
        if self.mixed_by == MIXED_RULES[0]:
            del out["mixed_by"]  # and the default choice of mixed-precision layers
        if self.rounding == ROUNDINGS[0]:
            del out["rounding"]  # and the default rounding
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return build_checked(cls, data, "Plan")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
