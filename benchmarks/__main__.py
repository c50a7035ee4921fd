"""``python -m benchmarks NAME [options]``: run one benchmark; ``--help`` lists them.

A benchmark is a module of this folder whose name does not start with ``_``; it is named on the
command line with ``-`` for ``_`` (``benchmarks/trial_time.py`` is ``trial-time``), and described by
the first line of its docstring. ``python -m benchmarks.NAME`` runs the same ``main``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import textwrap
from pathlib import Path

HERE = Path(__file__).parent


def benchmarks() -> dict[str, str]:
    """Every benchmark by its command-line name, with the first line of its docstring (read, not imported)."""
    found = {}
    for module in sorted(pkgutil.iter_modules([str(HERE)]), key=lambda m: m.name):
        if not module.name.startswith("_"):
            doc = ast.get_docstring(ast.parse((HERE / f"{module.name}.py").read_text())) or ""
            found[module.name.replace("_", "-")] = doc.splitlines()[0] if doc else ""
    return found


def main(argv: list[str] | None = None) -> None:
    listed = benchmarks()
    pad = max(map(len, listed), default=0) + 2  # the longest name and two spaces
    epilog = "benchmarks:\n" + "\n".join(
        textwrap.fill(summary, 100, initial_indent=f"  {name:<{pad}}", subsequent_indent=" " * (pad + 2))
        for name, summary in listed.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Regenerate the measured results in results/ (run from the repository root; "
        "pip install -e '.[bench]' first).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the benchmark to run (listed below)")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="its options: python -m benchmarks NAME --help")
    args = parser.parse_args(argv)
    name = args.name.replace("_", "-")
    if name not in listed:
        parser.error(f"no benchmark {args.name!r}; there are: {', '.join(listed)}")
    importlib.import_module(f"benchmarks.{name.replace('-', '_')}").main(args.options)


if __name__ == "__main__":
    main()
