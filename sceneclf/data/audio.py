"""Decode audio files into mono waveforms at one rate, and cache them on disk.

Reading uses soundfile (WAV, FLAC, OGG, AIFF, ...); resampling uses torchaudio. The cache
keys each file by its identity (resolved path, size, modification time) and the audio settings,
so a second run decodes nothing, and a changed file is decoded again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from sceneclf.atomic import atomic_open
from sceneclf.errors import ConfigError, DataError, first_line

MAX_SAMPLE = 1e6  # float files may exceed 1.0 (even hold raw integer values), but not by this much


@dataclass(frozen=True)
class AudioConfig:
    """How every file is turned into a waveform."""

    sample_rate: int = 16000
    clip_seconds: float = 3.0  # length the model sees (crop or pad)
    max_seconds: float = 30.0  # longer recordings keep their centre part in the cache

    def __post_init__(self) -> None:
        if not 1000 <= self.sample_rate <= 192000:
            raise ConfigError(f"sample_rate {self.sample_rate} is outside 1000..192000 Hz")
        if not 0.1 <= self.clip_seconds <= self.max_seconds:
            raise ConfigError(
                f"clip_seconds {self.clip_seconds} must lie in 0.1..max_seconds ({self.max_seconds})"
            )

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))


def check_values(path: Path, data: np.ndarray) -> None:
    """Raise DataError, naming the file, for decoded samples no spectrogram can use."""
    if not np.isfinite(data).all():
        raise DataError(f"{path}: audio holds NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_SAMPLE:  # a spectrogram of it would overflow to infinity
        raise DataError(f"{path}: sample values up to {peak:.3g}, far outside -1..1")


def read_audio(path: Path, cfg: AudioConfig) -> np.ndarray:
    """Decode `path` to a mono float32 waveform at `cfg.sample_rate`, padded to at least the clip
    length and cut to at most `cfg.max_seconds` (centre part).

    Raises DataError, naming the file, for anything that is not usable audio.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            # Read no more than needed for max_seconds (plus margin for the centre crop).
            limit = int(cfg.max_seconds * rate)
            start = max(0, (f.frames - limit) // 2) if f.frames > limit else 0
            if start:
                f.seek(start)
            data = f.read(frames=min(f.frames, limit) if f.frames > 0 else -1, dtype="float32",
                          always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot decode audio ({first_line(exc)})") from None
    if data.size == 0:
        raise DataError(f"{path}: audio file holds no samples")
    check_values(path, data)
    mono = data.mean(axis=1)
    if rate != cfg.sample_rate:
        mono = AF.resample(torch.from_numpy(mono), rate, cfg.sample_rate).numpy()
    return fit_length(mono, cfg.clip_samples, cfg.max_samples)


def fit_length(wave: np.ndarray, min_samples: int, max_samples: int) -> np.ndarray:
    """Zero-pad (centred) to `min_samples`, centre-crop to `max_samples`."""
    n = wave.shape[-1]
    if n < min_samples:
        left = (min_samples - n) // 2
        wave = np.pad(wave, (left, min_samples - n - left))
    elif n > max_samples:
        start = (n - max_samples) // 2
        wave = wave[start:start + max_samples]
    return np.ascontiguousarray(wave, dtype=np.float32)


def crop(wave: torch.Tensor, length: int, offset: int | None = None) -> torch.Tensor:
    """Crop the last axis to `length` at `offset` (centre when None); pads (centred) when shorter.
    The result always has `length` samples; an offset outside 0..n-length raises ValueError."""
    n = wave.shape[-1]
    if n < length:
        left = (length - n) // 2
        return torch.nn.functional.pad(wave, (left, length - n - left))
    if offset is None:
        offset = (n - length) // 2
    if not 0 <= offset <= n - length:
        raise ValueError(f"offset {offset} outside 0..{n - length} for {length} of {n} samples")
    return wave[..., offset:offset + length]


def file_key(path: Path, *settings: object) -> str:
    """Cache key from a file's identity (resolved path, size, mtime) and the settings that shape
    what is cached from it."""
    st = path.stat()
    text = repr((str(path.resolve()), st.st_size, st.st_mtime_ns, settings))
    return hashlib.sha1(text.encode()).hexdigest()


def atomic_save(array: np.ndarray, target: Path) -> None:
    """Write a .npy file atomically: a temporary file in the same folder, then rename."""
    with atomic_open(target) as f:
        np.save(f, array, allow_pickle=False)


def load_cached(target: Path) -> np.ndarray | None:
    """Load a cached array; a missing or corrupt entry gives None (and is removed)."""
    if not target.exists():
        return None
    try:
        return np.load(target, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        target.unlink(missing_ok=True)
        return None


class WaveformCache:
    """Decoded, resampled waveforms on disk, one .npy per (file, audio settings)."""

    def __init__(self, root: Path, cfg: AudioConfig):
        self.root = Path(root)
        self.cfg = cfg
        self.hits = 0
        self.misses = 0

    def path_for(self, path: Path) -> Path:
        key = file_key(path, "wave", asdict(self.cfg))
        return self.root / "wave" / key[:2] / f"{key}.npy"

    def load(self, path: Path) -> np.ndarray:
        target = self.path_for(path)
        wave = load_cached(target)
        if wave is not None:
            self.hits += 1
            return wave
        self.misses += 1
        wave = read_audio(path, self.cfg)
        atomic_save(wave, target)
        return wave
