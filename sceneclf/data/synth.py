"""Procedural 15-class acoustic scene data set: the tool's embedded default data.

`generate(cfg, seed)` is pure: it returns float32 clips and nothing touches the disk.
`write_dataset` puts them on disk as 16-bit WAV files with a manifest in the TUT Acoustic
Scenes 2017 layout, so the real loading path is the one exercised; `default_dataset` caches
one such folder per (config, seed).

Classes come in four confusable groups (vehicles, indoors, streets, nature). Within a group every
class draws the same sources from the same distributions: a band-noise texture, harmonic chirps
and noise impacts in the group's frequency bands. What tells the classes of a group apart is
time-frequency structure only: chirps rise or fall (one is the other time-reversed), impacts
start sharply and decay or swell and stop sharply (again time-reversed), and the texture swells
slowly or flutters fast. Time reversal keeps every frame's spectrum, so the classes of a group
share their average spectra and the spread of each band over time. Every recording location
colours its clips with a room (spectral tilt, peaking EQs), a gain and a background noise colour,
drawn from distributions shared by all classes. Nine recording devices, as in TAU Urban Acoustic
Scenes 2020 Mobile, add their own response: training locations are heard mostly through the flat
device "a"; validation locations through a, b, c and s1-s3 alike, so that choosing a model sees how
it does on devices the training never heard; test locations through a, b, c and s4-s6 alike, so
half the test is heard by neither training nor model choice, even by a model refitted on train
and val. Each response departs from flat by a set amount (the phones b and c less than the
simulated s1-s6), so which devices a split holds does not decide how hard it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sceneclf.data.sounds import band_db, chirp, colour_db, fast_len, impact, modulation, noise_spectrum, rms
from sceneclf.errors import ConfigError, DataError

__all__ = [
    "DEVICES",
    "SCENE_CLASSES",
    "SYNTH_VERSION",
    "TEST_DEVICES",
    "TRAIN_DEVICES",
    "VAL_DEVICES",
    "SynthClip",
    "SynthConfig",
    "dataset_key",
    "default_dataset",
    "device_response",
    "generate",
    "iter_clips",
    "location_roles",
    "write_dataset",
]

SCENE_CLASSES: tuple[str, ...] = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store",
    "home", "library", "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip
SYNTH_VERSION = 7  # bump when the recipes change: it invalidates cached data sets
DONE = "DONE"
# Prefixes of location ids, one per class in SCENE_CLASSES order.
_LOC_PREFIX = ("be", "bu", "ca", "cr", "ci", "fo", "gr", "ho", "li", "me", "of", "pa", "re", "tr", "tm")

# Groups: the sources every class of the group shares (every (lo, hi) pair is a range a location
# draws from, log-uniformly for frequencies):
#   texture: band noise (centre Hz, width octaves); chirp: (lowest f0 Hz, span octaves, seconds,
#   harmonics); impact: band (centre Hz, width octaves), decay time constant s
_GROUPS: dict[str, dict] = {
    "vehicle": dict(texture=((80, 160), 1.2), chirp=((50, 90), (1.0, 1.8), (0.4, 0.8), 6),
                    impact=((150, 400), 1.0, (0.1, 0.25))),
    "street": dict(texture=((300, 600), 1.2), chirp=((250, 450), (0.8, 1.5), (0.4, 0.8), 4),
                   impact=((700, 1400), 1.0, (0.08, 0.2))),
    "indoor": dict(texture=((800, 1500), 1.0), chirp=((600, 1000), (0.8, 1.5), (0.3, 0.6), 3),
                   impact=((2000, 4000), 1.0, (0.06, 0.15))),
    "nature": dict(texture=((2000, 4000), 1.0), chirp=((2000, 3500), (0.7, 1.1), (0.2, 0.4), 1),
                   impact=((4000, 7000), 0.8, (0.05, 0.12))),
}  # fmt: skip
# Each class: its group, then what sets it apart within the group: chirps rise (else fall),
# impacts strike (else swell), the texture flutters (else swells slowly). No two classes of a
# group share all three.
_CLASSES: dict[str, tuple[str, bool, bool, bool]] = {
    "bus": ("vehicle", True, True, False), "car": ("vehicle", False, False, False),
    "train": ("vehicle", False, True, True), "tram": ("vehicle", True, False, True),
    "cafe/restaurant": ("indoor", False, True, True), "grocery_store": ("indoor", True, True, True),
    "home": ("indoor", True, True, False), "library": ("indoor", False, False, False),
    "office": ("indoor", True, False, True),
    "city_center": ("street", True, True, False), "metro_station": ("street", False, True, True),
    "residential_area": ("street", True, False, True),
    "beach": ("nature", False, True, True), "forest_path": ("nature", True, False, True),
    "park": ("nature", True, True, False),
}  # fmt: skip
# Shared by every class: the recording location's device, room, gain and background, and the
# mix of the sources (levels in dB re the texture's RMS; rates per second).
_LOCATION = dict(
    level=(-34.0, -18.0),  # clip RMS, dBFS
    tilt=(-2.0, 2.0),  # room, dB/octave about 1 kHz
    eq=(((100, 6000), (0.3, 1.0), (-6.0, 6.0)),) * 2,  # peaking EQs: centre Hz, width octaves, gain dB
    bg_tilt=(-8.0, -2.0), bg_peak=((80, 4000), (0.5, 1.5), (0.0, 12.0)), bg_level=(-12.0, 0.0),
    chirp=((1.0, 2.0), (-4.0, 4.0)), impact=((1.0, 2.0), (2.0, 10.0)),  # (rate, level)
    depth=(0.5, 0.9), slow=(0.3, 1.0), fast=(4.0, 7.0),  # texture swell depth and rates Hz
)  # fmt: skip
_CLIP_JITTER = 0.06  # a clip's parameters: its location's, plus this fraction of the range (1 sd)
# Recording devices as in TAU Urban Acoustic Scenes 2020 Mobile: "a" is flat and records most
# training clips; "s1".."s6" are never heard in training.
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
TRAIN_DEVICES = dict(a=0.9, b=0.05, c=0.05)  # calibrated: augmentation must pay on unheard devices
VAL_DEVICES = DEVICES[:6]  # s4-s6 stay unheard until the test split
TEST_DEVICES = DEVICES[:3] + DEVICES[6:]  # half unheard even by a model refitted on train and val
# Calibrated (bench/calibrate_synth.py): a CNN without augmentation loses points on unheard devices.
_DEVICE = dict(
    tilt=(-8.0, 8.0),  # dB/octave about 1 kHz
    eq=(((150, 6000), (0.3, 1.0), (-20.0, 20.0)),) * 4,
    low_cut=(100, 600), high_cut=(3000, 7500),  # Hz, where the response is 3 dB down
)  # fmt: skip
_DEVICE_GRID = np.geomspace(50.0, 8000.0, 64)  # where a response's departure from flat is measured
_DEVICE_SD = dict(b=8.0, c=8.0, s=16.0)  # dB, standard deviation over _DEVICE_GRID


@dataclass(frozen=True)
class SynthConfig:
    """Size and shape of the synthetic data set."""

    clips_per_class: int = 100
    locations_per_class: int = 20
    sample_rate: int = 16000
    min_seconds: float = 3.0
    max_seconds: float = 4.0
    eval_fraction: float = 0.2  # share of each class's locations in fold1_evaluate
    val_fraction: float = 0.2  # share in fold1_validate; 0 leaves validation to be carved from train

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
        need(isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1 - self.eval_fraction,
             "val_fraction", f"a number in [0, 1 - eval_fraction ({1 - self.eval_fraction:g}))")  # fmt: skip


@dataclass(frozen=True)
class SynthClip:
    """One generated clip: `name` is its path relative to the data set folder."""

    name: str
    label: str
    location: str
    audio: np.ndarray  # float32, mono, in [-1, 1]
    device: str = DEVICES[0]


# ---- recipes to clips ----


def _draw(spec, loc_rng, clip_rng):
    """Every (lo, hi) pair becomes the location's value, uniform in the range (log-uniform for
    frequencies, lo >= 50), plus a clip's jitter; other numbers pass through."""
    if isinstance(spec, dict):
        return {k: _draw(v, loc_rng, clip_rng) for k, v in spec.items()}
    if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        lo, hi = spec
        log = isinstance(lo, int) and lo >= 50  # frequency ranges are written as integers
        lo, hi = (np.log(lo), np.log(hi)) if log else (lo, hi)
        v = loc_rng.uniform(lo, hi) + _CLIP_JITTER * (hi - lo) * clip_rng.standard_normal()
        v = float(np.clip(v, lo, hi))
        return float(np.exp(v)) if log else v
    if isinstance(spec, tuple):
        return tuple(_draw(v, loc_rng, clip_rng) for v in spec)
    return spec


def _place(rng, n: int, sr: int, rate: float, make, amp: float) -> np.ndarray:
    """A track of n samples with events from `make()` at Poisson times, `rate` per second."""
    track = np.zeros(n)
    for start in rng.integers(-sr // 4, n, rng.poisson(rate * (n / sr + 0.25))):
        ev = make() * amp * rng.uniform(0.5, 1.0)
        lo, hi = max(start, 0), min(start + len(ev), n)
        if hi > lo:
            track[lo:hi] += ev[lo - start : hi - start]
    return track


def _unit_gain(db: np.ndarray) -> np.ndarray:
    """Magnitude response from dB, scaled so that white noise keeps its power."""
    g = 10 ** (db / 20)
    return g / np.sqrt(np.mean(g**2))


def device_response(f: np.ndarray, seed: int, device: str) -> np.ndarray:
    """Magnitude response of a recording device at frequencies `f`: fixed by (seed, device)."""
    if device == DEVICES[0]:
        return np.ones_like(f)
    d = DEVICES.index(device)
    spec = _draw(_DEVICE, *(np.random.default_rng(np.random.SeedSequence([seed, 3, d, k])) for k in (0, 1)))

    def db(f: np.ndarray) -> np.ndarray:
        high_pass, low_pass = 1 + (spec["low_cut"] / np.maximum(f, 1e-3)) ** 4, 1 + (f / spec["high_cut"]) ** 8
        return colour_db(f, spec["tilt"], spec["eq"]) - 10 * np.log10(high_pass * low_pass)

    # Every device departs from flat by its set amount, so the draw does not decide how hard a split is.
    shape = db(_DEVICE_GRID)
    return 10 ** (db(f) * (_DEVICE_SD[device[0]] / shape.std()) / 20)


def _render(g: dict, loc: dict, attrs: tuple, n: int, sr: int, rng, device: np.ndarray) -> np.ndarray:
    """Mix one clip from its group's sources `g`, its location `loc` and the class's attributes;
    returns float32 at the clip's level."""
    rising, strikes, flutters = attrs
    m = fast_len(n)
    f = np.fft.rfftfreq(m, 1 / sr)
    centre, width = g["texture"]
    texture = np.fft.irfft(noise_spectrum(rng, m) * _unit_gain(band_db(f, centre, width, 30.0)), m)[:n]
    rate = loc["fast"] if flutters else loc["slow"]
    texture *= modulation(rng, n, sr, rate, loc["depth"]) / rms(texture)

    f_lo, span, secs, harm = g["chirp"]
    rate, level = loc["chirp"]

    def one_chirp():
        lo = f_lo * rng.uniform(0.8, 1.25)
        hi = min(lo * 2**span, 0.4 * sr)  # the fundamental stays below the Nyquist frequency
        x = chirp(rng, sr, min(lo, hi / 1.5), hi, secs * rng.uniform(0.8, 1.25), harm)
        return x if rising else x[::-1]

    chirps = _place(rng, n, sr, rate, one_chirp, 10 ** (level / 20) * 3.0)

    centre, width, tau = g["impact"]
    rate, level = loc["impact"]

    def one_impact():
        decay = tau * rng.uniform(0.8, 1.25)
        x = impact(rng, sr, decay, 5 * decay)
        return x if strikes else x[::-1]

    hits = _place(rng, n, sr, rate, one_impact, 10 ** (level / 20) * 4.0)
    # The impacts' band filter is zero-phase, so it commutes with their time reversal.
    spec = np.fft.rfft(texture + chirps, m) + np.fft.rfft(hits, m) * _unit_gain(band_db(f, centre, width, 30.0))
    bg_db = colour_db(f, loc["bg_tilt"], [loc["bg_peak"]])
    spec += noise_spectrum(rng, m) * _unit_gain(bg_db) * 10 ** (loc["bg_level"] / 20)
    room = 10 ** (colour_db(f, loc["tilt"], loc["eq"]) / 20)
    spec *= room * device(f) * np.minimum(1.0, (f / 40.0) ** 2)  # and a high-pass below 40 Hz
    x = np.fft.irfft(spec, m)[:n]
    x *= 10 ** (loc["level"] / 20) / rms(x)
    peak = np.abs(x).max()
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32)


def _safe(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _clip(cfg: SynthConfig, seed: int, c: int, i: int, roles: dict[str, str]) -> SynthClip:
    """Clip `i` of class `c`; it belongs to location i % locations_per_class. Clips of test
    locations come from TEST_DEVICES alike, of val locations from VAL_DEVICES alike, others mostly
    from device "a"."""
    loc, k = i % cfg.locations_per_class, i // cfg.locations_per_class
    label = SCENE_CLASSES[c]
    location = f"{_LOC_PREFIX[c]}{loc:03d}"
    loc_rng = np.random.default_rng(np.random.SeedSequence([seed, 0, c, loc]))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, c, loc, k]))
    dev_rng = np.random.default_rng(np.random.SeedSequence([seed, 4, c, i]))
    if location in roles:
        device = str(dev_rng.choice(TEST_DEVICES if roles[location] == "test" else VAL_DEVICES))
    else:
        device = str(dev_rng.choice(list(TRAIN_DEVICES), p=list(TRAIN_DEVICES.values())))
    group, *attrs = _CLASSES[label]
    sources = _draw(_GROUPS[group], loc_rng, rng)
    where = _draw(_LOCATION, loc_rng, rng)
    n = int(round(rng.uniform(cfg.min_seconds, cfg.max_seconds) * cfg.sample_rate))
    name = f"audio/{_safe(label)}_{location}_{k:02d}_{device}.wav"
    audio = _render(sources, where, tuple(attrs), n, cfg.sample_rate, rng,
                    lambda f: device_response(f, seed, device))
    return SynthClip(name, label, location, audio, device)


def iter_clips(cfg: SynthConfig, seed: int) -> Iterator[SynthClip]:
    """Yield the data set's clips one at a time (class by class); see `generate`."""
    roles = location_roles(cfg, seed)
    for c in range(len(SCENE_CLASSES)):
        for i in range(cfg.clips_per_class):
            yield _clip(cfg, seed, c, i, roles)


def generate(cfg: SynthConfig, seed: int) -> list[SynthClip]:
    """All clips of the data set; the same (cfg, seed) gives bit-identical audio."""
    return list(iter_clips(cfg, seed))


def location_roles(cfg: SynthConfig, seed: int) -> dict[str, str]:
    """"test" for about `eval_fraction` of each class's locations (at least one), "val" for about
    `val_fraction` of them; at least one location of each class is left out for training. Seeded."""
    n = cfg.locations_per_class
    n_eval = min(n - 1, max(1, round(cfg.eval_fraction * n)))
    n_val = min(n - 1 - n_eval, round(cfg.val_fraction * n))
    roles = {}
    for c in range(len(SCENE_CLASSES)):
        order = np.random.default_rng(np.random.SeedSequence([seed, 2, c])).permutation(n)
        for k, j in enumerate(order[: n_eval + n_val]):
            roles[f"{_LOC_PREFIX[c]}{j:03d}"] = "test" if k < n_eval else "val"
    return roles


# ---- on disk ----


def _build(root: Path, cfg: SynthConfig, seed: int) -> None:
    import soundfile as sf

    (root / "audio").mkdir()
    (root / "evaluation_setup").mkdir()
    roles = location_roles(cfg, seed)
    meta, lists = [], {"train": [], "val": [], "test": []}
    for clip in iter_clips(cfg, seed):
        sf.write(root / clip.name, clip.audio, cfg.sample_rate, subtype="PCM_16", format="WAV")
        meta.append(f"{clip.name}\t{clip.label}\t{clip.location}\n")
        lists[roles.get(clip.location, "train")].append((clip.name, clip.label))
    (root / "meta.txt").write_text("".join(meta))
    setup = root / "evaluation_setup"
    for split, name in (("train", "train"), ("val", "validate"), ("test", "evaluate")):
        if lists[split]:  # no validate list: validation is carved from the train list
            (setup / f"fold1_{name}.txt").write_text("".join(f"{f}\t{lab}\n" for f, lab in lists[split]))
    (setup / "fold1_test.txt").write_text("".join(f"{f}\n" for f, _ in lists["test"]))
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
    `fold1_validate.txt`, `fold1_evaluate.txt` (file, label) and `fold1_test.txt` (file); the fold
    is split by location.
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
