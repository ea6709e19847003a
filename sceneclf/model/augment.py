"""Training-time augmentations of the front end's output, as torch modules.

Every module but DeviceResponse takes x of shape (B, C, n_mels, T), the normalised front-end
output (`FrontEnd.from_mel`: channel 0 log-mel, channel 1 MFCC); DeviceResponse takes the mel
power spectrogram (B, n_mels, T) before it. Each is the identity in eval mode.
Randomness comes from torch's global generator, so `torch.manual_seed` makes a run repeatable.

    DeviceResponse  colours clips with random smooth frequency responses (a device's, a room's)
    FreqMixStyle  mixes per-band statistics between clips (device and room colouring)
    Mixup         mixes clips and their labels; returns soft targets
    SpecAugment   masks frequency bands and time spans
    TimeShift     rolls each clip in time
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sceneclf.errors import ConfigError

__all__ = ["Augment", "AugmentConfig", "DeviceResponse", "FreqMixStyle", "Mixup", "SpecAugment", "TimeShift", "soft_cross_entropy"]


class DeviceResponse(nn.Module):
    """With probability `p` per clip, multiplies the mel power by a random smooth gain curve over
    the bands: a tilt and two peaks or notches (Gaussian in band index), each within +-`max_db`.

    The parametric stand-in for the DCASE task 1 device impulse response (DIR) augmentation,
    which convolves clips with recorded microphone responses that sceneclf does not ship.
    """

    PEAKS = 2

    def __init__(self, p: float = 0.5, max_db: float = 10.0):
        super().__init__()
        if not 0.0 <= p <= 1.0 or not 0.0 <= max_db <= 40.0:
            raise ConfigError(f"DeviceResponse: p {p} must lie in [0, 1] and max_db {max_db} in [0, 40]")
        self.p, self.max_db = p, max_db

    def gains_db(self, b: int, n_mels: int, device: torch.device | None = None) -> torch.Tensor:
        """(b, n_mels) random responses in dB, each within +-max_db per component."""
        u = torch.linspace(-1.0, 1.0, n_mels, device=device)
        draw = lambda *shape: (2 * torch.rand(*shape, device=device) - 1) * self.max_db
        db = draw(b, 1) * u  # tilt across the bands
        centre = 2 * torch.rand(b, self.PEAKS, 1, device=device) - 1
        width = 0.05 + 0.25 * torch.rand(b, self.PEAKS, 1, device=device)
        bumps = torch.exp(-0.5 * ((u - centre) / width) ** 2)  # (b, peaks, n_mels)
        return db + (draw(b, self.PEAKS, 1) * bumps).sum(1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.max_db == 0:
            return mel
        b, n_mels = mel.shape[0], mel.shape[1]
        db = self.gains_db(b, n_mels, mel.device)
        db = db * (torch.rand(b, 1, device=mel.device) < self.p)  # only the chosen clips
        return mel * torch.pow(10.0, db / 10).unsqueeze(-1).to(mel.dtype)


class FreqMixStyle(nn.Module):
    """Freq-MixStyle (the DCASE 2023/2024 task 1 baselines): with probability `p` per batch,
    normalise each clip's bands by their own mean and std over time and re-scale them with a
    Beta(alpha, alpha) mix of its own and another clip's statistics.

    Statistics are per (channel, band); the baselines pool the channels of their one-channel input,
    here the channels are different features, so each keeps its own.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.3, eps: float = 1e-6):
        super().__init__()
        if not 0.0 <= p <= 1.0 or alpha <= 0:
            raise ConfigError(f"FreqMixStyle: p {p} must lie in [0, 1] and alpha {alpha} be > 0")
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or float(torch.rand(())) >= self.p:
            return x
        b = x.shape[0]
        mu = x.mean(dim=3, keepdim=True).detach()
        sig = (x.var(dim=3, keepdim=True) + self.eps).sqrt().detach()
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((b, 1, 1, 1)).to(x)
        perm = torch.randperm(b, device=x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (x - mu) / sig * sig_mix + mu_mix


class Mixup(nn.Module):
    """mixup: x' = lam x + (1 - lam) x[perm], target lam onehot(y) + (1 - lam) onehot(y[perm]),
    with lam ~ Beta(alpha, alpha) per clip. `forward(x, y)` returns (x', targets (B, n_classes));
    every target row sums to one. In eval mode x is unchanged and targets are one-hot."""

    def __init__(self, n_classes: int, alpha: float = 0.3):
        super().__init__()
        if n_classes < 2 or alpha <= 0:
            raise ConfigError(f"Mixup: n_classes {n_classes} must be >= 2 and alpha {alpha} > 0")
        self.n_classes, self.alpha = n_classes, alpha

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = F.one_hot(y, self.n_classes).to(x.dtype)
        if not self.training:
            return x, target
        b = x.shape[0]
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((b,)).to(x)
        perm = torch.randperm(b, device=x.device)
        lx = lam.view(b, *([1] * (x.dim() - 1)))
        lt = lam.view(b, 1)
        return lx * x + (1 - lx) * x[perm], lt * target + (1 - lt) * target[perm]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft targets (rows summing to one)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


class SpecAugment(nn.Module):
    """SpecAugment masks: `freq_masks` bands of 0..`freq_width` mel bins and `time_masks` spans of
    0..`time_width` frames per clip, the same on every channel. Masked cells get `fill`: "zero"
    (the training mean, as the input is normalised) or "mean" (the clip's own mean per channel)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: int = 20, fill: str = "zero"):
        super().__init__()
        if min(freq_masks, freq_width, time_masks, time_width) < 0 or fill not in ("zero", "mean"):
            raise ConfigError("SpecAugment: counts and widths must be >= 0 and fill 'zero' or 'mean'")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.fill = fill

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (B, 1, n_mels, T): True where the cell is masked."""
        b, _, nf, nt = x.shape
        out = torch.zeros(b, 1, nf, nt, dtype=torch.bool, device=x.device)
        for count, width, size, dim in ((self.freq_masks, self.freq_width, nf, 2),
                                        (self.time_masks, self.time_width, nt, 3)):
            pos = torch.arange(size, device=x.device)
            for _ in range(count):
                w = torch.randint(0, min(width, size) + 1, (b,), device=x.device)
                start = (torch.rand(b, device=x.device) * (size - w + 1)).long()
                hit = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
                out |= hit.view(b, 1, size, 1) if dim == 2 else hit.view(b, 1, 1, size)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return x
        value = x.mean(dim=(2, 3), keepdim=True) if self.fill == "mean" else torch.zeros_like(x[:1, :1, :1, :1])
        return torch.where(self.mask(x), value, x)


class TimeShift(nn.Module):
    """Rolls each clip circularly in time by a uniform shift in [-max_frames, max_frames]."""

    def __init__(self, max_frames: int = 30):
        super().__init__()
        if max_frames < 0:
            raise ConfigError(f"TimeShift: max_frames {max_frames} must be >= 0")
        self.max_frames = max_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.max_frames == 0:
            return x
        b, t = x.shape[0], x.shape[-1]
        shift = torch.randint(-self.max_frames, self.max_frames + 1, (b,), device=x.device)
        idx = (torch.arange(t, device=x.device) - shift[:, None]) % t  # (B, T)
        return x.gather(-1, idx.view(b, 1, 1, t).expand_as(x))


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation; every default is off."""

    mixstyle_p: float = 0.0  # Freq-MixStyle: probability per batch
    mixstyle_alpha: float = 0.3
    mixup_alpha: float = 0.0  # 0: no mixup
    freq_masks: int = 0  # SpecAugment
    freq_width: int = 8
    time_masks: int = 0
    time_width: int = 20
    time_shift: int = 0  # frames, at most
    response_p: float = 0.0  # DeviceResponse: probability per clip
    response_db: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mixstyle_p <= 1.0 or self.mixstyle_alpha <= 0:
            raise ConfigError(f"mixstyle_p {self.mixstyle_p} must lie in [0, 1], mixstyle_alpha "
                              f"{self.mixstyle_alpha} be > 0")
        if self.mixup_alpha < 0:
            raise ConfigError(f"mixup_alpha {self.mixup_alpha} must be >= 0")
        if min(self.freq_masks, self.freq_width, self.time_masks, self.time_width, self.time_shift) < 0:
            raise ConfigError("SpecAugment counts and widths and time_shift must be >= 0")
        if not 0.0 <= self.response_p <= 1.0 or not 0.0 <= self.response_db <= 40.0:
            raise ConfigError(f"response_p {self.response_p} must lie in [0, 1], response_db "
                              f"{self.response_db} in [0, 40]")


class Augment(nn.Module):
    """The input-side augmentations of an AugmentConfig in training order: the device response on
    the mel power (`mel`, before the front end), then on the features Freq-MixStyle on the clip's
    band statistics, time shift and SpecAugment masks. Identity in eval mode; mixup, which
    changes the labels too, is applied by the training loop (`mixup`)."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig()):
        super().__init__()
        self.cfg = cfg
        self.response = DeviceResponse(cfg.response_p, cfg.response_db)
        self.mixstyle = FreqMixStyle(cfg.mixstyle_p, cfg.mixstyle_alpha)
        self.shift = TimeShift(cfg.time_shift)
        self.masks = SpecAugment(cfg.freq_masks, cfg.freq_width, cfg.time_masks, cfg.time_width)

    def mel(self, mel: torch.Tensor) -> torch.Tensor:
        """The mel-power stage: (B, n_mels, T) -> the same, coloured by random responses."""
        return self.response(mel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.masks(self.shift(self.mixstyle(x)))

    def mixup(self, n_classes: int) -> Mixup | None:
        """The mixup of this config for `n_classes`, or None when it is off."""
        return Mixup(n_classes, self.cfg.mixup_alpha) if self.cfg.mixup_alpha > 0 else None
