"""Sound sources for the synthetic scenes (`sceneclf.data.synth`): band-shaped noise, smooth random
modulation, harmonic chirps and noise impacts.

Each source returns float64 samples (or a spectrum); `rng` is the clip's numpy Generator, so a
clip is a pure function of its seed.
"""

from __future__ import annotations

import math

import numpy as np


def fast_len(n: int) -> int:
    """The smallest 5-smooth number >= n: FFTs of prime lengths are many times slower."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35 << max(0, (n - 1) // p35).bit_length()  # smallest p35 * 2^k >= n
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


def octaves(f: np.ndarray) -> np.ndarray:
    """log2 of frequency re 1 kHz, floored at 20 Hz."""
    return np.log2(np.maximum(f, 20.0) / 1000.0)


def band_db(f: np.ndarray, centre: float, width_oct: float, gain_db: float) -> np.ndarray:
    """A log-Gaussian peak (or notch): `gain_db` at `centre` Hz, one sd `width_oct` octaves wide."""
    return gain_db * np.exp(-0.5 * ((octaves(f) - math.log2(centre / 1000.0)) / width_oct) ** 2)


def colour_db(f: np.ndarray, tilt: float, peaks=()) -> np.ndarray:
    """`tilt` dB/octave about 1 kHz plus one `band_db` per (centre, width, gain) in `peaks`."""
    db = tilt * octaves(f)
    for centre, width, gain in peaks:
        db = db + band_db(f, centre, width, gain)
    return db


def noise_spectrum(rng, m: int) -> np.ndarray:
    """The rfft of m samples of white noise of unit variance (complex Gaussian bins)."""
    spec = rng.standard_normal((m // 2 + 1, 2), dtype=np.float32).view(np.complex64)[:, 0]
    return spec * np.float32(math.sqrt(m / 2))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def smooth(rng, n: int, sr: int, knot_s: float):
    """A smooth random curve in [-1, 1]: cosine interpolation of random knots `knot_s` apart."""
    knots = rng.uniform(-1.0, 1.0, int(n / (knot_s * sr)) + 2)
    pos = np.arange(0, len(knots) - 1, 1 / 16)  # 16 points per knot, then linear to full rate
    i = pos.astype(np.int64)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return np.interp(np.arange(n) / (knot_s * sr), pos, knots[i] * (1 - w) + knots[i + 1] * w)


def modulation(rng, n: int, sr: int, rate: float, depth: float):
    """A periodic swell at `rate` Hz (raised cosine, slightly irregular), between 1 - depth and 1."""
    t = np.arange(n) / sr
    phase = 2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi) + 0.6 * smooth(rng, n, sr, 1.0)
    return 1 - depth * (0.5 + 0.5 * np.cos(phase))


def chirp(rng, sr: int, f_lo: float, f_hi: float, seconds: float, n_harm: int):
    """A harmonic tone gliding from `f_lo` up to `f_hi` (exponentially) with a smooth envelope;
    time-reversed it glides down with the same spectrum."""
    m = int(seconds * sr)
    t = np.arange(m) / sr
    k = math.log(f_hi / f_lo) / seconds
    phase = 2 * np.pi * f_lo * (np.exp(k * t) - 1) / k
    x = np.zeros(m)
    for h in range(1, n_harm + 1):
        if h * f_hi < 0.45 * sr:  # no harmonic above the Nyquist frequency
            x += np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h
    return x * np.hanning(m)


def impact(rng, sr: int, tau: float, seconds: float):
    """White noise with an instant attack and an exponential decay of time constant `tau`; peak
    about 1. Time-reversed it is a swell cut off sharply, with the same spectrum."""
    m = int(seconds * sr)
    env = np.exp(-np.arange(m) / (tau * sr))
    env[: int(0.002 * sr)] *= np.linspace(0.0, 1.0, int(0.002 * sr))  # no click at the onset
    return rng.standard_normal(m) * env / 2.5
