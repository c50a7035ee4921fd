"""Workloads: a model and its data, looked up by a spec string.

A spec is resolved in this order:

1. a built-in name: ``digits`` (a residual CNN on scikit-learn's bundled digits; no download);
2. a registered scheme: ``torchvision:<model name>`` (any torchvision classification model,
   see `autoshrink.workloads.vision`) and ``hf:<path or cached id>`` (a Hugging Face encoder
   from local files, see `autoshrink.workloads.huggingface`);
3. your own code: ``package.module:function`` or ``path/to/file.py:function``, a function that
   returns a `Workload`;
4. an installed plug-in: a distribution that declares an entry point in the
   ``autoshrink.workloads`` group (``name = package.module:function``).

Nothing is imported that the spec does not name.

Example:
    >>> from autoshrink import workloads
    >>> "digits" in workloads.available()
    True
    >>> workloads.load("imagenet-please")
    Traceback (most recent call last):
    ...
    autoshrink.config.ConfigError: unknown workload 'imagenet-please'; a workload is one of: a built-in name (digits), torchvision:<model name>, hf:<path or cached id>, package.module:function or path/to/file.py:function, or an installed plug-in (none installed)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoshrink.config import ConfigError
from autoshrink.workloads.base import Workload

__all__ = ["Workload", "available", "load", "register"]

ENTRY_POINT_GROUP = "autoshrink.workloads"

Factory = Callable[..., Workload]


# Built-in names and schemes map to the function that makes them, imported only when used.
_BUILTIN: dict[str, Any] = {"digits": "autoshrink.workloads.digits:load_digits_workload"}
_SCHEMES: dict[str, str] = {
    "torchvision": "autoshrink.workloads.vision:torchvision_workload",
    "hf": "autoshrink.workloads.huggingface:huggingface_workload",
}


def register(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(**options) -> Workload`` under ``name`` (refuses to overwrite)."""

    def deco(factory: Factory) -> Factory:
        if name in _BUILTIN or name in _SCHEMES:
            raise ValueError(f"a workload named {name!r} is already registered")
        _BUILTIN[name] = factory
        return factory

    return deco


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Built-in names and installed plug-ins (schemes and ``module:function`` come on top)."""
    return sorted({*_BUILTIN, *_plugins()})


def _accepted() -> str:
    plugins = sorted(_plugins())
    return (
        f"a built-in name ({', '.join(sorted(_BUILTIN))}), "
        + ", ".join(f"{s}:<{'model name' if s == 'torchvision' else 'path or cached id'}>" for s in _SCHEMES)
        + ", package.module:function or path/to/file.py:function, or an installed plug-in "
        + f"({', '.join(plugins) if plugins else 'none installed'})"
    )


def load(spec: str, **options: Any) -> Workload:
    """Load the workload ``spec`` names; ``options`` go to its factory (see the module doc).

    Example:
        >>> from autoshrink import workloads
        >>> wl = workloads.load("digits")  # doctest: +SKIP
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a workload spec must be a non-empty string; a workload is one of: {_accepted()}")
    spec = spec.strip()
    if spec in _BUILTIN:
        factory = _BUILTIN[spec]
        return _checked(spec, _call(spec, _resolve(factory) if isinstance(factory, str) else factory, options))
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in _SCHEMES:
        if not rest:
            raise ConfigError(f"workload {spec!r} names no model after '{scheme}:'")
        return _checked(spec, _call(spec, _resolve(_SCHEMES[scheme]), options, rest))
    if sep and rest:
        return _checked(spec, _call(spec, _resolve(spec), options))
    plugins = _plugins()
    if spec in plugins:
        return _checked(spec, _call(spec, plugins[spec].load(), options))
    raise ConfigError(f"unknown workload {spec!r}; a workload is one of: {_accepted()}")


def _resolve(spec: str) -> Any:
    """The function a ``module:function`` or ``file.py:function`` spec names."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"workload {spec!r}: no such file {path}")
        name = f"autoshrink_user_{path.stem}"
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # like running the file: its neighbours are importable
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"workload {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"workload {spec!r}: cannot import module {target!r} ({exc}); is it installed, or on PYTHONPATH?"
            ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"workload {spec!r}: module {target!r} has no attribute {attr!r}") from None


def _call(spec: str, factory: Any, options: dict[str, Any], *args: Any) -> Any:
    if not callable(factory):
        return factory  # a Workload object itself is fine too
    try:
        inspect.signature(factory).bind(*args, **options)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "name")]
        raise ConfigError(
            f"workload {spec!r} does not take the option(s) {sorted(options)} ({exc}); it takes {accepted}"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): let the call say
    return factory(*args, **options)


def _checked(spec: str, value: Any) -> Workload:
    if isinstance(value, Workload):
        return value
    needed = "name, model, train, val, test, example_input"
    raise ConfigError(
        f"workload {spec!r} returned a {type(value).__name__}, not an autoshrink.workloads.Workload "
        f"({needed}; optional evaluate, family)"
    )
