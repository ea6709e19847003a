"""Cached mel spectrograms with their labels, and the fixed-length batches training and
evaluation draw from them."""

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
