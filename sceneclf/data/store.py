"""One mel store per data set and settings: every clip's mel spectrogram in one flat float32 file
that every process maps (the same pages, not a copy each), and an index of where each clip lies.

    <store>/mels.f32    float32; each clip's (n_mels, T) block in C order, appended at the end
    <store>/index.json  {"version", "n_mels", "length", "clips": {key: [offset, frames]}}

The index is replaced atomically, and only after the data it points at is on disk: bytes past
its `length` are a torn append, which the next writer overwrites. A store whose index is missing,
unreadable or points past the end of its data file is rebuilt. Writers hold a lock on the store
while they append; readers need none (committed bytes never change).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from sceneclf.atomic import atomic_open

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one writer at a time is then the user's affair
    fcntl = None

STORE_VERSION = 2  # version 1 kept one .npy per clip under mel/ and wave/; those are not read
COMMIT_EVERY_S = 10.0  # a kill loses at most this much preparation
ITEM = np.dtype(np.float32).itemsize


def write_block(f, data: memoryview) -> None:
    """Append one clip's bytes (a seam for fault-injection tests)."""
    f.write(data)


class MelStore:
    """The store at `root` for spectrograms of `n_mels` bands; `load()` reads its index."""

    def __init__(self, root: Path, n_mels: int):
        self.root = Path(root)
        self.n_mels = n_mels
        self.data_path = self.root / "mels.f32"
        self.index_path = self.root / "index.json"
        self.clips: dict[str, tuple[int, int]] = {}
        self.length = 0  # float32 values committed
        self.rebuilt = False  # the last load found a torn or foreign store and dropped it
        self._array: np.ndarray | None = None

    def __contains__(self, key: str) -> bool:
        return key in self.clips

    def __len__(self) -> int:
        return len(self.clips)

    def load(self) -> MelStore:
        """Read the index; a store that does not hold together is taken as empty (`rebuilt`)."""
        self.clips, self.length, self.rebuilt = {}, 0, False
        if not self.index_path.exists():
            self.rebuilt = self.data_path.exists()
            return self
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
            length = int(index["length"])
            clips = {k: (int(o), int(t)) for k, (o, t) in index["clips"].items()}
            size = self.data_path.stat().st_size if self.data_path.exists() else 0
            whole = (index["version"] == STORE_VERSION and index["n_mels"] == self.n_mels
                     and size >= length * ITEM
                     and all(o >= 0 and t > 0 and o + t * self.n_mels <= length for o, t in clips.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            whole = False
        if whole:
            self.clips, self.length = clips, length
        else:
            self.rebuilt = True
        return self

    def mel(self, key: str) -> torch.Tensor:
        """Clip `key`'s (n_mels, T) spectrogram: a view of the mapped file, not a copy."""
        offset, frames = self.clips[key]
        if self._array is None or self._array.shape[0] < self.length:
            # copy-on-write map: writable for torch, shared with every other process until written
            self._array = np.memmap(self.data_path, dtype=np.float32, mode="c", shape=(self.length,))
        block = self._array[offset:offset + frames * self.n_mels]
        return torch.from_numpy(block.reshape(self.n_mels, frames))

    @contextmanager
    def appending(self, on_wait: Callable[[], None] | None = None) -> Iterator[Appender]:
        """Lock the store, re-read its index (another process may have added clips meanwhile),
        and yield an Appender; whatever was added is committed when the block ends, even on an error.
        `on_wait()` is called once if another process holds the lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a+b") as lock:
            if fcntl is not None:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait()
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            self.load()
            if self.rebuilt:  # unlink, never rewrite: a reader may still map the old file
                self.data_path.unlink(missing_ok=True)
                self.index_path.unlink(missing_ok=True)
            self._array = None
            with open(self.data_path, "r+b" if self.data_path.exists() else "w+b") as f:
                f.truncate(self.length * ITEM)  # drop a torn append past the committed end
                f.seek(self.length * ITEM)
                appender = Appender(self, f)
                try:
                    yield appender
                finally:
                    appender.commit()

    def write_index(self) -> None:
        with atomic_open(self.index_path, "w", encoding="utf-8") as f:
            json.dump({"version": STORE_VERSION, "n_mels": self.n_mels, "length": self.length,
                       "clips": self.clips}, f, separators=(",", ":"))


class Appender:
    """Adds clips at the end of a locked store's data file."""

    def __init__(self, store: MelStore, f):
        self.store, self.f = store, f
        self.added = 0
        self._pending = False
        self._committed_at = time.monotonic()

    def add(self, key: str, mel: np.ndarray) -> None:
        store = self.store
        if mel.ndim != 2 or mel.shape[0] != store.n_mels:
            raise ValueError(f"mel of shape {mel.shape} in a store of {store.n_mels} bands")
        block = np.ascontiguousarray(mel, dtype=np.float32)
        write_block(self.f, memoryview(block).cast("B"))
        store.clips[key] = (store.length, block.shape[1])
        store.length += block.size
        self.added += 1
        self._pending = True
        if time.monotonic() - self._committed_at > COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        """The data on disk first, then the index that points at it."""
        if not self._pending and self.store.index_path.exists():
            return
        self.f.flush()
        os.fsync(self.f.fileno())
        self.store.write_index()
        self._pending = False
        self._committed_at = time.monotonic()
