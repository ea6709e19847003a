"""The front end: waveform -> 2-channel input (log-mel spectrogram, MFCC), as a torch module.

The costly part, the mel power spectrogram (an STFT), is split from the cheap part (noise, log,
DCT, normalisation) so that mel spectrograms can be computed once, cached, and reused every epoch:

    wave --mel_power()--> mel (B, n_mels, T) --from_mel()--> x (B, 2, n_mels, T)

Noise injection happens in `from_mel`, in training mode only. It adds the mel spectrum that white
noise at a random signal-to-noise ratio would add to the waveform: white noise of variance s^2 puts
s^2 * sum(window^2) * sum_k fb[k, b] into mel band b on average, with the chi-square spread of a
periodogram summed over the band's bins (a Gamma draw, by Wilson-Hilferty). So augmenting cached
mels matches augmenting waveforms in distribution, without an STFT per epoch (tested against the
real thing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
import torchaudio.functional as AF
from torch import nn

from sceneclf.errors import ConfigError

LOG_EPS = 1e-6


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 40
    noise: float = 0.0  # noise-to-signal RMS ratio at most (0.1 = 20 dB SNR), training only

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ConfigError(f"n_fft {self.n_fft} / hop_length {self.hop_length} are not usable")
        if not 8 <= self.n_mels <= self.n_fft // 2 + 1:
            raise ConfigError(f"n_mels {self.n_mels} must lie in 8..{self.n_fft // 2 + 1}")
        if not 0.0 <= self.noise <= 10.0:
            raise ConfigError(f"noise {self.noise} must lie in 0..10")

    def frames(self, samples: int) -> int:
        """Number of STFT frames for a waveform of `samples` samples (centred STFT)."""
        return samples // self.hop_length + 1

    def seconds(self, frames: int) -> float:
        """Seconds of audio that `frames` STFT frames step over."""
        return frames * self.hop_length / self.sample_rate


class FrontEnd(nn.Module):
    """log-mel + MFCC stacked as 2 channels, normalised with training-set statistics."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
            n_mels=cfg.n_mels, power=2.0,
        )
        fb = self.mel.mel_scale.fb  # (n_freqs, n_mels)
        window = self.mel.spectrogram.window
        # Mean noise power per mel band for unit-variance white noise, and the band's degrees
        # of freedom (effective number of periodogram bins, each chi-square with 2 dof).
        self.register_buffer("noise_band", (window.pow(2).sum() * fb.sum(0)).float(), persistent=False)
        bins = fb.sum(0).pow(2) / fb.pow(2).sum(0).clamp_min(1e-12)
        self.register_buffer("noise_dof", bins.clamp_min(1.0).float(), persistent=False)
        self.register_buffer("dct", AF.create_dct(cfg.n_mels, cfg.n_mels, norm="ortho"), persistent=False)
        self.register_buffer("mean", torch.zeros(2, cfg.n_mels, 1))
        self.register_buffer("std", torch.ones(2, cfg.n_mels, 1))

    def mel_power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> mel power spectrogram (B, n_mels, T)."""
        return self.mel(wave)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """Unnormalised (B, 2, n_mels, T): log-mel and its MFCC (orthonormal DCT)."""
        if self.training and self.cfg.noise > 0:
            mel = mel + self._noise_mel(mel)
        logmel = torch.log(mel + LOG_EPS)
        mfcc = torch.einsum("bft,fc->bct", logmel, self.dct)
        return torch.stack([logmel, mfcc], dim=1)

    def from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return (self.features(mel) - self.mean) / self.std

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.from_mel(self.mel_power(wave))

    def _noise_mel(self, mel: torch.Tensor) -> torch.Tensor:
        # Signal power per clip from the mel energy (triangular filters sum to about 1 across
        # the covered band), in units of the one-sided periodogram.
        window_energy = self.mel.spectrogram.window.pow(2).sum()
        signal = mel.sum(1).mean(-1) / (self.cfg.n_fft / 2 * window_energy)
        level = self.cfg.noise * torch.rand(mel.shape[0], device=mel.device)  # SNR drawn per clip
        variance = (level ** 2 * signal).view(-1, 1, 1)
        # Gamma(k, rate k) (a chi-square with 2k dof over 2k) by the Wilson-Hilferty cube of a
        # normal draw: the same mean and spread, 10x cheaper than torch's Gamma sampler.
        c = (2.0 / (9.0 * 2.0 * self.noise_dof)).view(1, -1, 1)
        spread = (1.0 - c + c.sqrt() * torch.randn_like(mel)).clamp_min(0.0).pow(3)
        return variance * self.noise_band.view(1, -1, 1) * spread

    @torch.no_grad()
    def fit_stats(self, mels: list[torch.Tensor]) -> None:
        """Set normalisation to the mean and std per channel and mel band of these (training)
        mel spectrograms, each (n_mels, T_i); computed in eval mode (no noise)."""
        was_training = self.training
        self.eval()
        total = torch.zeros(2, self.cfg.n_mels, 1)
        total_sq = torch.zeros(2, self.cfg.n_mels, 1)
        count = 0
        for mel in mels:
            x = self.features(mel.unsqueeze(0))[0].double()
            total += x.sum(-1, keepdim=True)
            total_sq += x.pow(2).sum(-1, keepdim=True)
            count += x.shape[-1]
        if count == 0:
            raise ConfigError("cannot fit feature statistics on an empty training set")
        mean = total / count
        std = (total_sq / count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-3)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        self.train(was_training)
