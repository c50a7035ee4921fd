"""Where a search keeps its files: the MLflow store, the Optuna study, artifacts, locks.

By default everything lives in ``./.autoshrink`` (or ``$AUTOSHRINK_HOME``): ``mlflow.db``,
``optuna.db``, ``mlartifacts/``, ``artifacts/<experiment>/`` and ``cache/<experiment>/`` (what a
resumed search reuses: `autoshrink.searching.cache`). Trained and fine-tuned model
weights, which every store on the machine shares, are cached apart, in `cache_dir`. Nothing here
creates a folder unless its name says so (`prepare`), so read-only callers (``load_best``,
``autoshrink ui``) never leave files behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from autoshrink.config import ConfigError

EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class StoreError(ConfigError):
    """The store cannot be used (read-only, full, locked by another search)."""


def default_store_dir() -> Path:
    """``$AUTOSHRINK_HOME`` or ``./.autoshrink``: where the MLflow and Optuna sqlite files live."""
    return Path(os.environ.get("AUTOSHRINK_HOME") or Path.cwd() / ".autoshrink").resolve()


def cache_dir() -> Path:
    """``$AUTOSHRINK_CACHE`` or ``~/.cache/autoshrink``: trained and fine-tuned weights, per machine."""
    root = os.environ.get("AUTOSHRINK_CACHE") or Path.home() / ".cache" / "autoshrink"
    return Path(root)


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """An explicit URI; by default a sqlite store in `default_store_dir` (never ``./mlruns``)."""
    return tracking_uri or f"sqlite:///{default_store_dir() / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :])
    return None


def store_dir(tracking_uri: str) -> Path:
    """The local folder of a store: a sqlite file's folder, else `default_store_dir`."""
    db = sqlite_path(tracking_uri)
    return db.parent.resolve() if db is not None else default_store_dir()


def study_storage_for(tracking_uri: str) -> str:
    """The Optuna sqlite storage that sits next to the MLflow store."""
    return f"sqlite:///{store_dir(tracking_uri) / 'optuna.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store go next to it (MLflow's default is ``./mlruns`` in the cwd)."""
    if sqlite_path(tracking_uri) is not None:
        return (store_dir(tracking_uri) / "mlartifacts").as_uri()
    return None


def check_experiment_name(name: str) -> str:
    """Experiment names become file and study names: letters, digits, ``.``, ``_``, ``-``.

    Example:
        >>> check_experiment_name("digits-demo")
        'digits-demo'
        >>> check_experiment_name("my exp/1")
        Traceback (most recent call last):
        ...
        autoshrink.config.ConfigError: experiment name 'my exp/1' must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)
    """
    if not isinstance(name, str) or not EXPERIMENT_NAME.match(name):
        raise ConfigError(
            f"experiment name {name!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return name


def experiment_name_for(workload: str) -> str:
    """A default experiment name from a workload spec: short, and a valid file name.

    Example:
        >>> [experiment_name_for(s) for s in ("digits", "torchvision:resnet18", "examples/my_workload.py:make",
        ...                                    "pkg.models:small", "hf:/models/minilm")]
        ['digits', 'torchvision-resnet18', 'my_workload-make', 'models-small', 'hf-minilm']
    """
    target, sep, attr = workload.rpartition(":")
    if sep and target.endswith(".py"):  # path/to/file.py:function
        name = f"{Path(target).stem}-{attr}"
    elif sep and target in ("torchvision", "hf"):
        name = f"{target}-{Path(attr.rstrip('/')).name}"
    elif sep:  # package.module:function
        name = f"{target.rsplit('.', 1)[-1]}-{attr}"
    else:
        name = workload
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:128] or "autoshrink"


def prepare(tracking_uri: str) -> Path:
    """Create the store folder and check that files can be written there; returns it."""
    folder = store_dir(tracking_uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StoreError(
            f"cannot write to the store folder {folder} ({exc.strerror or exc}); "
            "pass --tracking-uri sqlite:///<writable folder>/mlflow.db or set AUTOSHRINK_HOME"
        ) from None
    return folder


@contextlib.contextmanager
def experiment_lock(folder: Path, experiment: str) -> Iterator[None]:
    """Hold an exclusive lock on ``experiment`` for the block; refuse if another process has it.

    The lock is the operating system's (``flock``), so a killed search never leaves it behind.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; searches are not guarded there
        yield
        return
    path = folder / f".lock-{experiment}"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StoreError(
                f"experiment {experiment!r} is being searched right now by {holder}; wait for it "
                "to finish (it resumes from where it is), or choose another --experiment"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
