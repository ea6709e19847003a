"""Recording devices, read from file names as the DCASE mobile data sets write them, and accuracy
on devices the training heard and on those it did not.

TAU Urban Acoustic Scenes 2020-2025 Mobile names a clip `airport-lisbon-1000-40000-a.wav`, the
embedded synthetic data `airport_ap003_02_s4.wav`: the last part of the name, after `-` or `_`,
is the device (`a`-`d` real ones, `s1`.. simulated ones). A split is read by device only when
every clip's name ends that way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEVICE_ID = re.compile(r"[a-d]|s\d{1,2}")

__all__ = ["DEVICE_ID", "DeviceAccuracy", "device_accuracy", "device_of"]


def device_of(path: str | Path) -> str | None:
    """The device a clip's file name ends with, or None."""
    token = re.split(r"[-_]", Path(path).stem)[-1]
    return token if DEVICE_ID.fullmatch(token) else None


def _devices(paths: Sequence[str | Path]) -> list[str] | None:
    found = [device_of(p) for p in paths]
    return None if not found or None in found else found  # type: ignore[return-value]


@dataclass(frozen=True)
class DeviceAccuracy:
    """Right and total clips per device, and the devices the training split holds."""

    counts: dict[str, tuple[int, int]]
    heard: frozenset[str]

    def _share(self, devices) -> float | None:
        right = sum(self.counts[d][0] for d in devices)
        total = sum(self.counts[d][1] for d in devices)
        return right / total if total else None

    @property
    def unheard(self) -> tuple[str, ...]:
        return tuple(d for d in self.counts if d not in self.heard)

    @property
    def heard_accuracy(self) -> float | None:
        return self._share([d for d in self.counts if d in self.heard])

    @property
    def unheard_accuracy(self) -> float | None:
        return self._share(self.unheard)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat MLflow metrics: accuracy per device, on heard and on unheard devices."""
        out = {f"{prefix}accuracy_device_{d}": r / n for d, (r, n) in self.counts.items()}
        for name, value in (("heard", self.heard_accuracy), ("unheard", self.unheard_accuracy)):
            if value is not None:
                out[f"{prefix}accuracy_{name}_devices"] = value
        return out

    def format(self) -> str:
        parts = [f"{d} {r / n:.3f} ({n})" for d, (r, n) in self.counts.items()]
        summary = [f"{name} devices {value:.3f}" for name, value in
                   (("heard", self.heard_accuracy), ("unheard", self.unheard_accuracy)) if value is not None]
        return f"by device: {', '.join(parts)}\n{'; '.join(summary)} (heard in training: {', '.join(sorted(self.heard))})"


def device_accuracy(paths: Sequence[str | Path], correct: Sequence[bool],
                    train_paths: Sequence[str | Path]) -> DeviceAccuracy | None:
    """Accuracy by device of the clips `paths` (whether each was classified right), with the
    devices of `train_paths` as heard; None unless every name in both carries a device."""
    if len(paths) != len(correct):
        raise ValueError(f"{len(paths)} paths but {len(correct)} outcomes")
    devices, trained = _devices(paths), _devices(train_paths)
    if devices is None or trained is None:
        return None
    counts: dict[str, list[int]] = {}
    for device, right in zip(devices, correct):
        c = counts.setdefault(device, [0, 0])
        c[0] += bool(right)
        c[1] += 1
    order = sorted(counts, key=lambda d: (d.startswith("s"), len(d), d))  # a, b, c, then s1, s2, .., s10
    return DeviceAccuracy({d: (counts[d][0], counts[d][1]) for d in order}, frozenset(trained))
