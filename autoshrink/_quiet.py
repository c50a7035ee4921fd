"""Keeping third-party noise off the user's screen, in one place.

Nothing here runs at import time: each function is called right before the library it quiets
is used. Messages that are silenced are not lost: they go to the ``autoshrink`` loggers at
DEBUG level (``logging.getLogger("autoshrink").setLevel(logging.DEBUG)`` shows them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("autoshrink.thirdparty")


@contextmanager
def root_logging_to_debug() -> Iterator[None]:
    """Route records sent to the *root* logger to ``autoshrink.thirdparty`` at DEBUG.

    ONNX Runtime's quantizer calls ``logging.warning(...)`` on the root logger (one
    "Axis 1 is out-of-range" line per LayerNorm weight and per call); with no handler set up,
    Python prints those to stderr. While this is active the root logger has one handler that
    keeps the records, which are re-logged at DEBUG when the block ends.
    """
    root = logging.getLogger()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    saved = root.handlers[:]
    root.handlers = [Keep()]
    try:
        yield
    finally:
        root.handlers = saved
        for record in records:
            log.debug("%s: %s", record.name, record.getMessage())


def quiet_codecarbon() -> None:
    """CodeCarbon logs every measurement at INFO and warns about missing counters."""
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)


def quiet_mlflow() -> None:
    """No telemetry, no progress bars, no INFO lines (database set-up) from MLflow."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (it configures its loggers when imported: quiet them after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)


def quiet_ray() -> None:
    """Ray and Tune as a search backend: no usage reporting, no result files or console reporter
    of Tune's own, results delivered at once, and Ctrl-C left to us (KeyboardInterrupt stops a
    Ray search as it stops a local one: finished trials kept, resumable; Tune's handler would end
    the run quietly, as if it were done). Ray's notice that token authentication is on and
    Tune's complaint that trials wrote no result files are not for the user's screen."""
    for name, value in (
        ("RAY_USAGE_STATS_ENABLED", "0"), ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"), ("RAY_AIR_NEW_OUTPUT", "0"),
        ("TUNE_RESULT_BUFFER_LENGTH", "0"), ("TUNE_DISABLE_SIGINT_HANDLER", "1"),
    ):  # fmt: skip
        os.environ.setdefault(name, value)
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_matplotlib() -> None:
    """On a new machine matplotlib announces, at INFO, that it built its font cache."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


@contextmanager
def stderr_to_debug() -> Iterator[None]:
    """Keep what a block prints on stderr (MLflow's registry prints its own receipts) for DEBUG."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    if buffer.getvalue().strip():
        log.debug("%s", buffer.getvalue().strip())


def quiet_onnxruntime() -> None:
    """ONNX Runtime's C++ logger prints graph-cleanup warnings for every session it builds."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


@contextmanager
def output_to_debug() -> Iterator[None]:
    """Keep what a block prints on stdout and stderr (NNCF draws progress bars) for DEBUG."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield
    if buffer.getvalue().strip():
        log.debug("%s", buffer.getvalue().strip()[-2000:])
