"""`SessionOptions`: how a runtime session runs an artifact, kept with the artifact.

ONNX Runtime and OpenVINO expose options that change a model's latency and the memory its
session holds without changing what it computes: ONNX Runtime's graph optimization level, its
CPU memory arena and memory pattern planner, its intra-op threads; OpenVINO's performance hint,
streams and thread pinning. A search chooses them by measurement on the target
(`autoshrink.measuring.tuning`); the chosen ones are written into the artifact's metadata, so
`load_artifact` and `load_best` run it the way it was measured. Options that could change the
model's answers (reduced inference precision, OpenVINO's dynamic activation quantization) are
not among them.

Example:
    >>> opts = SessionOptions(memory_arena=False)
    >>> opts.to_dict()
    {'memory_arena': False}
    >>> SessionOptions.from_dict(opts.to_dict()) == opts
    True
    >>> opts.describe()
    'memory arena off'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from autoshrink.config import ConfigError

#: ONNX Runtime graph optimization levels, by the name options use.
GRAPH_LEVELS = ("disabled", "basic", "extended", "layout", "all")
#: OpenVINO performance hints.
HINTS = ("LATENCY", "THROUGHPUT")


@dataclass(frozen=True)
class SessionOptions:
    """Options of the session that runs an artifact; the defaults are what autoshrink ran with
    before they were tuned (and what an untuned artifact runs with).

    Attributes:
        threads: intra-op / inference threads; ``None``: what the caller asks for (the
            hardware profile's threads when measuring). A tuned value is never above them.
        graph_optimization: ONNX Runtime's graph optimization level, one of `GRAPH_LEVELS`.
        memory_arena: ONNX Runtime's CPU memory arena (off: freed memory goes back to the
            system; less resident memory, sometimes slower).
        memory_pattern: ONNX Runtime's memory pattern planner (pre-allocates the activations of
            an input shape it has seen).
        performance_hint: OpenVINO's ``PERFORMANCE_HINT``, one of `HINTS`.
        streams: OpenVINO's ``NUM_STREAMS`` (one synchronous request uses one stream).
        cpu_pinning: OpenVINO's ``ENABLE_CPU_PINNING`` (``None``: OpenVINO's default).
    """

    threads: int | None = None
    graph_optimization: str = "all"
    memory_arena: bool = True
    memory_pattern: bool = True
    performance_hint: str = "LATENCY"
    streams: int = 1
    cpu_pinning: bool | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigError(f"session threads must be an integer >= 1, got {self.threads!r}")
        if self.graph_optimization not in GRAPH_LEVELS:
            raise ConfigError(
                f"session graph_optimization must be one of {GRAPH_LEVELS}, got {self.graph_optimization!r}"
            )
        if self.performance_hint not in HINTS:
            raise ConfigError(f"session performance_hint must be one of {HINTS}, got {self.performance_hint!r}")
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or self.streams < 1:
            raise ConfigError(f"session streams must be an integer >= 1, got {self.streams!r}")
        for name in ("memory_arena", "memory_pattern"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"session {name} must be true or false, got {getattr(self, name)!r}")
        if self.cpu_pinning is not None and not isinstance(self.cpu_pinning, bool):
            raise ConfigError(f"session cpu_pinning must be true, false or null, got {self.cpu_pinning!r}")

    def to_dict(self) -> dict[str, Any]:
        """The options that differ from the defaults (``{}`` for the defaults)."""
        default = SessionOptions()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SessionOptions:
        """Options from `to_dict`'s form; unknown keys are a `ConfigError` naming them.

        Example:
            >>> SessionOptions.from_dict({"arena": False})
            Traceback (most recent call last):
            ...
            autoshrink.config.ConfigError: unknown session option(s) ['arena']; known: ['cpu_pinning', 'graph_optimization', 'memory_arena', 'memory_pattern', 'performance_hint', 'streams', 'threads']
        """
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown session option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def describe(self) -> str:
        """The options that differ from the defaults, in words (``"defaults"`` for none)."""
        words = {
            "threads": lambda v: f"{v} threads", "graph_optimization": lambda v: f"graph optimization {v}",
            "memory_arena": lambda v: f"memory arena {'on' if v else 'off'}",
            "memory_pattern": lambda v: f"memory pattern {'on' if v else 'off'}",
            "performance_hint": lambda v: f"{v.lower()} hint", "streams": lambda v: f"{v} streams",
            "cpu_pinning": lambda v: f"cpu pinning {'on' if v else 'off'}",
        }  # fmt: skip
        return ", ".join(words[k](v) for k, v in self.to_dict().items()) or "defaults"

    def threads_for(self, asked: int | None) -> int:
        """The threads a session runs with: the options' own (never above ``asked``), else ``asked``, else 1."""
        if self.threads is None:
            return asked or 1
        return min(self.threads, asked) if asked else self.threads


def variants(runtime: str, threads: int) -> list[SessionOptions]:
    """The options a search times for an artifact of ``runtime`` on ``threads`` threads: the
    defaults first, then one change at a time (and for ONNX Runtime the two memory options off
    together, the leanest session). A torch artifact has none to choose.

    Example:
        >>> [o.describe() for o in variants("onnxruntime", 1)]
        ['defaults', 'graph optimization extended', 'graph optimization basic', 'memory pattern off', 'memory arena off, memory pattern off']
        >>> len(variants("onnxruntime", 4)), len(variants("torch", 4))
        (6, 1)
    """
    base = SessionOptions()
    found = [base]
    if runtime == "onnxruntime":
        found += [
            replace(base, graph_optimization="extended"), replace(base, graph_optimization="basic"),
            replace(base, memory_pattern=False), replace(base, memory_arena=False, memory_pattern=False),
        ]  # fmt: skip
    elif runtime == "openvino":
        found += [replace(base, performance_hint="THROUGHPUT"), replace(base, cpu_pinning=False)]
        if threads > 1:
            found.append(replace(base, streams=2))
    if threads > 1 and runtime != "torch":
        found.append(replace(base, threads=max(1, threads // 2)))
    return found


#: ONNX Runtime graph rewrites autoshrink turns off in every session. ``WeightBiasQuantization``
#: (a basic-level rewrite) quantizes the float weights of any Conv / Gemm / MatMul that sits
#: between a DequantizeLinear and a QuantizeLinear: exactly the layers mixed precision keeps in
#: float, so ORT ran them in int8 after all (one tensor scale, not one per channel). Measured on
#: pretrained EfficientNet-Lite2, one depthwise layer "kept in float": output deviation from fp32
#: 0.052 with the rewrite, 0.012 without, 0.015 for uniform int8. Graphs without float layers
#: between QDQ pairs are unchanged by turning it off.
DISABLED_ORT_REWRITES = ("WeightBiasQuantization",)


def ort_session(model: str | bytes, options: SessionOptions, threads: int | None) -> Any:
    """An ONNX Runtime CPU session for ``model`` (a path or the serialized graph) run with
    ``options``, without `DISABLED_ORT_REWRITES`."""
    import onnxruntime as ort

    return ort.InferenceSession(model, ort_session_options(options, threads), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_ORT_REWRITES))  # fmt: skip


def ort_session_options(options: SessionOptions, threads: int | None) -> Any:
    """ONNX Runtime ``SessionOptions`` for ``options``: sequential execution, one inter-op
    thread, errors only in the log."""
    import onnxruntime as ort

    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = options.threads_for(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[options.graph_optimization]
    opts.enable_cpu_mem_arena = options.memory_arena
    opts.enable_mem_pattern = options.memory_pattern
    opts.log_severity_level = 3
    return opts


def openvino_config(options: SessionOptions, threads: int | None) -> dict[str, Any]:
    """OpenVINO CPU ``compile_model`` properties for ``options``, always at f32 inference
    precision (on CPUs with bf16 OpenVINO otherwise runs float layers in bf16, 0.03 off torch on
    the digits CNN, which would change accuracy unasked)."""
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": options.threads_for(threads), "NUM_STREAMS": options.streams,
        "PERFORMANCE_HINT": options.performance_hint, "INFERENCE_PRECISION_HINT": "f32",
    }  # fmt: skip
    if options.cpu_pinning is not None:
        config["ENABLE_CPU_PINNING"] = options.cpu_pinning
    return config
