"""`sceneclf predict`: class scores for recordings of any length, rate and channel count.

Each file is decoded window by window (so an hour-long recording never sits in memory whole),
downmixed and resampled to the model's rate. A recording longer than the model's clip length is
cut into windows of that length with 50 % overlap (the last window ends at the recording's end);
a shorter one is zero-padded (centred), as in training. The softmax probabilities of the windows
are averaged. A file that cannot be decoded gets an error row; the others go on.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from sceneclf.data.audio import AudioConfig, check_values, fit_length
from sceneclf.data.melset import window_starts
from sceneclf.errors import DataError, first_line
from sceneclf.model.cnn import SceneClassifier

FORMATS = ("table", "json", "csv")
# File name endings looked for inside folders (files named on the command line are always tried).
AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                  ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".wv", ".voc", ".sd2", ".htk"}


@dataclass
class FilePrediction:
    path: str
    probabilities: np.ndarray | None = None  # (C,) mean of the windows' softmax
    seconds: float = 0.0
    windows: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (start s, probabilities)
    error: str | None = None

    def top(self, classes: tuple[str, ...], k: int, probs: np.ndarray | None = None) -> list[tuple[str, float]]:
        p = self.probabilities if probs is None else probs
        order = np.argsort(-p, kind="stable")[:k]
        return [(classes[i], float(p[i])) for i in order]


def find_audio(paths: Iterable[Path]) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for each file given and each audio file under each folder given (sorted,
    recursive); (folder, reason) for a folder without audio files."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                yield path, f"no audio files in folder (looked for {', '.join(sorted(AUDIO_SUFFIXES))})"
            yield from ((p, None) for p in found)
        elif path.exists():
            yield path, None
        else:
            yield path, "no such file or folder"


def read_windows(path: Path, cfg: AudioConfig,
                 batch: int = 16) -> Iterator[tuple[float, list[float], torch.Tensor]]:
    """Decode `path` into batches of windows: (the recording's length in seconds, the windows'
    start times in seconds, (B, clip_samples) mono float32 at `cfg.sample_rate`).

    Each batch's stretch of the file is read and resampled once (with a margin, so windows near
    the stretch's edges see the same filter context as in the middle), then cut into windows.
    Raises DataError naming the file."""
    length, rate = cfg.clip_samples, cfg.sample_rate
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot decode audio ({first_line(exc)})") from None
    with f:
        src_rate, frames = f.samplerate, f.frames
        if frames <= 0:
            raise DataError(f"{path}: audio file holds no samples")
        n = int(math.ceil(frames * rate / src_rate))
        starts = window_starts(n, length)
        resample = _resampler(src_rate, rate)
        margin = 0 if resample is None else RESAMPLE_MARGIN * int(math.ceil(src_rate / rate))
        step = src_rate // math.gcd(src_rate, rate)  # source frames per whole number of output samples
        for i in range(0, len(starts), batch):
            group = starts[i:i + batch]
            src_start = max(0, int(math.floor(group[0] * src_rate / rate)) - margin)
            src_start -= src_start % step  # on the resampling grid: output samples land where they would
            src_end = min(frames, int(math.ceil((group[-1] + length) * src_rate / rate)) + margin)
            try:
                f.seek(src_start)
                data = f.read(frames=src_end - src_start, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
                raise DataError(f"{path}: cannot decode audio at {group[0] / rate:.1f} s ({first_line(exc)})") from None
            if data.size == 0:
                raise DataError(f"{path}: no samples could be read at {group[0] / rate:.1f} s")
            check_values(path, data)
            wave = torch.from_numpy(data.mean(axis=1))
            offset = src_start
            if resample is not None:
                wave = resample(wave)
                offset = src_start * rate // src_rate  # exact: src_start is on the grid
            wave = wave.numpy()
            chunk = [fit_length(wave[start - offset:start - offset + length], length, length) for start in group]
            yield frames / src_rate, [start / rate for start in group], torch.from_numpy(np.stack(chunk))


RESAMPLE_MARGIN = 64  # samples kept at each edge of a resampled stretch: torchaudio's sinc filter reach


@functools.lru_cache(maxsize=8)
def _resampler(src_rate: int, rate: int) -> torchaudio.transforms.Resample | None:
    """One Resample per rate pair: its filter kernel is built once, not per window."""
    return None if src_rate == rate else torchaudio.transforms.Resample(src_rate, rate)


@torch.inference_mode()
def predict_file(model: SceneClassifier, path: Path, cfg: AudioConfig, keep_windows: bool = False) -> FilePrediction:
    """Class probabilities of one file, the softmax of its windows' mean logits (as `train.score`
    scores a clip), or a FilePrediction with `error` set."""
    model.eval()
    total, count, windows, seconds = None, 0, [], 0.0
    try:
        for seconds, times, waves in read_windows(path, cfg):
            logits = model(waves).float()
            total = logits.sum(0) if total is None else total + logits.sum(0)
            count += len(logits)
            if keep_windows:
                windows.extend(zip(times, torch.softmax(logits, dim=1).numpy()))
    except DataError as exc:
        return FilePrediction(str(path), error=str(exc).removeprefix(f"{path}: "))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        return FilePrediction(str(path), error=f"cannot decode audio ({first_line(exc)})")
    return FilePrediction(str(path), torch.softmax(total / count, dim=0).numpy(), float(seconds), windows)


def predict_paths(model: SceneClassifier, paths: Iterable[Path], cfg: AudioConfig,
                  keep_windows: bool = False) -> list[FilePrediction]:
    model = model.fused()  # BatchNorm folded into the convolutions, once for all files
    return [FilePrediction(str(p), error=reason) if reason else predict_file(model, p, cfg, keep_windows)
            for p, reason in find_audio(paths)]


# -- output --------------------------------------------------------------------------------------
def to_records(results: list[FilePrediction], classes: tuple[str, ...], k: int,
               per_window: bool = False) -> list[dict]:
    out = []
    for r in results:
        if r.error is not None:
            out.append({"file": r.path, "error": r.error})
            continue
        rec = {"file": r.path, "seconds": round(r.seconds, 3), "windows": len(r.windows) or None,
               "top": [{"label": c, "probability": p} for c, p in r.top(classes, k)]}
        if per_window:
            rec["per_window"] = [{"start": round(t, 3), "top": [{"label": c, "probability": p}
                                                                for c, p in r.top(classes, k, probs)]}
                                 for t, probs in r.windows]
        else:
            rec.pop("windows")
        out.append(rec)
    return out


def format_results(results: list[FilePrediction], classes: tuple[str, ...], k: int, fmt: str,
                   per_window: bool = False) -> str:
    k = max(1, min(k, len(classes)))
    records = to_records(results, classes, k, per_window)
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        return _csv(records, k)
    return _table(records, k)


def _csv(records: list[dict], k: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "window_start", *[f"{n}_{i}" for i in range(1, k + 1) for n in ("label", "probability")],
                "error"])
    pad = ["", ""] * k
    for rec in records:
        if "error" in rec:
            w.writerow([rec["file"], "", *pad, rec["error"]])
            continue
        rows = [("", rec["top"])] + [(f"{win['start']:.3f}", win["top"]) for win in rec.get("per_window", [])]
        for start, top in rows:
            cells = [x for t in top for x in (t["label"], f"{t['probability']:.4f}")]
            w.writerow([rec["file"], start, *cells, *pad[len(cells):], ""])
    return buf.getvalue().rstrip("\n")


def _table(records: list[dict], k: int) -> str:
    lines = []
    for rec in records:
        if "error" in rec:
            lines.append(f"{rec['file']}  ERROR: {rec['error']}")
            continue
        top = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in rec["top"])
        lines.append(f"{rec['file']}  ({rec['seconds']:.1f} s)  {top}")
        for win in rec.get("per_window", []):
            best = win["top"][0]
            lines.append(f"    {win['start']:8.2f} s  {best['label']} {best['probability']:.3f}")
    return "\n".join(lines)
