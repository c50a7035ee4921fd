"""Benchmarks that write measured results to ``results/``: one module per ``autoshrink bench`` command.

Every number a benchmark writes was measured in that run; each report says how, on what.
"""

from __future__ import annotations

import os
import platform
import time
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
