"""sceneclf: the best small acoustic scene classifier that fits a parameter budget.

The library behind the `sceneclf` command: prepare a data set, fit one model, run a search,
load a checkpoint and classify recordings. Names load on first use, so importing sceneclf
does not import torch or Optuna.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sceneclf")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "DataConfig": "sceneclf.data.prepare",
    "PreparedData": "sceneclf.data.prepare",
    "prepare": "sceneclf.data.prepare",
    "FeatureConfig": "sceneclf.model.frontend",
    "ModelConfig": "sceneclf.model.cnn",
    "SceneClassifier": "sceneclf.model.cnn",
    "Budget": "sceneclf.model.budget",
    "Checkpoint": "sceneclf.model.checkpoint",
    "load_checkpoint": "sceneclf.model.checkpoint",
    "save_checkpoint": "sceneclf.model.checkpoint",
    "TrainConfig": "sceneclf.train",
    "fit": "sceneclf.train",
    "train_model": "sceneclf.train",
    "SearchSettings": "sceneclf.search.study",
    "run_search": "sceneclf.search.study",
    "load_space": "sceneclf.search.space",
    "predict_paths": "sceneclf.tasks.predict",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sceneclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
