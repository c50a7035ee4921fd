"""Searching compression plans: `search` (Optuna, in-process), `load_best`, results."""

from __future__ import annotations

from autoshrink.searching.load import best_run, load_best
from autoshrink.searching.local import Progress, pareto_trials, search
from autoshrink.searching.result import Candidate, SearchResult

__all__ = ["Candidate", "Progress", "SearchResult", "best_run", "load_best", "pareto_trials", "search"]
