"""The README is part of the product: what it cites must exist and its commands must be CI's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_results_file_the_readme_cites_exists() -> None:
    cited = set(re.findall(r"results/[\w.-]+\.(?:md|png|json)", README))
    assert cited, "the README should point at measured results"
    missing = sorted(p for p in cited if not (ROOT / p).is_file())
    assert not missing, f"README cites files that do not exist: {missing}"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README, f"the README does not state CI's command: {ci}"


def test_every_command_the_readme_gives_exists() -> None:
    from typer.main import get_command

    from autoshrink.cli import app
    from benchmarks.__main__ import benchmarks

    code = re.findall(r"`([^`\n]+)`", README)
    code += [line for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README, re.S) for line in block.splitlines()]
    given = {m.group(1) for snippet in code if (m := re.match(r"\s*autoshrink ([a-z][\w-]*)", snippet))}
    assert {"search", "best", "ui"} <= given
    assert not given - set(get_command(app).commands), "the README gives autoshrink commands that do not exist"
    named = {n.replace("_", "-") for n in re.findall(r"python -m benchmarks[ .]([a-z][\w-]*)", README)}
    assert named, "the README should say which benchmark wrote each result"
    assert not named - set(benchmarks()), "the README names benchmarks that do not exist"
    scripts = set(re.findall(r"examples/[\w-]+\.py", README))
    assert not sorted(p for p in scripts if not (ROOT / p).is_file())
