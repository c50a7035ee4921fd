"""`autoshrink ui` stops every process it started (MLflow starts about ten) on SIGINT and SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from autoshrink.ui import port_is_free


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_ui_stops_the_whole_process_tree(tmp_path: Path, sig: signal.Signals) -> None:
    from autoshrink.tracking import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    Tracker(uri, "x")
    port = _free_port()
    code = "from autoshrink.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while port_is_free(port) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert not port_is_free(port), "the MLflow UI did not start"
        time.sleep(3)  # let MLflow start its job runner and consumers
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2, "expected MLflow to run child processes"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left running: {[p.cmdline()[:4] for p in alive]}"
        assert port_is_free(port), "the port is still held"
        assert proc.returncode == 0
    finally:  # only what this test started (the session may run other children, e.g. Ray)
        leftovers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        for p in [*leftovers, psutil.Process(proc.pid)] if proc.poll() is None else []:
            p.kill()
