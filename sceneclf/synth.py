"""Procedural 15-class acoustic scene data set: the tool's embedded default data.

`generate(cfg, seed)` is pure: it returns float32 clips and nothing touches the disk.
`write_dataset` puts them on disk as 16-bit WAV files with a manifest in the TUT Acoustic
Scenes 2017 layout, so the real loading path is the one exercised; `default_dataset` caches
one such folder per (config, seed).

Each class is a recipe of layered sources: coloured background noise, engine or hum tones
with drifting pitch, wind, passing traffic, slow wave-like modulation and random transient
events. Related classes share sources on purpose, so the task is not trivial. Every clip
belongs to a recording location that fixes its parameters; clips vary slightly around them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sceneclf.errors import ConfigError, DataError

__all__ = [
    "SCENE_CLASSES",
    "SYNTH_VERSION",
    "SynthClip",
    "SynthConfig",
    "dataset_key",
    "default_dataset",
    "generate",
    "iter_clips",
    "write_dataset",
]

SCENE_CLASSES: tuple[str, ...] = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store",
    "home", "library", "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip
SYNTH_VERSION = 2  # bump when the recipes change: it invalidates cached data sets
DONE = "DONE"
# Prefixes of location ids, one per class in SCENE_CLASSES order.
_LOC_PREFIX = ("be", "bu", "ca", "cr", "ci", "fo", "gr", "ho", "li", "me", "of", "pa", "re", "tr", "tm")

# Recipes. Every (lo, hi) pair is a range a location draws from. Levels are in dB re the
# background's RMS, except `level`, the clip's RMS in dBFS.
#   bg: background noise (spectral tilt dB/octave about 1 kHz, band centre Hz, band gain dB)
#   tone: engine, motor or hum (f0 Hz, relative pitch drift, harmonics, rolloff dB/harmonic, level)
#   waves: swell of the background (rate Hz, depth); wind: level; traffic: (passes per s, level)
#   events: kind -> (groups per second, peak level, frequency scale)


def _ev(rate: tuple, level: tuple, scale: tuple = (0.85, 1.15)) -> tuple:
    return rate, level, scale


_QUIET = (-38.0, -28.0)
_RECIPES: dict[str, dict] = {
    "beach": dict(bg=((-3, -0.5), (700, 2500), (3, 9)), waves=((0.15, 0.35), (0.6, 0.95)), wind=(-12, -2),
                  events=dict(bird=_ev((0, 0.15), (-4, 4)), babble=_ev((0, 0.3), (-14, -6)), steps=_ev((0, 0.1), (-8, 0)))),
    "bus": dict(bg=((-6, -2), (80, 500), (3, 9)), tone=((30, 50), (0.1, 0.25), (8, 12), (1, 3), (-6, 2)),
                events=dict(beep=_ev((0.3, 0.6), (0, 6), (0.6, 1.0)), hiss=_ev((0.1, 0.3), (-2, 6)),
                            babble=_ev((0.2, 0.6), (-8, 0)), door=_ev((0.02, 0.1), (-4, 4)))),
    "cafe/restaurant": dict(bg=((-5, -1.5), (200, 1500), (3, 8)),
                            events=dict(babble=_ev((1.5, 3.0), (-4, 2)), clink=_ev((0.6, 1.2), (-4, 6)),
                                        beep=_ev((0, 0.05), (-8, 0), (0.6, 1.3)), steps=_ev((0, 0.1), (-8, 0)))),
    "car": dict(bg=((-9, -4), (50, 300), (4, 10)), tone=((20, 40), (0.05, 0.15), (5, 9), (3, 6), (-8, 0)),
                events=dict(tick=_ev((0.2, 0.5), (0, 8)), babble=_ev((0, 0.2), (-12, -4)))),
    "city_center": dict(bg=((-5, -2), (200, 1000), (3, 9)), traffic=((0.5, 1.0), (0, 6)),
                        events=dict(horn=_ev((0.2, 0.4), (0, 8)), steps=_ev((0.2, 0.5), (-4, 4)),
                                    babble=_ev((0.3, 0.8), (-8, 0)), door=_ev((0, 0.05), (-6, 2)))),
    "forest_path": dict(bg=((-5, -1.5), (200, 1000), (2, 8)), wind=(-4, 4), level=_QUIET,
                        events=dict(bird=_ev((0.6, 1.4), (0, 8), (0.8, 1.3)), steps=_ev((0.15, 0.4), (-4, 4)))),
    "grocery_store": dict(bg=((-4, -1), (200, 1500), (2, 8)), tone=((50, 120), (0, 0.01), (3, 6), (4, 8), (-16, -6)),
                          events=dict(beep=_ev((0.6, 1.2), (0, 8), (0.6, 1.3)), babble=_ev((0.3, 0.8), (-10, -2)),
                                      steps=_ev((0.1, 0.3), (-8, 0)), clack=_ev((0, 0.1), (-12, -4), (1.2, 1.8)))),
    "home": dict(bg=((-5, -1.5), (100, 800), (2, 8)), level=_QUIET, music=(-10, -2),
                 events=dict(clink=_ev((0.2, 0.5), (-4, 4)), door=_ev((0.05, 0.15), (-2, 6)),
                             babble=_ev((0.1, 0.4), (-8, 0), (0.8, 1.0)), steps=_ev((0.05, 0.2), (-6, 2)))),
    "library": dict(bg=((-5, -1.5), (100, 800), (2, 8)), level=_QUIET, tone=((80, 200), (0, 0.01), (3, 6), (4, 8), (-22, -12)),
                    events=dict(rustle=_ev((0.6, 1.2), (0, 8)), steps=_ev((0.1, 0.25), (-4, 4)),
                                typing=_ev((0, 0.1), (-8, 0)), babble=_ev((0, 0.1), (-16, -8), (1.0, 1.2)))),
    "metro_station": dict(bg=((-4, -1.5), (200, 1000), (3, 9)), tone=((300, 700), (0.2, 0.4), (2, 4), (6, 10), (-6, 2)),
                          events=dict(babble=_ev((0.5, 1.2), (-6, 0)), steps=_ev((0.2, 0.5), (-6, 2)),
                                      clack=_ev((0.05, 0.2), (-4, 4)), beep=_ev((0.1, 0.3), (-6, 2), (0.4, 0.6)))),
    "office": dict(bg=((-5, -1.5), (100, 800), (2, 8)), level=_QUIET, tone=((80, 200), (0, 0.01), (3, 6), (4, 8), (-20, -10)),
                   events=dict(typing=_ev((0.6, 1.5), (0, 8)), babble=_ev((0.05, 0.4), (-10, -2)),
                               door=_ev((0, 0.05), (-4, 4)), rustle=_ev((0, 0.1), (-8, 0)))),
    "park": dict(bg=((-5, -1.5), (200, 1000), (2, 8)), wind=(-12, -2), traffic=((0.02, 0.1), (-14, -6)),
                 events=dict(babble=_ev((0.4, 0.8), (-4, 4), (1.2, 1.5)), bird=_ev((0.3, 0.6), (-4, 6), (0.8, 1.3)),
                             steps=_ev((0.05, 0.3), (-6, 2)))),
    "residential_area": dict(bg=((-5, -1.5), (200, 1000), (3, 8)), traffic=((0.15, 0.35), (-4, 4)), wind=(-16, -6),
                             events=dict(bark=_ev((0.3, 0.6), (0, 8)), bird=_ev((0.05, 0.2), (-4, 4), (0.8, 1.3)),
                                         door=_ev((0.05, 0.15), (-4, 4)), steps=_ev((0.05, 0.2), (-6, 2)))),
    "train": dict(bg=((-6, -2), (80, 500), (3, 9)), tone=((60, 120), (0.01, 0.05), (5, 9), (2, 5), (-12, -4)),
                  events=dict(clack=_ev((0.6, 1.2), (0, 8)), babble=_ev((0.05, 0.3), (-10, -2)))),
    "tram": dict(bg=((-6, -2), (100, 500), (3, 9)), tone=((200, 450), (0.1, 0.25), (3, 6), (4, 8), (-8, 0)),
                 events=dict(squeal=_ev((0.3, 0.6), (0, 8)), clack=_ev((0.1, 0.3), (-6, 2), (1.2, 1.6)),
                             clink=_ev((0.05, 0.15), (-4, 4), (0.2, 0.35)), babble=_ev((0.1, 0.4), (-10, -2)))),
}  # fmt: skip
_DEFAULT_LEVEL = (-30.0, -18.0)
# Every location's device and room colour the background, whatever the class: (centre Hz, gain dB).
_EQ = (((80, 6000), (-4, 4)),) * 2
# Difficulty: a location's parameters span this fraction of the class's range, around its centre
# (measured: 0.4 gives a 25K-parameter CNN about 93 % test accuracy, 1.0 about 65 %).
_LOCATION_SPREAD = 0.4
_CLIP_SPREAD = 0.06  # a clip's parameters: the location's, plus this fraction of the range (1 sd)


@dataclass(frozen=True)
class SynthConfig:
    """Size and shape of the synthetic data set."""

    clips_per_class: int = 40
    locations_per_class: int = 8
    sample_rate: int = 16000
    min_seconds: float = 3.0
    max_seconds: float = 6.0
    eval_fraction: float = 0.25  # share of each class's locations in fold1_evaluate

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"SynthConfig.{field} must be {what}, got {getattr(self, field)!r}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.locations_per_class) and self.locations_per_class >= 2, "locations_per_class",
             "an integer >= 2 (one location at least on each side of the split)")  # fmt: skip
        need(is_int(self.clips_per_class) and self.clips_per_class >= self.locations_per_class,
             "clips_per_class", f"an integer >= locations_per_class ({self.locations_per_class})")  # fmt: skip
        need(is_int(self.sample_rate) and 8000 <= self.sample_rate <= 96000, "sample_rate",
             "an integer in [8000, 96000]")  # fmt: skip
        need(isinstance(self.min_seconds, (int, float)) and 0.1 <= self.min_seconds <= 60,
             "min_seconds", "a number in [0.1, 60]")  # fmt: skip
        need(isinstance(self.max_seconds, (int, float)) and self.min_seconds <= self.max_seconds <= 60,
             "max_seconds", f"a number in [min_seconds ({self.min_seconds}), 60]")  # fmt: skip
        need(isinstance(self.eval_fraction, (int, float)) and 0 < self.eval_fraction < 1,
             "eval_fraction", "a number strictly between 0 and 1")  # fmt: skip


@dataclass(frozen=True)
class SynthClip:
    """One generated clip: `name` is its path relative to the data set folder."""

    name: str
    label: str
    location: str
    audio: np.ndarray  # float32, mono, in [-1, 1]


# ---- sources: each returns float64 samples; rng is the clip's generator ----


def _fast_len(n: int) -> int:
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


def _filtered_noise(rng, n: int, sr: int, gain):
    """Noise of length n with magnitude spectrum `gain(freqs)`: complex Gaussian bins, one irfft."""
    m = _fast_len(n)
    f = np.fft.rfftfreq(m, 1 / sr).astype(np.float32)
    spec = rng.standard_normal((len(f), 2), dtype=np.float32).view(np.complex64)[:, 0]
    return np.fft.irfft(spec * gain(f), m)[:n]


def _shaped_noise(rng, n: int, sr: int, tilt: float, fc: float, gain_db: float, eq=()):
    """Noise with `tilt` dB/octave about 1 kHz and log-Gaussian bands one octave wide: one of
    `gain_db` at `fc`, and one per (centre Hz, gain dB) in `eq`; unit RMS."""

    def gain(f):
        octs = np.log2(np.maximum(f, 20.0))
        db = tilt * (octs - math.log2(1000.0))
        for centre, g in ((fc, gain_db), *eq):
            db += g * np.exp(-0.5 * (octs - math.log2(centre)) ** 2)
        return np.exp(db * (math.log(10) / 20)) * np.minimum(1.0, (f / 40.0) ** 2)  # high-pass below 40 Hz

    x = _filtered_noise(rng, n, sr, gain)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _smooth(rng, n: int, sr: int, knot_s: float):
    """A smooth random curve in [-1, 1]: cosine interpolation of random knots `knot_s` apart."""
    knots = rng.uniform(-1.0, 1.0, int(n / (knot_s * sr)) + 2)
    pos = np.arange(0, len(knots) - 1, 1 / 16)  # 16 points per knot, then linear to full rate
    i = pos.astype(np.int64)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return np.interp(np.arange(n) / (knot_s * sr), pos, knots[i] * (1 - w) + knots[i + 1] * w)


def _tone(rng, n, sr, f0, drift, n_harm, rolloff):
    """Engine, motor or hum: harmonics of a slowly drifting fundamental, with a little flutter."""
    f = f0 * np.exp(drift * _smooth(rng, n, sr, rng.uniform(0.5, 1.5)))
    cycles = np.cumsum(f / sr)
    phase = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)  # float32 sin is fast
    step = np.empty(n, np.complex64)
    step.real, step.imag = np.cos(phase), np.sin(phase)
    z, acc = np.ones(n, np.complex64), np.zeros(n, np.complex64)
    for h in range(1, int(round(n_harm)) + 1):
        z *= step  # exp(i * h * phase), by repeated multiplication instead of n_harm sines
        amp = 10 ** (-rolloff * (h - 1) / 20) * rng.uniform(0.4, 1.0) * (h * f.max() < 0.45 * sr)
        acc += amp * np.exp(1j * rng.uniform(0, 2 * np.pi)) * z
    x = acc.imag
    x *= 1 + 0.15 * _smooth(rng, n, sr, 0.2)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _music(rng, n, sr):
    """A radio or TV in the room: chords of harmonic notes from a pentatonic scale."""
    x, start = np.zeros(n), 0
    root = rng.uniform(150, 300)
    while start < n:
        m = min(n - start, int(rng.uniform(0.25, 0.8) * sr))
        t = np.arange(m) / sr
        for step in rng.choice([0, 2, 4, 7, 9, 12, 14, 16], 3, replace=False):
            f = root * 2 ** (step / 12)
            x[start : start + m] += sum(np.sin(2 * np.pi * h * f * t) / h**1.5 for h in range(1, 4))
        x[start : start + m] *= np.minimum(1.0, np.arange(m) / (0.01 * sr)) * _decay(m, sr, 0.6)
        start += m
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _decay(m: int, sr: int, tau: float):
    return np.exp(-np.arange(m) / (tau * sr))


def _impact(rng, sr, tau, lp_hz, dur=0.1):
    """A knock: decaying noise, low-passed by a Hann kernel; peak 1."""
    m = int(dur * sr)
    k = np.hanning(max(3, int(sr / lp_hz)))
    x = np.convolve(rng.standard_normal(m) * _decay(m, sr, tau), k, mode="same")
    return x / (np.abs(x).max() + 1e-12)


def _click(rng, sr, s):
    m = int(0.008 * sr)
    t = np.arange(m) / sr
    x = np.diff(rng.standard_normal(m + 1)) * _decay(m, sr, 0.0015)
    x += 0.5 * np.sin(2 * np.pi * min(2500 * s, 0.45 * sr) * t) * _decay(m, sr, 0.002)
    return x / (np.abs(x).max() + 1e-12)


def _train_of(rng, sr, unit, count, gap, jitter=0.1):
    """`count` copies of the waveform `unit` (re-drawn each time) about `gap` seconds apart."""
    starts = np.cumsum(np.r_[0, gap * rng.uniform(1 - jitter, 1 + jitter, count - 1)])
    units = [unit() * rng.uniform(0.6, 1.0) for _ in range(count)]
    out = np.zeros(int(starts[-1] * sr) + max(len(u) for u in units))
    for st, u in zip(starts, units):
        out[int(st * sr) : int(st * sr) + len(u)] += u
    return out


def _bird(rng, sr, s):
    f0 = rng.uniform(2500, 4500) * s
    notes = []
    for _ in range(rng.integers(1, 7)):
        d = rng.uniform(0.04, 0.15)
        t = np.arange(int(d * sr)) / sr
        fa = min(f0 * rng.uniform(0.85, 1.15), 0.45 * sr)
        fb = min(fa * rng.uniform(0.6, 1.6), 0.45 * sr)
        notes += [np.sin(2 * np.pi * (fa * t + (fb - fa) * t**2 / (2 * d))) * np.hanning(len(t)),
                  np.zeros(int(rng.uniform(0.02, 0.12) * sr))]  # fmt: skip
    return np.concatenate(notes)


def _steps(rng, sr, s):
    def step():
        m = int(0.1 * sr)
        thump = np.sin(2 * np.pi * 90 * s * np.arange(m) / sr) * _decay(m, sr, 0.02)
        return _impact(rng, sr, 0.012, 900 * s) + 0.5 * thump

    return _train_of(rng, sr, step, int(rng.integers(2, 7)), rng.uniform(0.4, 0.65))


def _door(rng, sr, s):
    m = int(0.5 * sr)
    x = np.sin(2 * np.pi * rng.uniform(50, 110) * s * np.arange(m) / sr) * _decay(m, sr, 0.08)
    slam = _impact(rng, sr, 0.03, 600 * s, dur=0.3)
    x[: len(slam)] += slam
    at = int(rng.uniform(0.05, 0.25) * sr)
    click = _click(rng, sr, s * 1.5)
    x[at : at + len(click)] += 0.6 * click
    return x / np.abs(x).max()


def _typing(rng, sr, s):
    return _train_of(rng, sr, lambda: _click(rng, sr, s), int(rng.integers(4, 26)), rng.uniform(0.08, 0.2), 0.6)


def _beep(rng, sr, s):
    f = min(1800 * s, 0.14 * sr)
    m = int(rng.uniform(0.08, 0.2) * sr)
    ph = 2 * np.pi * f * np.arange(m) / sr
    fade = np.minimum(1.0, np.minimum(np.arange(m), m - np.arange(m)) / (0.005 * sr))
    unit = (np.sin(ph) + 0.3 * np.sin(3 * ph)) * fade / 1.3
    return _train_of(rng, sr, lambda: unit, int(rng.integers(1, 4)), m / sr + rng.uniform(0.08, 0.15), 0.0)


def _clack(rng, sr, s):
    def joint():
        m = int(0.2 * sr)
        ring = np.sin(2 * np.pi * 700 * s * np.arange(m) / sr) * _decay(m, sr, 0.05)
        return _train_of(rng, sr, lambda: _impact(rng, sr, 0.02, 1500 * s, 0.2) + 0.4 * ring, 2,
                         rng.uniform(0.1, 0.25), 0.05)  # fmt: skip

    return _train_of(rng, sr, joint, int(rng.integers(1, 4)), rng.uniform(0.6, 1.2))


def _babble(rng, sr, s):
    """A burst of speech-like noise: three formant resonances, syllable-rate modulation."""
    m = int(rng.uniform(0.4, 2.0) * sr)
    formants = [(rng.uniform(lo, hi) * s, rng.uniform(80, 200), k)
                for k, (lo, hi) in enumerate([(300, 800), (900, 2200), (2300, 3200)], 1)]  # fmt: skip
    x = _filtered_noise(rng, m, sr, lambda f: sum(np.exp(-0.5 * ((f - fc) / bw) ** 2) / k for fc, bw, k in formants))
    t = np.arange(m) / sr
    x *= np.maximum(0.0, np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3))) ** 1.5
    x *= np.hanning(m)
    return x / (np.abs(x).max() + 1e-12)


def _clink(rng, sr, s):
    def clink():
        taus = rng.uniform(0.03, 0.15, rng.integers(2, 5)) / s
        m = int(min(1.5, 4 * taus.max()) * sr)
        t = np.arange(m) / sr
        fs = np.minimum(rng.uniform(2500, 7000, len(taus)) * s, 0.45 * sr)
        return sum(np.sin(2 * np.pi * fk * t) * np.exp(-t / tk) for fk, tk in zip(fs, taus)) / len(taus)

    return _train_of(rng, sr, clink, int(rng.integers(1, 4)), rng.uniform(0.05, 0.2), 0.3)


def _tick(rng, sr, s):
    """A car's turn indicator: a long run of evenly spaced clicks."""
    return _train_of(rng, sr, lambda: _click(rng, sr, 0.5 * s), int(rng.integers(6, 16)), rng.uniform(0.33, 0.5), 0.01)


def _squeal(rng, sr, s):
    """Wheels squealing in a curve: a high tone with vibrato."""
    m = int(rng.uniform(0.5, 2.0) * sr)
    t = np.arange(m) / sr
    f = min(rng.uniform(2000, 4500) * s, 0.4 * sr) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
    ph = 2 * np.pi * np.cumsum(f) / sr
    return (np.sin(ph) + 0.3 * np.sin(2 * ph)) * np.hanning(m) / 1.3


def _horn(rng, sr, s):
    """A car horn: two slightly detuned harmonic tones, one or two honks."""
    def honk():
        m = int(rng.uniform(0.2, 0.7) * sr)
        ph = 2 * np.pi * rng.uniform(350, 500) * s * np.arange(m) / sr
        fade = np.minimum(1.0, np.minimum(np.arange(m), m - np.arange(m)) / (0.01 * sr))
        return fade * sum(np.sin(h * ph) / h + np.sin(h * 1.26 * ph) / h for h in range(1, 5)) / 3

    return _train_of(rng, sr, honk, int(rng.integers(1, 3)), 0.9, 0.3)


def _rustle(rng, sr, s):
    """Paper or clothes: high-passed noise with an irregular envelope."""
    m = int(rng.uniform(0.3, 0.9) * sr)
    x = np.diff(rng.standard_normal(m + 1)) * (1 + _smooth(rng, m, sr, 0.04)) * np.hanning(m)
    return x / (np.abs(x).max() + 1e-12)


def _hiss(rng, sr, s):
    """A pneumatic door or brake: a burst of bright noise with a fast attack."""
    m = int(rng.uniform(0.4, 1.0) * sr)
    x = _filtered_noise(rng, m, sr, lambda f: np.exp(-0.5 * (np.log2(np.maximum(f, 20) / (4000 * s))) ** 2))
    x *= np.minimum(1.0, np.arange(m) / (0.02 * sr)) * _decay(m, sr, m / sr / 2.5)
    return x / (np.abs(x).max() + 1e-12)


def _bark(rng, sr, s):
    """A dog: one to four short harmonic barks with a formant."""
    def bark():
        m = int(rng.uniform(0.1, 0.25) * sr)
        t = np.arange(m) / sr
        ph = 2 * np.pi * np.cumsum(rng.uniform(300, 600) * s * (1.2 - 0.4 * t / t[-1])) / sr
        return sum(np.sin(h * ph) * np.exp(-0.5 * ((h - 3) / 2) ** 2) for h in range(1, 9)) * np.hanning(m)

    x = _train_of(rng, sr, bark, int(rng.integers(1, 5)), rng.uniform(0.3, 0.6), 0.2)
    return x / (np.abs(x).max() + 1e-12)


# kind -> (generator, calibration dB): the offset makes a recipe's level 0 dB a clearly audible
# event over the background, whatever its bandwidth and duty cycle.
_EVENTS = dict(bird=(_bird, -4), steps=(_steps, 10), door=(_door, 6), typing=(_typing, 10), beep=(_beep, -2),
               clack=(_clack, 12), babble=(_babble, 14), clink=(_clink, 4), tick=(_tick, -6), squeal=(_squeal, 0),
               horn=(_horn, 6), rustle=(_rustle, 4), hiss=(_hiss, 8), bark=(_bark, 0))  # fmt: skip


# ---- recipes to clips ----


def _draw(spec, loc_rng, clip_rng):
    """Sample a recipe: every (lo, hi) pair becomes the location's value (near the middle of the
    range) plus a clip's jitter."""
    if isinstance(spec, dict):
        return {k: _draw(v, loc_rng, clip_rng) for k, v in spec.items()}
    if len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        lo, hi = spec
        v = (lo + hi) / 2 + _LOCATION_SPREAD * (hi - lo) * (loc_rng.uniform() - 0.5)
        v += _CLIP_SPREAD * (hi - lo) * clip_rng.standard_normal()
        return float(np.clip(v, lo, hi))
    return tuple(_draw(v, loc_rng, clip_rng) for v in spec)


def _render(p: dict, n: int, sr: int, rng) -> np.ndarray:
    """Mix one clip from sampled recipe parameters `p`; returns float32 at the clip's level."""
    t = np.arange(n) / sr
    x = _shaped_noise(rng, n, sr, *p["bg"], eq=p["eq"])
    if "waves" in p:
        rate, depth = p["waves"]
        swell = (0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))) ** 2
        x *= 1 - depth + depth * 2 * swell * (1 + 0.2 * _smooth(rng, n, sr, 0.7))
    if "tone" in p:
        *shape, level = p["tone"]
        x += 10 ** (level / 20) * _tone(rng, n, sr, *shape)
    if "wind" in p:
        gusts = np.exp(1.2 * _smooth(rng, n, sr, rng.uniform(0.4, 1.0)))
        x += 10 ** (p["wind"] / 20) * gusts * _shaped_noise(rng, n, sr, -8, 150, 6)
    if "traffic" in p:
        rate, level = p["traffic"]
        onsets = rng.uniform(-2.0, n / sr + 2.0, rng.poisson(rate * (n / sr + 4.0)))
        widths = rng.uniform(0.5, 1.5, len(onsets))
        env = 0.15 + np.exp(-0.5 * ((t[:, None] - onsets) / widths) ** 2).sum(axis=1)
        x += 10 ** (level / 20) * env * _shaped_noise(rng, n, sr, -6, rng.uniform(250, 600), 6)
    if "music" in p:
        x += 10 ** (p["music"] / 20) * _music(rng, n, sr)
    for kind, (rate, level, scale) in p.get("events", {}).items():
        for start in np.sort(rng.integers(0, n, rng.poisson(rate * n / sr))):
            make, offset = _EVENTS[kind]
            ev = make(rng, sr, scale)[: n - start]
            x[start : start + len(ev)] += 10 ** ((level + offset) / 20) * ev
    x *= 10 ** (p["level"] / 20) / (np.sqrt(np.mean(x**2)) + 1e-12)
    peak = np.abs(x).max()
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32)


def _safe(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _clip(cfg: SynthConfig, seed: int, c: int, i: int) -> SynthClip:
    """Clip `i` of class `c`; it belongs to location i % locations_per_class."""
    loc, k = i % cfg.locations_per_class, i // cfg.locations_per_class
    label = SCENE_CLASSES[c]
    loc_rng = np.random.default_rng(np.random.SeedSequence([seed, 0, c, loc]))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, c, loc, k]))
    recipe = dict(_RECIPES[label])
    recipe.setdefault("level", _DEFAULT_LEVEL)
    recipe["eq"] = _EQ
    p = _draw(recipe, loc_rng, rng)
    n = int(round(rng.uniform(cfg.min_seconds, cfg.max_seconds) * cfg.sample_rate))
    location = f"{_LOC_PREFIX[c]}{loc:03d}"
    name = f"audio/{_safe(label)}_{location}_{k:02d}.wav"
    return SynthClip(name, label, location, _render(p, n, cfg.sample_rate, rng))


def iter_clips(cfg: SynthConfig, seed: int) -> Iterator[SynthClip]:
    """Yield the data set's clips one at a time (class by class); see `generate`."""
    for c in range(len(SCENE_CLASSES)):
        for i in range(cfg.clips_per_class):
            yield _clip(cfg, seed, c, i)


def generate(cfg: SynthConfig, seed: int) -> list[SynthClip]:
    """All clips of the data set; the same (cfg, seed) gives bit-identical audio."""
    return list(iter_clips(cfg, seed))


def _eval_locations(cfg: SynthConfig, seed: int) -> set[str]:
    """About `eval_fraction` of each class's locations (at least one, never all), seeded."""
    chosen = set()
    n_eval = min(cfg.locations_per_class - 1, max(1, round(cfg.eval_fraction * cfg.locations_per_class)))
    for c in range(len(SCENE_CLASSES)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2, c]))
        chosen |= {f"{_LOC_PREFIX[c]}{j:03d}" for j in rng.permutation(cfg.locations_per_class)[:n_eval]}
    return chosen


# ---- on disk ----


def _build(root: Path, cfg: SynthConfig, seed: int) -> None:
    import soundfile as sf

    (root / "audio").mkdir()
    (root / "evaluation_setup").mkdir()
    evaluate = _eval_locations(cfg, seed)
    meta, train, test = [], [], []
    for clip in iter_clips(cfg, seed):
        sf.write(root / clip.name, clip.audio, cfg.sample_rate, subtype="PCM_16", format="WAV")
        meta.append(f"{clip.name}\t{clip.label}\t{clip.location}\n")
        (test if clip.location in evaluate else train).append((clip.name, clip.label))
    (root / "meta.txt").write_text("".join(meta))
    setup = root / "evaluation_setup"
    (setup / "fold1_train.txt").write_text("".join(f"{f}\t{lab}\n" for f, lab in train))
    (setup / "fold1_evaluate.txt").write_text("".join(f"{f}\t{lab}\n" for f, lab in test))
    (setup / "fold1_test.txt").write_text("".join(f"{f}\n" for f, _ in test))
    info = {"generator": "sceneclf.synth", "version": SYNTH_VERSION, "seed": seed, "config": asdict(cfg)}
    (root / DONE).write_text(json.dumps(info, sort_keys=True) + "\n")  # written last


def _write(out_dir: Path, cfg: SynthConfig, seed: int, replace: bool) -> None:
    """Build in a temporary sibling folder, then rename it into place."""
    if out_dir.exists() and not (out_dir / DONE).is_file() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: exists and is not a synthetic data set; choose a new or empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        _build(tmp, cfg, seed)
        if replace and (out_dir / DONE).is_file():
            old = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.old"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)  # fails if a non-empty out_dir appeared meanwhile
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(out_dir: Path, cfg: SynthConfig = SynthConfig(), seed: int = 0) -> Path:
    """Write the data set as 16-bit WAV files plus a TUT Acoustic Scenes 2017 manifest.

    Layout: `audio/*.wav`, `meta.txt` (file, label, location), `evaluation_setup/fold1_train.txt`,
    `fold1_evaluate.txt` (file, label) and `fold1_test.txt` (file); the fold is split by location.
    A previous synthetic data set in `out_dir` is replaced; any other non-empty folder is refused.
    The same (cfg, seed) writes the same bytes.
    """
    out_dir = Path(out_dir)
    _write(out_dir, cfg, seed, replace=True)
    return out_dir


def dataset_key(cfg: SynthConfig, seed: int) -> str:
    """A short hash naming the data set made from (cfg, seed) by this generator version."""
    blob = json.dumps({"version": SYNTH_VERSION, "seed": seed, "config": asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_dataset(cache_dir: Path, cfg: SynthConfig = SynthConfig(), seed: int = 0) -> Path:
    """`cache_dir/synth-<hash>`, generated first if no complete copy is there."""
    path = Path(cache_dir) / f"synth-{dataset_key(cfg, seed)}"
    if (path / DONE).is_file():
        return path
    try:
        _write(path, cfg, seed, replace=False)
    except OSError:
        if not (path / DONE).is_file():  # not another process finishing first
            raise
    return path
