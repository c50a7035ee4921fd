from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import benchmarks, main

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


def test_help_lists_every_benchmark_module(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert list(benchmarks()) == [m.replace("_", "-") for m in MODULES]
    for name, summary in benchmarks().items():
        assert f"  {name} " in out and summary, name


@pytest.mark.parametrize("module", MODULES)
def test_every_benchmark_parses_its_options_under_its_name(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = module.replace("_", "-")
    with pytest.raises(SystemExit) as done:
        main([module, "--help"])  # the module's own name works too
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m benchmarks {name} ") and "--out OUT" in out


def test_an_unknown_benchmark_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["nope"])
    assert done.value.code == 2
    assert "no benchmark 'nope'; there are: compression," in capsys.readouterr().err


def test_a_benchmark_also_runs_as_its_own_module() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.noise", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=True).stdout  # fmt: skip
    assert out.startswith("usage: python -m benchmarks noise ") and "--repeats" in out


def test_the_package_imports_nothing_from_the_benchmarks() -> None:
    imports = []
    for path in (ROOT / "autoshrink").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            imports += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "benchmarks"]
    assert not imports


def test_int8_widths_refuses_zero_rounds_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["int8-widths", "--rounds", "0"])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--rounds must be at least 1, got 0")
