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
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sceneclf.data.sounds import EVENTS, music, shaped_noise, smooth, tone
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
    x = shaped_noise(rng, n, sr, *p["bg"], eq=p["eq"])
    if "waves" in p:
        rate, depth = p["waves"]
        swell = (0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))) ** 2
        x *= 1 - depth + depth * 2 * swell * (1 + 0.2 * smooth(rng, n, sr, 0.7))
    if "tone" in p:
        *shape, level = p["tone"]
        x += 10 ** (level / 20) * tone(rng, n, sr, *shape)
    if "wind" in p:
        gusts = np.exp(1.2 * smooth(rng, n, sr, rng.uniform(0.4, 1.0)))
        x += 10 ** (p["wind"] / 20) * gusts * shaped_noise(rng, n, sr, -8, 150, 6)
    if "traffic" in p:
        rate, level = p["traffic"]
        onsets = rng.uniform(-2.0, n / sr + 2.0, rng.poisson(rate * (n / sr + 4.0)))
        widths = rng.uniform(0.5, 1.5, len(onsets))
        env = 0.15 + np.exp(-0.5 * ((t[:, None] - onsets) / widths) ** 2).sum(axis=1)
        x += 10 ** (level / 20) * env * shaped_noise(rng, n, sr, -6, rng.uniform(250, 600), 6)
    if "music" in p:
        x += 10 ** (p["music"] / 20) * music(rng, n, sr)
    for kind, (rate, level, scale) in p.get("events", {}).items():
        for start in np.sort(rng.integers(0, n, rng.poisson(rate * n / sr))):
            make, offset = EVENTS[kind]
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
