"""The MLflow UI of a finished search, as screenshots taken in headless Chromium.

``python -m benchmarks mlflow-ui --tracking-uri sqlite:///PATH/mlflow.db --experiment digits-demo``
starts ``autoshrink ui`` on that store, opens the experiment's runs table, the search's parent
run with its Pareto plot, the registered model and, where the search measured it, the parent
run's per-layer sensitivity chart, and writes ``results/mlflow-ui-runs.png``,
``mlflow-ui-pareto.png``, ``mlflow-ui-registry.png`` and ``mlflow-ui-sensitivity.png``
(``--prefix lite1`` writes ``mlflow-ui-lite1-runs.png`` and so on). Run the README's main
command first (it is the search the README shows). Chromium is not a Python package: ``apt install chromium``
(or name another binary with ``--chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from benchmarks._report import arguments

SHOTS = ("runs", "pareto", "registry", "sensitivity")


def pages(tracking_uri: str, experiment: str, base: str) -> dict[str, str]:
    """The UI address of each screenshot: the runs table, the parent run's Pareto plot, the
    registry, and the parent run's sensitivity chart where it has one."""
    from mlflow.tracking import MlflowClient

    from autoshrink.tracking import ROLE, registered_name
    from autoshrink.ui import MODEL_TRAINING

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"no experiment {experiment!r} in {tracking_uri}: run the README's main command first")
    eid = found.experiment_id
    parents = [r for r in client.search_runs([eid]) if r.data.tags.get(ROLE) == "search"]
    if not parents:
        sys.exit(f"experiment {experiment!r} has no finished search")
    parent = parents[0].info.run_id
    view = MODEL_TRAINING  # the model-training view, as `autoshrink ui` opens it
    out = {
        "runs": f"{base}/#/experiments/{eid}/runs{view}",
        "pareto": f"{base}/#/experiments/{eid}/runs/{parent}/artifacts/pareto.png{view}",
        "registry": f"{base}/#/models/{registered_name(experiment)}{view}",
    }
    if any(f.path == "sensitivity.png" for f in client.list_artifacts(parent)):
        out["sensitivity"] = f"{base}/#/experiments/{eid}/runs/{parent}/artifacts/sensitivity.png{view}"
    return out


def screenshot(chromium: str, url: str, out: Path, *, wait_ms: int = 20000) -> None:
    """One 1600x1000 screenshot of ``url`` once the page has had ``wait_ms`` of (virtual) time."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1600,1000", f"--virtual-time-budget={wait_ms}",
             f"--screenshot={out}", url],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def _wait_for(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the MLflow UI did not answer at {url} within {timeout_s:.0f} s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments("mlflow-ui", __doc__)
    parser.add_argument("--tracking-uri", required=True, help="the store of a finished search")
    parser.add_argument("--experiment", default="digits-demo")
    parser.add_argument("--port", type=int, default=5071)
    parser.add_argument("--prefix", default="", help="written as mlflow-ui-PREFIX-NAME.png (default: no prefix)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{args.port}"
    ui = subprocess.Popen(
        [sys.executable, "-m", "autoshrink.cli", "ui", "--tracking-uri", args.tracking_uri, "--port", str(args.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(base)
        for name, url in pages(args.tracking_uri, args.experiment, base).items():
            path = out / f"mlflow-ui-{args.prefix + '-' if args.prefix else ''}{name}.png"
            screenshot(args.chromium, url, path)
            print(f"wrote {path} ({url})")
    finally:
        ui.terminate()  # `autoshrink ui` stops its whole process tree on SIGTERM
        ui.wait(timeout=60)


if __name__ == "__main__":
    main()
