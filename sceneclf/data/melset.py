"""Cached mel spectrograms with their labels: random fixed-length crops for training, and every
clip's overlapping windows for evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class MelSet:
    """Cached mel power spectrograms (each (n_mels, T_i), T_i >= the crop length) and labels."""

    mels: list[torch.Tensor]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.mels)

    def __post_init__(self) -> None:
        if len(self.mels) != len(self.labels):
            raise ValueError("mels and labels differ in length")

    def __add__(self, other: MelSet) -> MelSet:
        return MelSet(self.mels + other.mels, torch.cat([self.labels, other.labels]))


def batches(data: MelSet, batch_size: int, frames: int, train: bool,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed-length batches: shuffled with random crops in training, in order with centre crops
    in evaluation."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if train else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        crops = []
        for i in idx.tolist():
            mel = data.mels[i]
            spare = mel.shape[-1] - frames
            if spare <= 0:
                crops.append(F.pad(mel, (0, -spare)))
                continue
            offset = int(torch.randint(spare + 1, (1,), generator=generator)) if train else spare // 2
            crops.append(mel[:, offset:offset + frames])
        yield torch.stack(crops), data.labels[idx]


def window_starts(n: int, length: int) -> list[int]:
    """Starts of windows of `length` over `n` steps, hop length // 2; the last one ends at `n`."""
    if n <= length:
        return [0]
    hop = max(1, length // 2)
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] + length < n:
        starts.append(n - length)
    return starts


def clip_windows(data: MelSet, batch_size: int, frames: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every clip cut into overlapping windows of `frames` (`window_starts`), in batches of
    windows with the index of the clip each belongs to: a whole clip is scored from all of it."""
    crops: list[torch.Tensor] = []
    owners: list[int] = []
    for i, mel in enumerate(data.mels):
        for start in window_starts(mel.shape[-1], frames):
            crop = mel[:, start:start + frames]
            crops.append(F.pad(crop, (0, frames - crop.shape[-1])))
            owners.append(i)
            if len(crops) == batch_size:
                yield torch.stack(crops), torch.tensor(owners)
                crops, owners = [], []
    if crops:
        yield torch.stack(crops), torch.tensor(owners)
