"""What the command line prints for people: one-line errors, a search's progress and its result.

Rich loads only when something is printed, so that ``autoshrink --help`` stays fast.

Example:
    >>> clock(75.9)
    '1:15'
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

import typer

from autoshrink.store import resolve_tracking_uri

if TYPE_CHECKING:
    from autoshrink.searching.result import Progress, SearchResult


def die(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` in red on stderr and leave with ``code`` (no traceback)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def time_line(timings: dict[str, float]) -> str:
    """Where a search's time went, from `SearchResult.timings`: in all, per trial, by phase.

    >>> time_line({"total_s": 600, "trial_wall_s": 25, "distinct_trials": 20, "phase_distill_s": 300,
    ...            "phase_quantize_s": 60, "phase_latency_s": 40})
    'time: 10m in all; 25 s per trial on average (10 more trials: about 4m10s); by phase over 20 trials: distill 300.0 s, quantize 60.0 s, latency 40.0 s'
    """
    from autoshrink.config import duration
    from autoshrink.phases import summary

    if not timings.get("total_s"):
        return ""
    line = f"time: {duration(timings['total_s'])} in all"
    per = timings.get("trial_wall_s")
    if per:
        line += f"; {per:.0f} s per trial on average (10 more trials: about {duration(10 * per)})"
    phases = {k[len("phase_") : -len("_s")]: v for k, v in timings.items() if k.startswith("phase_")}
    if phases:
        line += f"; by phase over {timings.get('distinct_trials', 0):.0f} trials: {summary(phases)}"
    return line


def clock(seconds: float) -> str:
    """Minutes and seconds, as a progress line starts."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Reporter:
    """Progress for people: a live bar in a terminal, one plain line per event otherwise."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=False)
        self.interactive = self.console.is_terminal
        self.done = 0

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text)
        else:
            print(text, flush=True)

    @contextlib.contextmanager
    def progress(self, total: int | None) -> Iterator[Callable[[Progress], None]]:
        if not self.interactive:

            def plain(p: Progress) -> None:
                self.done = p.done
                done = f"{p.done} done" if p.total is None else f"{p.done}/{p.total} done"
                counts = f"{done}, {p.feasible} meet the budget, {p.failed} failed"
                prefix = f"[{clock(p.elapsed_s)}]"
                print(f"{prefix} {p.last}" + (f" | {counts}" if p.stage == "trial" else ""), flush=True)

            yield plain
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        columns = (
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("feasible {task.fields[feasible]} | failed {task.fields[failed]} | best {task.fields[best]}"),
        )  # fmt: skip
        with Bar(*columns, console=self.console) as bar:
            task = bar.add_task("search", total=total, feasible=0, failed=0, best="-")

            def update(p: Progress) -> None:
                self.done = p.done
                bar.console.print(f"[dim]{clock(p.elapsed_s)}[/dim] {p.last}", highlight=False)
                bar.update(task, completed=p.done, feasible=p.feasible, failed=p.failed, best=p.best or "-")

            yield update


def print_result(result: SearchResult) -> None:
    """The Pareto set (a table in a terminal, Markdown in a log), the best, and how to look at it."""
    from rich.console import Console
    from rich.table import Table

    from autoshrink.searching.report import COLUMNS, headers, markdown_table, pareto_rows

    console = Console(soft_wrap=True)  # long lines stay whole in a log file
    stopped = f", {result.n_early_stopped} stopped early" if result.n_early_stopped else ""
    title = f"Pareto set of '{result.experiment}' ({result.n_complete} measured, {result.n_failed} failed{stopped})"
    if console.is_terminal:
        table = Table(title=title)
        for col in headers(result):
            table.add_column(col)
        for row in pareto_rows(result):
            table.add_row(*(row[c] for c in COLUMNS))
        console.print(table)
    else:  # a log file: a plain Markdown table, no box drawing
        print("\n".join([title, "", *markdown_table(result)]), flush=True)
    if result.budget is not None:
        console.print(f"budget: {result.budget.describe()}")
    style = "bold green" if result.met_budget else "bold red"
    console.print(result.message, style=style)
    if result.failures:
        for number, error in result.failures.items():
            console.print(f"trial {number} failed: {error[:200]}", style="yellow")
    console.print(f"energy: {result.baseline.measurement.energy_method}")
    spent = time_line(result.timings)
    if spent:
        console.print(spent)
    if result.registered_model:
        console.print(f"registered: models:/{result.registered_model}")
    default_store = result.tracking_uri == resolve_tracking_uri(None)
    console.print(f"inspect:    autoshrink ui{'' if default_store else f' --tracking-uri {result.tracking_uri}'}")
    console.print(
        f"load:       python -c \"import autoshrink; m = autoshrink.load_best('{result.experiment}'"
        f"{'' if default_store else f', tracking_uri={result.tracking_uri!r}'}); print(m)\""
    )
