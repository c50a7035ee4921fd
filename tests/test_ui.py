"""`autoshrink ui` refuses a missing store or a busy port in one line, and stops every process it
started (MLflow starts about ten) on SIGINT and SIGTERM."""

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
from tests.test_cli import assert_one_line_error, invoke


def test_ui_without_a_store(tmp_path: Path) -> None:
    assert_one_line_error(invoke("ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"), "no MLflow store at")
    assert not (tmp_path / "none.db").exists()


def test_ui_on_a_port_in_use(tmp_path: Path) -> None:
    import socket

    from autoshrink.tracking import Tracker

    Tracker(f"sqlite:///{tmp_path}/mlflow.db", "x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = invoke("ui", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--port", str(port))
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_stopping_ui_stops_the_whole_process_tree(tmp_path: Path) -> None:
    """SIGTERM here; SIGINT goes to the same handler (`autoshrink.ui` installs one for both), and
    starting MLflow's server costs about 20 s, so the suite starts it once."""
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
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        # MLflow 3 opens its GenAI view unless the address asks for model training
        assert f"at http://127.0.0.1:{port}/#/?workflowType=machine_learning" in proc.stdout.read()
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left running: {[p.cmdline()[:4] for p in alive]}"
        assert port_is_free(port), "the port is still held"
        assert proc.returncode == 0
    finally:  # only what this test started (the session may run other children, e.g. Ray)
        leftovers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        for p in [*leftovers, psutil.Process(proc.pid)] if proc.poll() is None else []:
            p.kill()
