from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_benchmark_scratch_folder_is_removed_when_the_process_exits() -> None:
    code = "from benchmarks._workloads import scratch_dir; p = scratch_dir('autoshrink-test-'); (p / 'f').write_text('x'); print(p)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    folder = Path(out.stdout.strip())
    assert folder.name.startswith("autoshrink-test-") and not folder.exists()
