"""Benchmarks that write measured results to ``results/``: one module per ``autoshrink bench`` command.

Every number a benchmark writes was measured in that run; each report says how, on what.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from autoshrink.config import HardwareProfile
from autoshrink.host import INT8_ISA, cpu


def environment(hardware: HardwareProfile) -> dict[str, Any]:
    """Where and with what a benchmark ran, for the report's header."""
    import onnxruntime
    import torch

    return {
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "cpu": cpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "hardware_profile": hardware.to_dict(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def machine(env: dict[str, Any]) -> str:
    """The machine in a report's words: architecture, CPU, cores and int8 instruction sets.

    >>> machine({"machine": "x86_64", "cpu_count": 2, "cpu": {"model": "AMD EPYC", "int8_isa": ["avx2"]}})
    'x86_64 AMD EPYC, 2 CPUs (int8 ISA: avx2)'
    """
    info = env.get("cpu") or {"model": "unknown", "int8_isa": "unknown"}
    isa = info["int8_isa"]
    listed = ", ".join(isa) if isinstance(isa, list) else isa
    return f"{env['machine']} {info['model']}, {env['cpu_count']} CPUs (int8 ISA: {listed or 'none of ' + ', '.join(INT8_ISA)})"


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for one benchmark's stores and artifacts, removed when the process exits.

    >>> path = scratch_dir("autoshrink-doctest-")
    >>> path.is_dir()
    True
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
