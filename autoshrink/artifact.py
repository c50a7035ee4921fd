"""`Artifact`: a compressed model as it will be deployed, callable whatever its runtime."""

from __future__ import annotations

import io
import json
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoshrink.inputs import Inputs, InputSpec, call_model
from autoshrink.plan import Plan
from autoshrink.runtimes import OPENVINO, TORCH, Runtime, from_suffix, get
from autoshrink.sessions import SessionOptions, ort_session
from autoshrink.techniques import TechniqueReport, count_parameters

FORMAT_VERSION = 2
OPENVINO_SHAPES = 8  # fixed-shape compilations kept per thread count
#: Artifacts written before input specs existed took one float tensor named "input".
LEGACY_SPEC = InputSpec("tensor", ("input",), ("float32",), ((1,),))


@dataclass(frozen=True, eq=False, repr=False)
class Artifact:
    """A compressed model and the exact bytes that deploy it.

    ``payload`` is what `save` writes (a pickled torch module for ``runtime="torch"``, an ONNX
    model for ``runtime="onnxruntime"``); ``size_bytes`` is its length. The artifact is called
    the way the model is called (``art(x)``, ``art(ids, mask)``, ``art(input_ids=...,
    attention_mask=...)``) and returns the model's (chosen) output tensor; ``spec`` holds the
    input names, dtypes and dynamic axes. Dtypes are passed through unchanged. ``options`` are
    the session options it runs with (`autoshrink.sessions`), kept in its metadata.

    Example:
        >>> import torch
        >>> from autoshrink import Plan, compress
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4))
        >>> art = compress(model, Plan(), train_data=(torch.randn(4, 8),), example_input=torch.randn(1, 8))
        >>> art(torch.randn(2, 8)).shape
        torch.Size([2, 4])
    """

    plan: Plan
    runtime: str
    payload: bytes
    num_parameters: int
    reports: tuple[TechniqueReport, ...] = ()
    module: nn.Module | None = None
    spec: InputSpec = field(default_factory=lambda: LEGACY_SPEC)
    options: SessionOptions = field(default_factory=SessionOptions)
    _sessions: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def size_bytes(self) -> int:
        return len(self.payload)

    @property
    def suffix(self) -> str:
        """File suffix for `save`: ``.onnx``, ``.ovz`` (OpenVINO IR in one file) or ``.pt``."""
        return self._runtime.suffix

    @property
    def _runtime(self) -> Runtime:
        return get(self.runtime)

    @property
    def torch_module(self) -> nn.Module | None:
        """The torch module behind a torch artifact (None for ONNX Runtime)."""
        return self.module

    @property
    def onnx_model(self) -> Any:
        """The `onnx.ModelProto` behind an ONNX Runtime artifact (None for torch)."""
        if self.runtime != "onnxruntime":
            return None
        import onnx

        return onnx.load_from_string(self.payload)

    @property
    def skipped(self) -> dict[str, str]:
        """Layers some technique left as they were, ``"technique: layer" -> reason``."""
        return {f"{r.technique}: {k}": v for r in self.reports for k, v in r.skipped.items()}

    @property
    def int8_weight_range(self) -> str | None:
        """``"full"`` or ``"reduced"``: the int8 weight range it was built with (None when it
        has no int8 layers, or was saved before the range was recorded)."""
        for report in self.reports:
            if report.technique == "quantize" and "int8_weight_range" in report.details:
                return str(report.details["int8_weight_range"])
        return None

    @property
    def openvino_model(self) -> Any:
        """The ``openvino.Model`` behind an OpenVINO artifact (None otherwise)."""
        if self.runtime != "openvino":
            return None
        from autoshrink.techniques._openvino import openvino, unpack

        xml, weights, _ = unpack(self.payload)
        return openvino().Core().read_model(model=xml, weights=weights)

    def with_options(self, options: SessionOptions) -> Artifact:
        """The same model run with session ``options``, written into its metadata (the payload
        changes by those few bytes). A torch artifact takes only the defaults and ``threads``.

        Example:
            >>> import torch
            >>> from autoshrink import Plan, compress
            >>> art = compress(torch.nn.Linear(8, 4), Plan(bits=8), train_data=(torch.randn(16, 8),),
            ...                example_input=torch.randn(1, 8))
            >>> art.with_options(SessionOptions(memory_arena=False)).options.describe()
            'memory arena off'
        """
        if options == self.options:
            return self
        if self.runtime == TORCH.name and replace(options, threads=None) != SessionOptions():
            raise ValueError(f"a torch artifact has no session options but threads, got {options.describe()}")
        meta = self._meta() | {"session": options.to_dict()}
        if self.runtime == "onnxruntime":
            payload = _with_onnx_meta(self.payload, meta)
        elif self.runtime == OPENVINO.name:
            from autoshrink.techniques._openvino import with_meta

            payload = with_meta(self.payload, meta)
        else:
            payload = self.payload  # torch: threads only, which its caller sets
        return replace(self, payload=payload, options=options, _sessions={})

    def run_with(self, options: SessionOptions) -> Artifact:
        """The same model run with session ``options``, for measuring them: its payload (and the
        options written there) unchanged; `with_options` is what keeps them."""
        return self if options == self.options else replace(self, options=options, _sessions={})

    def _meta(self) -> dict[str, Any]:
        if self.runtime == OPENVINO.name:
            return _openvino_meta(self.payload)
        if self.runtime == "onnxruntime":
            return _onnx_meta(self.payload)
        return {}

    def session(self, threads: int | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None) -> Any:
        """An ONNX Runtime session, or a compiled OpenVINO model, with its `options` on
        ``threads`` (None: the options' threads, else 1; cached).

        OpenVINO compiles for fixed input ``shapes`` when they are given (it runs static shapes
        faster: 0.23 vs 0.28 ms at batch 1 on the digits student, one development measurement), for up to
        `OPENVINO_SHAPES` different shapes, then for any shape.
        """
        threads = self.options.threads_for(threads)
        if self.runtime == "openvino":
            fixed = tuple(sorted(shapes.items())) if shapes else None
            if fixed is not None and (threads, fixed) not in self._sessions:
                if sum(1 for t, f in self._sessions if t == threads and f is not None) >= OPENVINO_SHAPES:
                    fixed = None
            key = (threads, fixed)
            if key not in self._sessions:
                from autoshrink.techniques._openvino import compile_model

                self._sessions[key] = compile_model(self.payload, threads, dict(fixed) if fixed else None, self.options)
            return self._sessions[key]
        if self.runtime != "onnxruntime":
            raise TypeError(f"a {self.runtime} artifact has no ONNX Runtime session")
        if threads not in self._sessions:
            self._sessions[threads] = ort_session(self.payload, self.options, threads)
        return self._sessions[threads]

    def runner(self, threads: int | None = None) -> Any:
        """A callable ``feed -> output`` with the least per-call overhead, for timing.

        Its ``feed`` is what `feed` returns: a dict of numpy arrays for ONNX Runtime (which
        returns numpy), the inputs in the model's own form for torch (no grad). An OpenVINO
        runner's output is a view of the request's memory, valid until its next call.
        """
        if self.runtime == "onnxruntime":
            sess = self.session(threads)
            return lambda feed: sess.run(None, feed)[0]
        if self.runtime == "openvino":
            requests: dict[tuple[tuple[int, ...], ...], Any] = {}

            def infer(feed: dict[str, Any]) -> Any:
                key = tuple(v.shape for v in feed.values())
                if key not in requests:
                    shapes = {k: tuple(v.shape) for k, v in feed.items()}
                    requests[key] = self.session(threads, shapes).create_infer_request()
                request = requests[key]
                # Shared memory both ways: OpenVINO's default copies of inputs and outputs cost
                # ~0.05 ms a call, a quarter of the digits student's batch-1 time (one development measurement).
                request.infer(feed, share_inputs=True, share_outputs=True)
                return request.get_output_tensor(0).data

            return infer
        module = self.module
        if module is None:
            raise TypeError("this torch artifact has no module")

        def run(inputs: Inputs) -> torch.Tensor:
            with torch.inference_mode():
                return call_model(module, inputs)

        return run

    def feed(self, inputs: Inputs) -> Any:
        """``inputs`` (in the model's form) as `runner` takes them."""
        if self._runtime.feed == "numpy":
            named = self.spec.bind((inputs,), {}) if not isinstance(inputs, dict) else self.spec.bind((), inputs)
            return _numpy(named)
        return inputs

    def __call__(self, *args: Any, threads: int | None = None, **kwargs: Any) -> torch.Tensor:
        named = self.spec.bind(args, kwargs)
        if self._runtime.feed == "numpy":
            return torch.from_numpy(np.array(self.runner(threads)(_numpy(named))))
        return self.runner(threads)(self.spec.structure(named))

    def save(self, path: str | Path) -> Path:
        """Write the deployable bytes and return the path (name it with `suffix`, which
        `load_artifact` reads the runtime from)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.payload)
        return p

    def __repr__(self) -> str:
        skipped = f", {len(self.skipped)} layer{'' if len(self.skipped) == 1 else 's'} skipped" if self.skipped else ""
        return (
            f"Artifact({self.plan.label}, runtime={self.runtime}, {self.size_bytes:,} bytes, "
            f"{self.num_parameters:,} parameters{skipped})"
        )


def torch_payload(module: nn.Module, plan: Plan, reports: tuple[TechniqueReport, ...], spec: InputSpec) -> bytes:
    buffer = io.BytesIO()
    meta = {
        "format": FORMAT_VERSION, "plan": plan.to_dict(), "reports": [r.to_dict() for r in reports],
        "inputs": spec.to_dict(),
    }  # fmt: skip
    try:
        torch.save({"autoshrink": json.dumps(meta), "module": module}, buffer)
    except (AttributeError, TypeError, pickle.PicklingError) as exc:
        from autoshrink.techniques import CompressionError

        raise CompressionError(
            f"the torch module cannot be saved ({exc}); define the model's classes at module level "
            "(not inside a function) so that the artifact can be pickled"
        ) from exc
    return buffer.getvalue()


def onnx_payload(
    onnx_bytes: bytes, plan: Plan, reports: tuple[TechniqueReport, ...], num_parameters: int, spec: InputSpec
) -> bytes:
    meta = {
        "format": FORMAT_VERSION, "plan": plan.to_dict(), "reports": [r.to_dict() for r in reports],
        "num_parameters": num_parameters, "inputs": spec.to_dict(),
    }  # fmt: skip
    return _with_onnx_meta(onnx_bytes, meta)


def openvino_payload(
    openvino_bytes: bytes, plan: Plan, reports: tuple[TechniqueReport, ...], num_parameters: int, spec: InputSpec
) -> bytes:
    from autoshrink.techniques._openvino import with_meta

    meta = {
        "format": FORMAT_VERSION, "plan": plan.to_dict(), "reports": [r.to_dict() for r in reports],
        "num_parameters": num_parameters, "inputs": spec.to_dict(),
    }  # fmt: skip
    return with_meta(openvino_bytes, meta)


def load_artifact(path: str | Path) -> Artifact:
    """Load an artifact written by `Artifact.save` (``.onnx``, ``.ovz`` or ``.pt``).

    Warns (`SaturationWarning`) when its int8 weights use the full range and this CPU has no
    VNNI: its int16 sums may saturate here and change answers.
    """
    artifact = _load(Path(path))
    warn_if_saturates(artifact)
    return artifact


class SaturationWarning(UserWarning):
    """A full-range int8 artifact loaded on a CPU whose int8 kernels may saturate."""


def warn_if_saturates(artifact: Artifact, info: dict[str, Any] | None = None) -> bool:
    """Warn, and return True, when ``artifact`` has full-range int8 weights and the CPU
    (``info``, by default this one) lacks VNNI.

    Example:
        >>> art = Artifact(Plan(bits=8), "onnxruntime", b"", 0,
        ...     (TechniqueReport("quantize", details={"int8_weight_range": "full"}),))
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     warn_if_saturates(art, {"model": "AMD EPYC", "int8_isa": ["avx2"]})
        True
    """
    from autoshrink.host import cpu, saturates

    if artifact.int8_weight_range != "full":
        return False
    info = info if info is not None else cpu()
    if not saturates(info):
        return False
    warnings.warn(
        f"{artifact.plan.label}: its int8 weights use the full range, built for a CPU with VNNI; "
        f"this CPU ({info.get('model', 'unknown')}, int8 ISA {info.get('int8_isa')}) adds int8 products in "
        "int16, which may saturate and change its answers. Rebuild it with int8_range='reduced' "
        "(hardware profile: int8_range: reduced) for this CPU.",
        SaturationWarning,
        stacklevel=3,
    )
    return True


def _load(p: Path) -> Artifact:
    payload = p.read_bytes()
    runtime = from_suffix(p.suffix)
    if runtime is not TORCH:
        meta = _openvino_meta(payload) if runtime is OPENVINO else _onnx_meta(payload)
        return Artifact(
            plan=Plan.from_dict(meta.get("plan", {})),
            runtime=runtime.name,
            payload=payload,
            num_parameters=int(meta.get("num_parameters", 0)),
            reports=tuple(TechniqueReport.from_dict(r) for r in meta.get("reports", [])),
            spec=_spec(meta),
            options=SessionOptions.from_dict(meta.get("session")),
        )
    data = torch.load(io.BytesIO(payload), weights_only=False)
    meta = json.loads(data["autoshrink"])
    module = data["module"].eval()
    return Artifact(
        plan=Plan.from_dict(meta["plan"]),
        runtime=TORCH.name,
        payload=payload,
        num_parameters=count_parameters(module),
        reports=tuple(TechniqueReport.from_dict(r) for r in meta["reports"]),
        module=module,
        spec=_spec(meta),
    )


def _openvino_meta(payload: bytes) -> dict[str, Any]:
    from autoshrink.techniques._openvino import unpack

    return unpack(payload)[2]


def _onnx_meta(payload: bytes) -> dict[str, Any]:
    import onnx

    model = onnx.load_from_string(payload)
    meta: dict[str, Any] = json.loads({m.key: m.value for m in model.metadata_props}.get("autoshrink", "{}"))
    return meta


def _with_onnx_meta(payload: bytes, meta: dict[str, Any]) -> bytes:
    import onnx

    model = onnx.load_from_string(payload)
    del model.metadata_props[:]
    model.metadata_props.add(key="autoshrink", value=json.dumps(meta))
    return model.SerializeToString()


def _numpy(named: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Named tensors as the named numpy arrays a numpy-fed runtime takes."""
    return {k: v.detach().cpu().numpy() for k, v in named.items()}


def _spec(meta: dict[str, Any]) -> InputSpec:
    return InputSpec.from_dict(meta["inputs"]) if "inputs" in meta else LEGACY_SPEC
