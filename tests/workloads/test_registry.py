"""Workload specs: built-in names, schemes, your own function, installed plug-ins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoshrink.config import ConfigError
from autoshrink.workloads import Workload, available, load
from tests.tiny import WORKLOAD_FILE

ROOT = Path(__file__).resolve().parents[2]


def test_package_module_function(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "workloads.py").write_text(WORKLOAD_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    wl = load("mypkg.workloads:tiny", classes=3)
    assert isinstance(wl, Workload) and wl.model(wl.example_input).shape == (1, 3)


def test_file_function_with_options_and_its_neighbours_importable(tmp_path: Path) -> None:
    (tmp_path / "helper_net.py").write_text("import torch\nNET = torch.nn.Linear(4, 2)\n")
    (tmp_path / "wl.py").write_text(
        "import torch\nfrom helper_net import NET\nfrom autoshrink.workloads import Workload\n"
        "def make(n=8):\n    x = torch.randn(n, 4); y = torch.zeros(n, dtype=torch.long)\n"
        "    return Workload('w', NET, (x, y), (x, y), (x, y), x[:1])\n"
    )
    assert load(f"{tmp_path / 'wl.py'}:make", n=4).name == "w"
    with pytest.raises(ConfigError, match=r"does not take the option\(s\) \['size'\].*it takes \['n'\]"):
        load(f"{tmp_path / 'wl.py'}:make", size=3)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load(f"{tmp_path / 'wl.py'}:nope")
    with pytest.raises(ConfigError, match="no such file"):
        load(f"{tmp_path / 'missing.py'}:make")


def test_the_readme_example_workload_file() -> None:
    wl = load(f"{ROOT / 'examples' / 'my_workload.py'}:make")
    x, y = wl.test
    assert float((wl.model(x).argmax(1) == y).float().mean()) > 0.9  # a trained model
    assert wl.family == "cnn"


def test_installed_plugin_through_an_entry_point(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "shrink_plugin.py").write_text(WORKLOAD_FILE)
    dist = tmp_path / "shrink_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shrink-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[autoshrink.workloads]\nshapes = shrink_plugin:tiny\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "shapes" in available()
    assert load("shapes", classes=2).model(load("shapes").example_input).shape[1] == 2
    assert load("shapes", classes=2).name == "tiny"
    with pytest.raises(ConfigError, match=r"an installed plug-in \(shapes\)"):
        load("shapez")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "a workload spec must be a non-empty string"),
        ("torchvision:", "names no model after 'torchvision:'"),
        ("just-a-word", "unknown workload 'just-a-word'"),
    ],
)
def test_malformed_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(spec)


def test_nothing_is_imported_that_the_spec_does_not_name(tmp_path: Path) -> None:
    (tmp_path / "wl.py").write_text(WORKLOAD_FILE)
    code = (
        "import sys\nfrom autoshrink.workloads import load\n"
        f"load({str(tmp_path / 'wl.py')!r} + ':tiny')\n"
        "print(','.join(m for m in ('torchvision', 'sklearn', 'transformers', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
