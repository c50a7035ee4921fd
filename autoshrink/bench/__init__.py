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

# Instruction sets that decide which int8 kernels a CPU runtime can use: without VNNI (or AMX)
# u8 x s8 products accumulate through int16, with VNNI in one instruction; results measured
# on one kind of CPU do not carry over to the other.
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


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


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name and which of `INT8_ISA` it has (read from ``cpuinfo`` on Linux;
    ``unknown`` where there is none).

    >>> info = cpu()
    >>> set(info["int8_isa"]) <= set(INT8_ISA) and isinstance(info["model"], str)
    True
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {"model": platform.processor() or "unknown", "int8_isa": "unknown"}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", "unknown"), "int8_isa": [f for f in INT8_ISA if f in flags]}


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for one benchmark's stores and artifacts, removed when the process exits.

    >>> path = scratch_dir("autoshrink-doctest-")
    >>> path.is_dir()
    True
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
