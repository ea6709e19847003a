"""A second data set for bench quality, made by a recipe the default generator does not use:
eight classes of rhythm, each a train of short noise bursts (regular at four rates, pairs, an
accelerating train, a random one), heard through one device per recording location (a spectral
tilt, one peaking band, a gain and a background hiss drawn from distributions all classes share).

Written as WAV files with a CSV manifest (path, label, group = location, split), a layout the
default data do not use either; the test split holds whole locations.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

RATE = 16000
SECONDS = 4.0
CLASSES = ("regular_2hz", "regular_3hz", "regular_5hz", "regular_8hz", "pairs_2hz", "pairs_4hz",
           "accelerating", "random_4hz")
LOCATIONS = 10
CLIPS_PER_LOCATION = 6
TEST_LOCATIONS = 3
VERSION = 1


def onsets(label: str, rng: np.random.Generator) -> np.ndarray:
    """Burst onsets in seconds for one clip of `label` (a random phase each clip)."""
    kind, _, rate = label.partition("_")
    if kind == "regular":
        hz = float(rate.rstrip("hz"))
        return np.arange(rng.uniform(0, 1 / hz), SECONDS, 1 / hz)
    if kind == "pairs":
        hz = float(rate.rstrip("hz"))
        first = np.arange(rng.uniform(0, 1 / hz), SECONDS, 1 / hz)
        return np.sort(np.concatenate([first, first + 0.08]))
    if kind == "accelerating":
        gaps = np.geomspace(0.5, 0.08, 24)
        return np.cumsum(gaps) - gaps[0] + rng.uniform(0, 0.3)
    return np.sort(rng.uniform(0, SECONDS, rng.poisson(4 * SECONDS)))


def coloured(x: np.ndarray, tilt_db: float, peak_hz: float, peak_db: float) -> np.ndarray:
    """`x` through a device: `tilt_db` per octave about 1 kHz and a one-octave peaking band."""
    spec = np.fft.rfft(x)
    f = np.maximum(np.fft.rfftfreq(len(x), 1 / RATE), 20.0)
    octaves = np.log2(f / 1000.0)
    db = tilt_db * octaves + peak_db * np.exp(-0.5 * (np.log2(f / peak_hz) / 0.5) ** 2)
    return np.fft.irfft(spec * 10 ** (db / 20), len(x))


def clip(label: str, device: dict, rng: np.random.Generator) -> np.ndarray:
    n = int(SECONDS * RATE)
    x = np.zeros(n)
    centre = rng.uniform(800, 3000)  # the bursts' band: the same distribution for every class
    for t in onsets(label, rng):
        start = int(t * RATE)
        if start >= n:
            break
        length = min(int(0.03 * RATE), n - start)
        burst = rng.standard_normal(length) * np.hanning(length)
        x[start:start + length] += burst
    band = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / RATE)
    x = np.fft.irfft(band * np.exp(-0.5 * (np.log2(np.maximum(f, 20) / centre) / 1.0) ** 2), n)
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    x += device["hiss"] * rng.standard_normal(n)
    x = coloured(x, device["tilt"], device["peak_hz"], device["peak_db"])
    x *= 10 ** (device["gain_db"] / 20) / (np.sqrt(np.mean(x**2)) + 1e-12)
    return np.clip(x, -0.98, 0.98).astype(np.float32)


def write_second_data_set(root: Path, seed: int = 0) -> Path:
    """Write the data set under `root` once (a DONE file marks it complete); returns `root`."""
    import soundfile as sf

    root = Path(root)
    done = root / "DONE"
    info = json.dumps({"version": VERSION, "seed": seed})
    if done.is_file() and done.read_text() == info:
        return root
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for c, label in enumerate(CLASSES):
        test = set(np.random.default_rng([seed, 1, c]).permutation(LOCATIONS)[:TEST_LOCATIONS])
        for loc in range(LOCATIONS):
            loc_rng = np.random.default_rng([seed, 2, c, loc])
            device = {"tilt": loc_rng.uniform(-4, 2), "peak_hz": loc_rng.uniform(300, 5000),
                      "peak_db": loc_rng.uniform(-9, 9), "hiss": loc_rng.uniform(0.05, 0.5),
                      "gain_db": loc_rng.uniform(-30, -12)}
            for k in range(CLIPS_PER_LOCATION):
                name = f"audio/{label}-l{loc:02d}-{k}.wav"
                sf.write(root / name, clip(label, device, np.random.default_rng([seed, 3, c, loc, k])), RATE)
                rows.append([name, label, f"{label}-l{loc:02d}", "test" if loc in test else "train"])
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group", "split"])
        writer.writerows(rows)
    done.write_text(info)
    return root
