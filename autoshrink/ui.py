"""Serving the MLflow UI for a store, and stopping every process it starts.

``mlflow ui`` starts uvicorn, a job runner and several huey consumers. Stopping only the
process we started leaves the rest running and holding the port, so the server runs in a
session of its own and the whole tree is stopped on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

STOP_TIMEOUT_S = 10.0


class PortInUse(RuntimeError):
    """The port the UI should listen on is taken."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def stop_tree(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate ``proc`` and every descendant (SIGTERM, then SIGKILL after ``timeout``)."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)  # children that were re-parented stay in the group
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


#: Where the UI opens: MLflow 3 shows its GenAI view (traces, evaluation runs, prompts) unless the
#: address asks for the model-training one; autoshrink's experiments are model training.
MODEL_TRAINING = "?workflowType=machine_learning"  # the query that asks any UI page for that view
MODEL_TRAINING_VIEW = f"/#/{MODEL_TRAINING}"


def serve(tracking_uri: str, port: int, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Run ``mlflow ui`` on 127.0.0.1:``port`` until it exits or this process is told to stop.

    ``on_ready`` is called with the address to open (the model-training view) once it answers.

    Returns the server's exit code (0 after Ctrl-C / SIGTERM). Raises `PortInUse` before
    starting anything if the port is taken.
    """
    if not port_is_free(port):
        raise PortInUse(
            f"port {port} on 127.0.0.1 is already in use (another `autoshrink ui`?); "
            f"stop it or pass --port {port + 1}"
        )
    # The server's INFO lines and library deprecation warnings would bury the one line that
    # matters (where the UI is); errors still come through.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--uvicorn-opts", "--log-level warning",
    ]  # fmt: skip
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        announced = False
        while not stopping and proc.poll() is None:
            if not announced and _listening(port):
                announced = True
                if on_ready is not None:
                    on_ready(f"http://127.0.0.1:{port}{MODEL_TRAINING_VIEW}")
            time.sleep(0.2)
    finally:
        stop_tree(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else int(proc.returncode or 0)
