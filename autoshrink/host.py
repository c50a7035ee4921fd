"""The machine a model is built or measured on, as far as it changes results: the CPU and its
int8 instructions, and the int8 weight range that follows from them."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

# Instruction sets that decide which int8 kernels a CPU runtime can use: without VNNI (or AMX)
# u8 x s8 products accumulate through int16, with VNNI in one instruction; latency measured on
# one kind of CPU need not carry over to the other, so reports and runs say which it was.
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
#: Any of these adds u8 x s8 products in int32 without an int16 step.
NON_SATURATING = ("avx512_vnni", "avx_vnni", "amx_int8")
#: How int8 weights use their range: ``full`` (-127..127), ``reduced`` (7 bits, -63..63, which
#: cannot saturate the int16 sums of CPUs without VNNI), or ``auto`` (chosen from this CPU).
INT8_RANGES = ("auto", "full", "reduced")


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    r"""The CPU's model name, with its family and model numbers where ``cpuinfo`` has them (a
    virtual machine may name every generation "AMD EPYC", and int8 speed differs between them),
    and which of `INT8_ISA` it has (read from ``cpuinfo`` on Linux; ``unknown`` where there is none).

    >>> info = cpu()
    >>> info["int8_isa"] == "unknown" or set(info["int8_isa"]) <= set(INT8_ISA)
    True
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix="cpuinfo") as f:
    ...     _ = f.write("cpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: avx2\n")
    ...     f.flush()
    ...     cpu(Path(f.name))["model"]
    'AMD EPYC (family 26, model 2)'
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {"model": platform.processor() or "unknown", "int8_isa": "unknown"}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    for flag, present in _cpuid().items():  # the CPU's own answer wins where it has one
        flags = flags | {flag} if present else flags - {flag}
    name = fields.get("model name", "unknown")
    if fields.get("cpu family") and fields.get("model"):
        name = f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return {"model": name, "int8_isa": [f for f in INT8_ISA if f in flags]}


# The instruction sets numpy's cpuid probe knows, by its names. The runtimes choose kernels from
# cpuid, so its answer is trusted over /proc/cpuinfo (an emulator or a container may show the
# host's); AVX-VNNI and AMX, which numpy does not probe, come from /proc/cpuinfo alone.
_CPUID_NAMES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI"}


def _cpuid() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2, or another build: /proc/cpuinfo alone
        return {}
    return {flag: bool(features[name]) for flag, name in _CPUID_NAMES.items() if name in features}


def saturates(info: dict[str, Any]) -> bool:
    """Whether full-range int8 weights may saturate on this CPU: true unless it is known to
    have one of `NON_SATURATING` (an unknown CPU is assumed to saturate: the reduced range
    is always correct, the full one only with those instructions).

    >>> saturates({"model": "AMD EPYC", "int8_isa": ["avx2"]})
    True
    >>> saturates({"model": "AMD EPYC", "int8_isa": ["avx2", "avx512f", "avx512_vnni"]})
    False
    >>> saturates({"model": "unknown", "int8_isa": "unknown"})
    True
    """
    isa = info.get("int8_isa")
    return not (isinstance(isa, list) and any(f in isa for f in NON_SATURATING))


def int8_weight_range(setting: str = "auto", info: dict[str, Any] | None = None) -> str:
    """``"full"`` or ``"reduced"``: ``setting`` itself, or for ``"auto"`` what the CPU
    described by ``info`` (by default this machine's) needs.

    >>> int8_weight_range("auto", {"model": "x", "int8_isa": ["avx2"]})
    'reduced'
    >>> int8_weight_range("auto", {"model": "x", "int8_isa": ["avx2", "avx512_vnni"]})
    'full'
    >>> int8_weight_range("full", {"model": "x", "int8_isa": ["avx2"]})
    'full'
    """
    if setting not in INT8_RANGES:
        raise ValueError(f"int8 weight range must be one of {INT8_RANGES}, got {setting!r}")
    if setting != "auto":
        return setting
    return "reduced" if saturates(info if info is not None else cpu()) else "full"
