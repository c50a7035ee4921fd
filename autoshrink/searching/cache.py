"""A search's cache: in memory, and on disk for what a resumed search or another worker can reuse.

`TrialRunner.cache` keeps what every candidate of a search shares (the teacher's outputs, each
architecture's speed, the pruning probe, int8 calibration ranges). Most of it lives and dies with
the process. The entries whose key starts with one of `STORED` (content-addressed: the key is a
hash of everything the value depends on, so a changed model or data makes a new key and a stale
value cannot be read) hold strings worth keeping: they are also written to ``folder``, one file
per key, and read back on a miss. So a search that crashed and is resumed, or a Ray worker in
another process, reuses the int8 calibration of an architecture instead of calibrating it again
(84-106 s a candidate on the EfficientNet-Lite1 ImageNet model, ``results/pretrained.md``).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first = SearchCache(folder)
    >>> first["ort-calibration:abc"] = '{"ranges": 1}'
    >>> first["speed"] = {}  # not stored: in memory only
    >>> again = SearchCache(folder)  # a resumed search
    >>> "ort-calibration:abc" in again, again["ort-calibration:abc"], "speed" in again, again.loaded
    (True, '{"ranges": 1}', False, 1)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

#: Key prefixes whose string values are stored on disk (content-addressed keys only).
STORED = ("ort-calibration:",)


class SearchCache(dict):  # type: ignore[type-arg]
    """A dict whose `STORED` string entries are also kept in ``folder`` (None: memory only);
    ``loaded`` counts the entries read back from disk."""

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.folder = folder
        self.loaded = 0

    def _path(self, key: Any) -> Path | None:
        if self.folder is None or not isinstance(key, str) or not key.startswith(STORED):
            return None
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.txt"

    def _load(self, key: Any) -> bool:
        path = self._path(key)
        if path is None or not path.is_file():
            return False
        try:
            super().__setitem__(key, path.read_text())
        except OSError:
            return False
        self.loaded += 1
        return True

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or self._load(key)

    def __getitem__(self, key: Any) -> Any:
        if not super().__contains__(key):
            self._load(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        path = self._path(key)
        if path is None or not isinstance(value, str):
            return
        try:  # written whole or not at all: a reader in another process never sees half a file
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".part") as out:
                out.write(value)
            os.replace(out.name, path)
        except OSError:
            pass  # a read-only or full disk costs the reuse, not the search

    def __reduce__(self) -> Any:  # pickled for Ray workers: the folder and what is in memory
        return (_rebuilt, (self.folder, dict(self)))


def _rebuilt(folder: Path | None, items: dict[str, Any]) -> SearchCache:
    cache = SearchCache(folder)
    dict.update(cache, items)
    return cache
