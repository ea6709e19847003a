"""From a data set on disk to in-memory mel spectrograms per split, computed once and cached.

    Manifest --WaveformCache--> waveforms --mel (STFT, once)--> mel cache --> MelSet per split

A second run decodes nothing and computes no STFT: both caches are keyed by each file's identity
and the settings that shape them. Epochs then cost model time only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sceneclf.atomic import sweep_stale
from sceneclf.data.audio import AudioConfig, WaveformCache, atomic_save, file_key, load_cached
from sceneclf.data.manifest import Manifest, load_manifest
from sceneclf.data.melset import MelSet
from sceneclf.data.synth import SynthConfig, default_dataset
from sceneclf.errors import ConfigError, DataError
from sceneclf.model.frontend import FeatureConfig, FrontEnd


def default_cache_dir() -> Path:
    """`$SCENECLF_CACHE`, else `$XDG_CACHE_HOME/sceneclf`, else `~/.cache/sceneclf`."""
    if os.environ.get("SCENECLF_CACHE"):
        return Path(os.environ["SCENECLF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sceneclf"


@dataclass(frozen=True)
class DataConfig:
    data: str | None = None  # None: the embedded synthetic data set
    layout: str | None = None
    fold: int = 1
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    synth_clips_per_class: int = SynthConfig.clips_per_class
    synth_seed: int = 0


@dataclass
class PreparedData:
    manifest: Manifest
    splits: dict[str, MelSet]
    frames: int  # crop length in STFT frames
    skipped: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes


def resolve_data(cfg: DataConfig, cache_dir: Path) -> Path:
    """The data folder: the one given, or the synthetic default generated into the cache."""
    if cfg.data is not None:
        return Path(cfg.data)
    synth = SynthConfig(clips_per_class=cfg.synth_clips_per_class)
    return default_dataset(cache_dir / "datasets", synth, seed=cfg.synth_seed)


def prepare(cfg: DataConfig, audio: AudioConfig, features: FeatureConfig, cache_dir: Path,
            skip_bad: bool = False, progress: Callable[[int, int], None] | None = None) -> PreparedData:
    """Load the manifest, decode (cached) and compute mel spectrograms (cached) for every clip.

    A file that cannot be decoded raises DataError naming it, unless `skip_bad`: then it is
    dropped and listed in `skipped`.
    """
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--cache-dir {cache_dir}: cannot use it as the cache folder "
                          f"({exc.strerror or exc})") from None
    sweep_stale(cache_dir)  # temporaries of writers killed mid-write
    root = resolve_data(cfg, cache_dir)
    manifest = load_manifest(root, layout=cfg.layout, fold=cfg.fold, val_fraction=cfg.val_fraction,
                             test_fraction=cfg.test_fraction, seed=cfg.split_seed)
    if audio.sample_rate != features.sample_rate:
        raise DataError(f"audio rate {audio.sample_rate} differs from the feature rate {features.sample_rate}")
    waves = WaveformCache(cache_dir, audio)
    mel_settings = (asdict(audio), features.n_fft, features.hop_length, features.n_mels)
    frontend = FrontEnd(features).eval()
    index = {c: i for i, c in enumerate(manifest.classes)}
    per_split: dict[str, tuple[list[torch.Tensor], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    skipped: list[str] = []
    digest = hashlib.sha1(repr(mel_settings).encode())
    for n, clip in enumerate(manifest.clips, 1):
        try:
            mel = _cached_mel(clip.path, waves, frontend, mel_settings, cache_dir)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
            continue
        mels, labels = per_split[clip.split or "train"]
        mels.append(mel)
        labels.append(index[clip.label])
        digest.update(repr((clip.path.name, clip.label, clip.split, clip.group, tuple(mel.shape))).encode())
        if progress is not None:
            progress(n, len(manifest.clips))
    splits = {s: MelSet(m, torch.tensor(l, dtype=torch.long)) for s, (m, l) in per_split.items()}
    if len(splits["train"]) == 0:
        raise DataError(f"{root}: no usable training clips")
    return PreparedData(manifest, splits, features.frames(audio.clip_samples), skipped,
                        digest.hexdigest()[:16])


def check_trainable(data: PreparedData) -> None:
    """Training needs at least two classes, each with training clips left (after skipping
    unreadable files), and a validation split to choose the best epoch on."""
    root, classes = data.manifest.root, data.classes
    if len(classes) < 2:
        raise DataError(f"{root}: only {len(classes)} class ({', '.join(map(repr, classes))}); "
                        "a classifier needs at least 2")
    counts = torch.bincount(data.splits["train"].labels, minlength=len(classes)).tolist()
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        why = " (its files were skipped as unreadable)" if data.skipped else ""
        raise DataError(f"{root}: class {empty[0]!r} has no usable training clips{why}")
    if len(data.splits["val"]) == 0:
        raise DataError(f"{root}: the validation split is empty (a class needs clips from at least 2 "
                        "recording groups, or give a split column)")


def _cached_mel(path: Path, waves: WaveformCache, frontend: FrontEnd, settings: tuple,
                cache_dir: Path) -> torch.Tensor:
    key = file_key(path, "mel", settings)
    target = cache_dir / "mel" / key[:2] / f"{key}.npy"
    cached = load_cached(target)
    if cached is not None and cached.ndim == 2:
        return torch.from_numpy(cached)
    wave = torch.from_numpy(waves.load(path))
    with torch.inference_mode():
        mel = frontend.mel_power(wave.unsqueeze(0))[0].contiguous()
    atomic_save(mel.numpy(), target)
    return mel
