"""The Pareto table and plot logged on a search's parent run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autoshrink.searching.result import Candidate, SearchResult

COLUMNS = ("trial", "plan", "runtime", "val acc", "test acc", "p50 ms", "p95 ms", "speed-up", "kB", "peak MB", "mJ/inf",
           "budget")  # fmt: skip


def pareto_rows(result: SearchResult) -> list[dict[str, str]]:
    """The baseline and the Pareto set as table rows (`COLUMNS`), formatted once for every view."""
    base = result.baseline.measurement
    rows = []
    for c in [result.baseline, *result.pareto]:
        m = c.measurement
        test = c.test_accuracy
        rows.append(
            {
                "trial": "baseline" if c.trial is None else str(c.trial),
                "plan": c.plan.label,
                "runtime": m.runtime,
                "val acc": f"{m.accuracy:.4f}",
                "test acc": "-" if test is None else f"{test:.4f}",
                "p50 ms": f"{m.latency_ms:.3f}",
                "p95 ms": f"{m.latency_p95_ms:.3f}",
                "speed-up": f"{m.speedup_over(base):.1f}x",
                "kB": f"{m.size_bytes / 1e3:.1f}",
                "peak MB": "-" if math.isnan(m.peak_memory_mb) else f"{m.peak_memory_mb:.1f}",
                "mJ/inf": f"{m.energy_mj:.3f}",
                "budget": "met" if c.feasible else "over",
            }
        )
    return rows


def headers(result: SearchResult) -> list[str]:
    """`COLUMNS` as shown: the score columns named after the workload's metric (``val acc`` for
    top-1, ``val fidelity`` for an embedding model, ...)."""
    score = result.baseline.measurement.score_name
    return [c.replace("acc", score) if c in ("val acc", "test acc") else c for c in COLUMNS]


def markdown_table(result: SearchResult) -> list[str]:
    """The baseline and the Pareto set as the lines of a Markdown table."""
    names = headers(result)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    return lines + ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in pareto_rows(result)]


def pareto_markdown(result: SearchResult) -> str:
    """A Markdown table of the baseline and the Pareto set, with the outcome on top."""
    lines = [
        f"# Search `{result.experiment}`",
        "",
        result.message,
        "",
        *([f"Budget: {result.budget.describe()}.", ""] if result.budget is not None else []),
        f"Selection uses the validation split; `{headers(result)[COLUMNS.index('test acc')]}` is measured once on the test split.",
        "",
        *markdown_table(result),
    ]
    lines += ["", f"Energy: {result.baseline.measurement.energy_method}."]
    return "\n".join(lines) + "\n"


def pareto_plot(result: SearchResult, measured: list[Candidate], path: Path) -> Path:
    """Validation accuracy vs latency of every measured candidate, Pareto set highlighted."""
    fig, ax = new_figure()
    front = {c.trial for c in result.pareto}
    others = [c for c in measured if c.trial not in front]
    ax.scatter(
        [c.measurement.latency_ms for c in others],
        [100 * c.measurement.accuracy for c in others],
        c=["tab:blue" if c.feasible else "tab:gray" for c in others],
        alpha=0.6,
        label="candidates (gray: over budget)",
    )
    pts = sorted(result.pareto, key=lambda c: c.measurement.latency_ms)
    ax.plot(
        [c.measurement.latency_ms for c in pts],
        [100 * c.measurement.accuracy for c in pts],
        "o-",
        color="tab:red",
        label="Pareto set",
    )
    b = result.baseline.measurement
    ax.scatter([b.latency_ms], [100 * b.accuracy], marker="*", s=200, color="black", label="baseline")
    budget = result.baseline.violations.get("latency_ms", 0.0)
    ax.axvline(b.latency_ms - budget, color="tab:green", linestyle="--", label="latency budget")
    if result.best is not None:
        m = result.best.measurement
        ax.scatter([m.latency_ms], [100 * m.accuracy], marker="D", s=90, color="tab:green", label="best (registered)")
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log scale)")
    ax.set_ylabel("validation accuracy, %")
    ax.set_title(f"autoshrink search: {result.experiment}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def new_figure(size: tuple[float, float] = (8, 5)) -> tuple[Any, Any]:
    """A figure and its axes drawn with Agg, without touching pyplot's global backend."""
    from autoshrink._quiet import quiet_matplotlib

    quiet_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()
