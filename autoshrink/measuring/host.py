"""The machine a measurement ran on, as far as it changes latency: the CPU and its int8 instructions."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

# Instruction sets that decide which int8 kernels a CPU runtime can use: without VNNI (or AMX)
# u8 x s8 products accumulate through int16, with VNNI in one instruction; latency measured on
# one kind of CPU need not carry over to the other, so reports and runs say which it was.
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


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
