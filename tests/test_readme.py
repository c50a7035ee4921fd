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
