"""From a data set on disk to mel spectrograms per split, computed once into one shared store.

    Manifest --decode, resample, mel (worker processes)--> MelStore --> MelSet per split

A second run decodes nothing and computes no STFT: the store is keyed by the data set and the
settings that shape the mels, each clip in it by its file's identity, and a new file is appended.
Every process that trains maps the same store. Epochs then cost model time only.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sceneclf.atomic import sweep_stale
from sceneclf.data.audio import AudioConfig
from sceneclf.data.devices import DeviceAccuracy, device_accuracy
from sceneclf.data.manifest import Manifest, load_manifest
from sceneclf.data.melset import MelSet
from sceneclf.data.pool import ProgressLine, compute_mels, requested_workers
from sceneclf.data.store import STORE_VERSION, MelStore
from sceneclf.data.synth import SynthConfig, default_dataset
from sceneclf.errors import ConfigError, DataError
from sceneclf.model.frontend import FeatureConfig


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
    computed: int = 0  # clips decoded and added to the store by this call
    paths: dict[str, list[Path]] = field(default_factory=dict)  # each split's clips, in its MelSet's order

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    def devices(self, split: str, logits: torch.Tensor,
                heard: tuple[str, ...] = ("train",)) -> DeviceAccuracy | None:
        """Accuracy by recording device of `split`'s clips (`logits`: the model's, in its order),
        where the file names tell the device (`data.devices`); the devices of the `heard` splits
        count as heard in training."""
        correct = (logits.argmax(1) == self.splits[split].labels).tolist()
        trained = [p for name in heard for p in self.paths.get(name, [])]
        return device_accuracy(self.paths.get(split, []), correct, trained)


def resolve_data(cfg: DataConfig, cache_dir: Path) -> Path:
    """The data folder: the one given, or the synthetic default generated into the cache."""
    if cfg.data is not None:
        return Path(cfg.data)
    synth = SynthConfig(clips_per_class=cfg.synth_clips_per_class)
    return default_dataset(cache_dir / "datasets", synth, seed=cfg.synth_seed)


def prepare(cfg: DataConfig, audio: AudioConfig, features: FeatureConfig, cache_dir: Path,
            skip_bad: bool = False, progress: Callable[[int, int], None] | None = None,
            workers: int | None = None, waves: bool = False) -> PreparedData:
    """Load the manifest and the mel spectrogram of every clip from the data set's store, first
    computing (in `workers` processes) those it lacks.

    A file that cannot be decoded raises DataError naming it, unless `skip_bad`: then it is
    dropped and listed in `skipped`. `workers` None: `$SCENECLF_PREP_WORKERS` (a number, or
    `auto`: the cores, fewer for a few clips; the CLI's default), else this process alone.
    `progress(done, total)` follows the clips computed; None: a line on stderr when it is a
    terminal. `waves`: also cache the decoded waveforms (one .npy per clip).
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
    mel_settings = (asdict(audio), features.n_fft, features.hop_length, features.n_mels)
    store_key = hashlib.sha1(repr((STORE_VERSION, str(manifest.root), mel_settings)).encode()).hexdigest()
    store = MelStore(Path(cache_dir) / "mels" / store_key[:16], features.n_mels).load()
    keys = [clip_key(clip.path) for clip in manifest.clips]
    errors: dict[int, str] = {}
    computed = 0
    if any(k not in store for k in keys):
        with store.appending(on_wait=_say_waiting if sys.stderr.isatty() else None) as appender:  # re-reads the index
            todo = [i for i, k in enumerate(keys) if k not in store]
            if todo:
                n = workers or requested_workers(len(todo))
                if progress is None and sys.stderr.isatty():
                    progress = ProgressLine(sys.stderr)
                paths = [manifest.clips[i].path for i in todo]
                results = compute_mels(paths, audio, features, n, Path(cache_dir) if waves else None, progress)
                with closing(results):
                    for j, result in results:
                        if isinstance(result, str):
                            if not skip_bad:
                                raise DataError(result)
                            errors[todo[j]] = result
                        else:
                            appender.add(keys[todo[j]], result)
                computed = appender.added
    index = {c: i for i, c in enumerate(manifest.classes)}
    per_split: dict[str, tuple[list[torch.Tensor], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    paths: dict[str, list[Path]] = {s: [] for s in per_split}
    digest = hashlib.sha1(repr(mel_settings).encode())
    for i, (clip, key) in enumerate(zip(manifest.clips, keys)):
        if i in errors:
            continue
        mel = store.mel(key)
        mels, labels = per_split[clip.split or "train"]
        paths[clip.split or "train"].append(clip.path)
        mels.append(mel)
        labels.append(index[clip.label])
        digest.update(repr((clip.path.name, clip.label, clip.split, clip.group, tuple(mel.shape))).encode())
    splits = {s: MelSet(m, torch.tensor(l, dtype=torch.long)) for s, (m, l) in per_split.items()}
    if len(splits["train"]) == 0:
        raise DataError(f"{root}: no usable training clips")
    return PreparedData(manifest, splits, features.frames(audio.clip_samples), [errors[i] for i in sorted(errors)],
                        digest.hexdigest()[:16], computed, paths)


def _say_waiting() -> None:
    print("waiting for another process that prepares this data set ...", file=sys.stderr, flush=True)


def clip_key(path: Path) -> str:
    """A clip's key in its store: the file's identity (resolved path, size, modification time)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return hashlib.sha1(repr((str(path.resolve()), st.st_size, st.st_mtime_ns)).encode()).hexdigest()[:24]


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
