"""Sound sources for the synthetic scenes (`sceneclf.data.synth`): coloured and shaped noise, smooth
random modulation, drifting harmonic tones, music, and short events (birds, steps, doors, ...).

Each source returns float64 samples; `rng` is the clip's numpy Generator, so a clip is a pure
function of its seed.
"""

from __future__ import annotations

import math

import numpy as np


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


def shaped_noise(rng, n: int, sr: int, tilt: float, fc: float, gain_db: float, eq=()):
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


def smooth(rng, n: int, sr: int, knot_s: float):
    """A smooth random curve in [-1, 1]: cosine interpolation of random knots `knot_s` apart."""
    knots = rng.uniform(-1.0, 1.0, int(n / (knot_s * sr)) + 2)
    pos = np.arange(0, len(knots) - 1, 1 / 16)  # 16 points per knot, then linear to full rate
    i = pos.astype(np.int64)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return np.interp(np.arange(n) / (knot_s * sr), pos, knots[i] * (1 - w) + knots[i + 1] * w)


def tone(rng, n, sr, f0, drift, n_harm, rolloff):
    """Engine, motor or hum: harmonics of a slowly drifting fundamental, with a little flutter."""
    f = f0 * np.exp(drift * smooth(rng, n, sr, rng.uniform(0.5, 1.5)))
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
    x *= 1 + 0.15 * smooth(rng, n, sr, 0.2)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def music(rng, n, sr):
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
    x = np.diff(rng.standard_normal(m + 1)) * (1 + smooth(rng, m, sr, 0.04)) * np.hanning(m)
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
EVENTS = dict(bird=(_bird, -4), steps=(_steps, 10), door=(_door, 6), typing=(_typing, 10), beep=(_beep, -2),
               clack=(_clack, 12), babble=(_babble, 14), clink=(_clink, 4), tick=(_tick, -6), squeal=(_squeal, 0),
               horn=(_horn, 6), rustle=(_rustle, 4), hiss=(_hiss, 8), bark=(_bark, 0))  # fmt: skip
