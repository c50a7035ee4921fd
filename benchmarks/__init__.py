"""Benchmarks that regenerate ``results/``, one module each: run from the repository root as
``python -m benchmarks NAME`` (``python -m benchmarks --help`` lists them) after
``pip install -e '.[bench]'``. Not part of the installed package: nothing in ``autoshrink``
imports them. ``_report.py`` writes every report; ``_workloads.py`` holds what several share."""
