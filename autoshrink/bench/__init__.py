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


def environment(hardware: HardwareProfile) -> dict[str, Any]:
    """Where and with what a benchmark ran, for the report's header."""
    import onnxruntime
    import torch

    return {
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "hardware_profile": hardware.to_dict(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for one benchmark's stores and artifacts, removed when the process exits.

    >>> path = scratch_dir("autoshrink-doctest-")
    >>> path.is_dir()
    True
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
