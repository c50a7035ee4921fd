"""Peak memory of an artifact: what a process that loads it and runs it needs, measured.

Two parts, both measured on Linux from the kernel's resident-set figures (``VmRSS``, and
``VmHWM``, its high-water mark, reset through ``/proc/self/clear_refs``):

* **the runtime's own footprint** (`runtime_footprint_mb`): a fresh Python interpreter's
  high-water mark while it imports the runtime (torch, ONNX Runtime or OpenVINO), above its
  resident set before the import. Measured once per runtime per process (a second or two each).
* **the artifact's footprint** (`artifact_peak_mb`): a process forked from a server that has
  imported the runtimes but loaded no model; it loads the saved file as a deployment would
  (ONNX Runtime: an ``InferenceSession`` of the file; OpenVINO and torch: `load_artifact`) and
  runs it on the profile's batch a few times. Its high-water mark above its resident set
  before loading is the weights as loaded, the session and its memory arena, and the
  activations of one batch. The fork costs milliseconds, so every candidate gets it.

``peak_memory_mb`` (`measure_peak_memory`) is their sum: the resident memory a process
running only this model in that runtime would need at its peak, to within what the two
processes share (the Python interpreter itself is not counted). Where the kernel gives no
``VmHWM`` (not Linux) it is NaN, and a memory budget is then missed, never met by default.

Example:
    >>> import torch
    >>> from autoshrink import HardwareProfile, Plan, compress
    >>> net = torch.nn.Linear(4, 3)
    >>> art = compress(net, Plan(), train_data=(torch.randn(8, 4),), example_input=torch.randn(1, 4))
    >>> mem = measure_peak_memory(art, torch.randn(1, 4), HardwareProfile())  # doctest: +SKIP
    >>> mem.peak_mb > mem.runtime_mb > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoshrink.artifact import Artifact
from autoshrink.config import HardwareProfile
from autoshrink.inputs import Inputs
from autoshrink.runtimes import get

#: Runs of the batch in the measuring process (the first ones allocate what later ones reuse).
RUNS = 3
#: How the figure is obtained, recorded with it.
METHOD = "VmHWM (Linux): runtime import in a fresh interpreter + load and run in a forked process"

#: What a process needs to import to run an artifact of each runtime (OpenVINO: not NNCF,
#: which only builds int8 models).
RUNTIME_MODULES = {"torch": ["torch"], "onnxruntime": ["numpy", "onnxruntime"], "openvino": ["numpy", "openvino"]}

_FOOTPRINTS: dict[str, float] = {}


@dataclass(frozen=True)
class PeakMemory:
    """Megabytes (10**6 bytes) of resident memory: the runtime's import, the artifact's own
    high-water mark, and their sum (``peak_mb``)."""

    runtime_mb: float
    artifact_mb: float
    method: str = METHOD

    @property
    def peak_mb(self) -> float:
        return self.runtime_mb + self.artifact_mb


def memory_status() -> dict[str, float] | None:
    """This process's ``VmRSS`` and ``VmHWM`` in MB, or None where the kernel does not say."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = {k: int(v) * 1024 / 1e6 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}
    return found if len(found) == 2 else None


def reset_peak() -> bool:
    """Set this process's high-water mark to its resident set now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


_IMPORT_PROBE = """
import re, sys
def status():
    text = open("/proc/self/status").read()
    return {k: int(v) * 1024 / 1e6 for k, v in re.findall(r"^(VmRSS|VmHWM):\\s+(\\d+) kB", text, re.M)}
before = status()["VmRSS"]
for module in sys.argv[1:]:
    __import__(module)
print(status()["VmHWM"] - before)
"""


def runtime_footprint_mb(runtime: str) -> float:
    """The resident memory importing ``runtime`` costs a fresh interpreter.

    ONNX Runtime and OpenVINO artifacts are run with numpy inputs; torch ones need torch. The
    figure depends on the machine and the installed packages only, so it is measured once per
    interpreter and package versions and kept in `autoshrink.store.cache_dir` (a probe costs
    1-6 s; every process that measures, a Ray worker say, would pay it otherwise).
    """
    if runtime not in _FOOTPRINTS:
        modules = RUNTIME_MODULES[runtime]
        key = _footprint_key(modules)
        stored = _stored_footprints()
        if key not in stored:
            done = subprocess.run(
                [sys.executable, "-c", _IMPORT_PROBE, *modules], capture_output=True, text=True, timeout=300
            )
            try:
                stored[key] = float(done.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):  # no VmHWM here (not Linux): not measured, and not probed again
                _FOOTPRINTS[runtime] = math.nan  # in this process; another process asks again
                return math.nan
            _store_footprints(stored)
        _FOOTPRINTS[runtime] = stored[key]
    return _FOOTPRINTS[runtime]


def _footprint_key(modules: list[str]) -> str:
    """What a runtime's import footprint depends on: the interpreter, the modules and their versions."""
    from importlib.metadata import PackageNotFoundError, version

    def of(module: str) -> str:
        try:
            return version(module)
        except PackageNotFoundError:
            return "?"

    return f"{sys.executable}|" + ",".join(f"{m}={of(m)}" for m in modules)


def _footprints_file() -> Path:
    from autoshrink.store import cache_dir

    return cache_dir() / "runtime-footprints.json"


def _stored_footprints() -> dict[str, float]:
    try:
        found = json.loads(_footprints_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _store_footprints(footprints: dict[str, float]) -> None:
    """Written through a temporary file and a rename: concurrent processes never read half a file."""
    path = _footprints_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(footprints, indent=1))
        partial.replace(path)
    except OSError:  # a read-only cache: measured again next time
        pass


class _Server:
    """A Python process that has imported the runtimes but loaded no model; for each request it
    forks a fresh measuring process (`_measure_file`), so that no import is paid twice and no
    model of this process, nor its allocator's history, is counted. It runs ``python -m
    autoshrink.measuring.memory`` (never the caller's ``__main__``), one per process that
    measures, and ends with it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autoshrink.measuring.memory"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )  # fmt: skip

    def ask(self, request: dict[str, Any]) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(_ANSWER):
                return line[len(_ANSWER) :].strip()
        return f"the memory server ended (exit code {self.process.poll()})"


_ANSWER = "autoshrink-memory: "
_SERVER: _Server | None = None


def artifact_peak_mb(artifact: Artifact, batch: Inputs, threads: int = 1) -> float:
    """The resident memory loading ``artifact`` and running it on ``batch`` adds to a process
    that has already imported its runtime (NaN, with a warning, where it cannot be measured)."""
    global _SERVER
    import torch

    if _SERVER is None or _SERVER.process.poll() is not None:
        _SERVER = _Server()
    try:
        with tempfile.TemporaryDirectory(prefix="autoshrink-memory-") as folder:
            path = Path(folder) / f"model{artifact.suffix}"
            path.write_bytes(artifact.payload)  # the deployable file, as `Artifact.save` writes it
            torch.save(artifact.feed(batch), Path(folder) / "feed.pt")
            answer = _SERVER.ask(
                {
                    "path": str(path),
                    "runtime": artifact.runtime,
                    "threads": threads,
                    "session": artifact.options.to_dict(),
                }
            )
    except OSError as exc:  # no room for the temporary copy, the server gone: the figure is not measured
        answer = f"{type(exc).__name__}: {exc}"
    try:
        return float(answer)
    except ValueError:
        import logging

        logging.getLogger(__name__).warning("peak memory of %s not measured: %s", artifact.plan.label, answer)
        return math.nan


def _measure_file(path: str, runtime: str, threads: int, session: dict[str, Any]) -> str:
    """In a fresh measuring process: load the feed, reset the high-water mark, load ``path`` as
    a deployment would with ``session`` options, run the feed `RUNS` times; the high-water mark
    above where it started."""
    import torch

    from autoshrink.sessions import SessionOptions, ort_session

    options = SessionOptions.from_dict(session)

    feed = torch.load(Path(path).parent / "feed.pt", weights_only=False)
    reset_peak()
    start = memory_status()
    if start is None:
        return "no VmHWM on this system"
    if runtime == "onnxruntime":
        session = ort_session(path, options, threads)
        for _ in range(RUNS):
            session.run(None, feed)
    else:
        from autoshrink.artifact import load_artifact

        torch.set_num_threads(threads)
        run = load_artifact(path).run_with(options).runner(threads)
        for _ in range(RUNS):
            run(feed)
    end = memory_status()
    return str(end["VmHWM"] - start["VmRSS"]) if end else "no VmHWM on this system"


def _serve() -> None:
    """The server's loop: one JSON request a line on stdin, one answer line on stdout each."""
    import os

    import onnxruntime  # noqa: F401

    import autoshrink.artifact  # noqa: F401 - imported once here, shared by every fork

    if get("openvino").installed():
        import autoshrink.techniques._openvino  # noqa: F401
    for line in sys.stdin:
        request = json.loads(line)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the measuring process
            os.close(read)
            try:
                answer = _measure_file(
                    request["path"], request["runtime"], int(request["threads"]), request.get("session", {})
                )
            except BaseException as exc:  # told to the caller, which records the figure as not measured
                answer = f"{type(exc).__name__}: {exc}"
            os.write(write, answer.encode()[:4000])
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read().decode() or "the measuring process died"
        os.waitpid(child, 0)
        print(_ANSWER + answer.replace("\n", " "), flush=True)


def measure_peak_memory(artifact: Artifact, batch: Inputs, hardware: HardwareProfile) -> PeakMemory:
    """The peak resident memory of running ``artifact`` at the profile's batch size in its
    runtime: the runtime's import plus the artifact's load and run (see the module doc)."""
    return PeakMemory(runtime_footprint_mb(artifact.runtime), artifact_peak_mb(artifact, batch, hardware.threads))


if __name__ == "__main__":
    _serve()
