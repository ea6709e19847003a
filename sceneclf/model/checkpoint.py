"""Checkpoints: weights plus every config, class names and metrics, as plain types.

Loaded with `torch.load(weights_only=True)`: nothing is unpickled, and a checkpoint whose configs
fail validation is refused with a one-line message. A checkpoint rebuilds its model and front end
alone (normalisation statistics are buffers in the state dict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sceneclf.atomic import atomic_open
from sceneclf.data.audio import AudioConfig
from sceneclf.errors import ConfigError, first_line
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig

FORMAT = "sceneclf-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    model: SceneClassifier
    audio: AudioConfig
    features: FeatureConfig
    model_cfg: ModelConfig
    classes: tuple[str, ...]
    train: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def save_checkpoint(path: Path, ckpt: Checkpoint, state_dict: dict | None = None) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT, "version": VERSION,
        "state_dict": state_dict if state_dict is not None else ckpt.model.state_dict(),
        "audio": asdict(ckpt.audio), "features": asdict(ckpt.features),
        "model": asdict(ckpt.model_cfg), "classes": list(ckpt.classes),
        "train": dict(ckpt.train), "metrics": {k: float(v) for k, v in ckpt.metrics.items()},
    }
    with atomic_open(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and validate; raises ConfigError naming the file on anything unexpected."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # corrupt file, pickle that weights_only refuses, ...
        reason = first_line(exc, 160)
        raise ConfigError(f"{path}: not a readable sceneclf checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a sceneclf checkpoint")
    try:
        audio = AudioConfig(**payload["audio"])
        features = FeatureConfig(**payload["features"])
        model_cfg = ModelConfig(**payload["model"])
        if not isinstance(payload["classes"], (list, tuple)):
            raise TypeError(f"class names must be a list, not {type(payload['classes']).__name__}")
        classes = tuple(str(c) for c in payload["classes"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ConfigError(f"{path}: checkpoint configs are invalid ({exc})") from None
    if len(classes) != model_cfg.n_classes:
        raise ConfigError(f"{path}: {len(classes)} class names for a {model_cfg.n_classes}-class model")
    model = SceneClassifier(features, model_cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: weights do not fit the configs ({first_line(exc)})") from None
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ConfigError(f"{path}: NaN or infinite weights ({bad[0]})")
    model.eval()
    return Checkpoint(model, audio, features, model_cfg, classes,
                      payload.get("train", {}), payload.get("metrics", {}))
