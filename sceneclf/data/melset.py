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


@dataclass
class ResidentMels:
    """A MelSet as one zero-padded tensor on a device (a GPU's memory): crops and windows are cut
    there by indexing, so an epoch copies nothing from the host but its random draws."""

    mels: torch.Tensor  # (N, n_mels, T), T >= every clip's length and the crop length
    lengths: torch.Tensor  # (N,) int64, on the same device
    labels: torch.Tensor  # (N,) int64, on the same device

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, data: MelSet, frames: int, device: torch.device | str) -> ResidentMels:
        lengths = [m.shape[-1] for m in data.mels]
        n_mels = data.mels[0].shape[0] if data.mels else 1
        out = torch.zeros(len(data), n_mels, max([frames, *lengths]), device=device)
        for i, mel in enumerate(data.mels):
            out[i, :, :mel.shape[-1]] = mel.to(device, non_blocking=True)
        return cls(out, torch.tensor(lengths, device=device), data.labels.to(device))

    def crops(self, idx: torch.Tensor, offsets: torch.Tensor, frames: int) -> torch.Tensor:
        """(len(idx), n_mels, frames): clip idx[k] from frame offsets[k]; zeros past its end."""
        pos = offsets[:, None] + torch.arange(frames, device=offsets.device)
        mels = self.mels[idx]
        return mels.gather(2, pos[:, None, :].expand(-1, mels.shape[1], -1))


def resident_batches(data: ResidentMels, batch_size: int, frames: int, train: bool,
                     generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`batches` on a ResidentMels: the same order and crop rules, drawn on the host once per
    epoch and cut on the data's device."""
    n, device = len(data), data.mels.device
    order = (torch.randperm(n, generator=generator) if train else torch.arange(n)).to(device)
    spare = (data.lengths[order] - frames).clamp_min(0)
    if train:
        offsets = (torch.rand(n, generator=generator).to(device) * (spare + 1)).long().minimum(spare)
    else:
        offsets = spare // 2
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield data.crops(idx, offsets[start:start + batch_size], frames), data.labels[idx]


def resident_windows(data: ResidentMels, batch_size: int, frames: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`clip_windows` on a ResidentMels: the same windows, cut on the data's device."""
    owners, starts = [], []
    for i, n in enumerate(data.lengths.tolist()):
        for start in window_starts(n, frames):
            owners.append(i)
            starts.append(start)
    device = data.mels.device
    owners_t, starts_t = torch.tensor(owners, device=device), torch.tensor(starts, device=device)
    for b in range(0, len(owners), batch_size):
        idx = owners_t[b:b + batch_size]
        yield data.crops(idx, starts_t[b:b + batch_size], frames), idx
