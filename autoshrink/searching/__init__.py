"""Searching compression plans: `search`, its backends, `load_best`, results."""

from __future__ import annotations

from autoshrink.searching.backend import Backend
from autoshrink.searching.driver import search
from autoshrink.searching.finish import Selection
from autoshrink.searching.load import best_run, load_best
from autoshrink.searching.local import LocalBackend
from autoshrink.searching.result import Candidate, Progress, SearchResult

__all__ = ["Backend", "Candidate", "LocalBackend", "Progress", "SearchResult", "Selection", "best_run", "load_best", "search"]
