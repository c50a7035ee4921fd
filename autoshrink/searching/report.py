"""The Pareto table and plot logged on a search's parent run."""

from __future__ import annotations

from pathlib import Path

from autoshrink.searching.result import Candidate, SearchResult


def pareto_markdown(result: SearchResult) -> str:
    """A Markdown table of the baseline and the Pareto set, with the outcome on top."""
    base = result.baseline.measurement
    lines = [
        f"# Search `{result.experiment}`",
        "",
        result.message,
        "",
        "Selection uses validation accuracy; `test acc` is measured once on the test split.",
        "",
        "| trial | plan | runtime | val acc | test acc | p50 ms | p95 ms | speed-up | kB | mJ/inf | feasible |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in [result.baseline, *result.pareto]:
        m = c.measurement
        lines.append(
            f"| {'baseline' if c.trial is None else c.trial} | {c.plan.label} | {m.runtime} | "
            f"{m.accuracy:.4f} | {c.test_accuracy if c.test_accuracy is not None else float('nan'):.4f} | "
            f"{m.latency_ms:.3f} | {m.latency_p95_ms:.3f} | {base.latency_ms / m.latency_ms:.1f}x | "
            f"{m.size_bytes / 1e3:.1f} | {m.energy_mj:.3f} | {'yes' if c.feasible else 'no'} |"
        )
    lines += ["", f"Energy: {base.energy_method}."]
    return "\n".join(lines) + "\n"


def pareto_plot(result: SearchResult, measured: list[Candidate], path: Path) -> Path:
    """Validation accuracy vs latency of every measured candidate, Pareto set highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
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
    plt.close(fig)
    return path
