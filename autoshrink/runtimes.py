"""The runtimes an artifact can run in: one `Runtime` record each, the only place they differ.

A leaf module: it imports nothing from autoshrink and nothing heavy (no torch), so the plan,
the configuration, the search space, the techniques and the artifact can all read it.

``"auto"`` is not a runtime but a choice left open: `default_runtime` says what it becomes
when no measurement settles it (torch for 32 bits, ONNX Runtime for 8 and 4 bits).

Example:
    >>> get("openvino").suffix, get("openvino").bits, get("openvino").extra
    ('.ovz', (32, 8), 'openvino')
    >>> resolve("auto", 8), resolve("openvino", 8)
    ('onnxruntime', 'openvino')
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

#: How a runtime takes its inputs: the model's own torch tensors, or named numpy arrays.
Feed = Literal["torch", "numpy"]
#: The MLflow flavour a runtime's models are logged in (``pyfunc``: autoshrink's own wrapper).
Flavor = Literal["pytorch", "onnx", "pyfunc"]


@dataclass(frozen=True)
class Runtime:
    """What autoshrink knows of one runtime.

    Attributes:
        name: the runtime's name in plans, spaces and hardware profiles.
        bits: the precisions it really runs (integer kernels for 8 and 4 bits).
        suffix: the file suffix of its saved artifacts.
        feed: what its runner is called with: ``"torch"`` (the model's inputs as they are) or
            ``"numpy"`` (a dict of numpy arrays by input name).
        tag: its short name in a plan's label where it is not the default for the bit width.
        extra: the pip extra that installs it (``pip install 'autoshrink[<extra>]'``); ``None``
            when the base install has it.
        modules: the modules that extra installs, which must import for the runtime to be used.
        mlflow_flavor: the MLflow flavour its models are logged in.
        mlflow_pins: modules whose installed version the logged model pins.
        serves_with_autoshrink: whether serving the logged model needs autoshrink installed.

    Example:
        >>> torch = get("torch")
        >>> torch.bits, torch.suffix, torch.feed, torch.mlflow_flavor
        ((32,), '.pt', 'torch', 'pytorch')
    """

    name: str
    bits: tuple[int, ...]
    suffix: str
    feed: Feed
    tag: str
    extra: str | None = None
    modules: tuple[str, ...] = ()
    mlflow_flavor: Flavor = "pyfunc"
    mlflow_pins: tuple[str, ...] = ()
    serves_with_autoshrink: bool = True

    def installed(self) -> bool:
        """Whether every module its extra installs can be imported here.

        Example:
            >>> get("onnxruntime").installed()
            True
        """
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def pip_requirements(self) -> list[str]:
        """What a logged model of this runtime needs to be served: its pinned modules at their
        installed version (local and build suffixes such as ``+cpu`` dropped), then autoshrink.

        Example:
            >>> [r.split("==")[0] for r in get("onnxruntime").pip_requirements()]
            ['onnx', 'onnxruntime']
        """
        pins = [f"{m}=={_release(importlib.import_module(m).__version__)}" for m in self.mlflow_pins]
        return pins + (["autoshrink"] if self.serves_with_autoshrink else [])


def _release(version: str) -> str:
    """``2.9.0+cpu`` -> ``2.9.0``, ``2025.3.0-19807-abc`` -> ``2025.3.0``."""
    return version.split("+")[0].split("-")[0]


TORCH = Runtime(
    name="torch", bits=(32,), suffix=".pt", feed="torch", tag="pt",
    mlflow_flavor="pytorch", mlflow_pins=("torch",),
)  # fmt: skip
ONNXRUNTIME = Runtime(
    name="onnxruntime", bits=(32, 8, 4), suffix=".onnx", feed="numpy", tag="ort",
    mlflow_flavor="onnx", mlflow_pins=("onnx", "onnxruntime"), serves_with_autoshrink=False,
)  # fmt: skip
OPENVINO = Runtime(
    name="openvino", bits=(32, 8), suffix=".ovz", feed="numpy", tag="ov",
    extra="openvino", modules=("openvino", "nncf"), mlflow_flavor="pyfunc", mlflow_pins=("openvino",),
)  # fmt: skip

#: Every runtime by name.
BY_NAME: dict[str, Runtime] = {r.name: r for r in (TORCH, ONNXRUNTIME, OPENVINO)}
#: The plan value that leaves the runtime open (see `default_runtime`).
AUTO = "auto"
ALLOWED_BITS = (32, 8, 4)
RUNTIMES = (AUTO, *BY_NAME)
#: The precisions each runtime really runs (integer kernels for 8/4 bits).
RUNTIME_BITS = {r.name: r.bits for r in BY_NAME.values()}
#: Runtimes that come with an optional extra, and the modules that extra installs.
EXTRAS = {r.name: r.modules for r in BY_NAME.values() if r.extra is not None}


def get(name: str) -> Runtime:
    """The record of runtime ``name`` (not ``"auto"``: `resolve` it first).

    Example:
        >>> get("onnxruntime").suffix
        '.onnx'
        >>> get("tensorrt")
        Traceback (most recent call last):
        ...
        ValueError: unknown runtime 'tensorrt'; known: ('torch', 'onnxruntime', 'openvino')
    """
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {tuple(BY_NAME)}") from None


def from_suffix(suffix: str) -> Runtime:
    """The runtime whose artifacts are saved with ``suffix``; torch for any other suffix.

    Example:
        >>> from_suffix(".ovz").name, from_suffix(".pt").name, from_suffix(".pth").name
        ('openvino', 'torch', 'torch')
    """
    return next((r for r in BY_NAME.values() if r.suffix == suffix), TORCH)


def default_runtime(bits: int) -> str:
    """What ``"auto"`` becomes when no measurement chooses: torch for 32 bits, ONNX Runtime else.

    Example:
        >>> default_runtime(32), default_runtime(4)
        ('torch', 'onnxruntime')
    """
    return TORCH.name if bits == 32 else ONNXRUNTIME.name


#: The runtimes ``"auto"`` can become by default, in bit-width order: ``('torch', 'onnxruntime')``.
DEFAULT_RUNTIMES = tuple(dict.fromkeys(default_runtime(b) for b in ALLOWED_BITS))


def resolve(runtime: str, bits: int) -> str:
    """``runtime`` itself, or for ``"auto"`` its default at ``bits`` (`default_runtime`).

    Example:
        >>> resolve("auto", 32), resolve("onnxruntime", 32)
        ('torch', 'onnxruntime')
    """
    return default_runtime(bits) if runtime == AUTO else runtime


def runtime_supports(runtime: str, bits: int) -> bool:
    """Whether ``runtime`` (``"auto"`` included) runs ``bits``-bit models.

    Example:
        >>> runtime_supports("openvino", 8), runtime_supports("torch", 8), runtime_supports("auto", 4)
        (True, False, True)
    """
    return runtime == AUTO or bits in RUNTIME_BITS.get(runtime, ())


def not_installed(names: Iterable[str]) -> list[Runtime]:
    """The runtimes among ``names`` (``"auto"`` and unknown names ignored) whose extra is
    missing here, in `BY_NAME` order.

    Example:
        >>> not_installed({"auto", "torch", "onnxruntime"})
        []
    """
    wanted = set(names)
    return [r for r in BY_NAME.values() if r.name in wanted and not r.installed()]
