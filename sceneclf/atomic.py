"""Atomic file writes: a temporary file in the target's folder, then a rename, so a kill never
leaves a half-written file where a reader looks."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(target: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary sibling of `target` for writing; it replaces `target` only when the
    block ends without an exception (and is removed otherwise)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> Path:
    with atomic_open(target, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(target)


STALE_AFTER_S = 3600.0  # far longer than any single write: a temporary this old lost its writer


def sweep_stale(root: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove the temporaries (`.NAME.*.tmp` files and folders, as made by `atomic_open` and the
    synthetic-data writer) that a killed process left under `root`; younger ones may belong to a
    writer still at work and stay. Returns how many were removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for path in root.rglob(".*.tmp"):
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except OSError:
            pass  # gone already (another sweeper), or not ours to remove: leave it
    return removed
