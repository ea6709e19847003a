"""Shared fixtures: a tiny synthetic data set written once per session, an isolated cache."""

from pathlib import Path

import pytest

from sceneclf.synth import SynthConfig, write_dataset

TINY = SynthConfig(clips_per_class=6, locations_per_class=3, min_seconds=3.0, max_seconds=3.3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """15 classes x 6 clips (3 locations each), TUT 2017 layout, real WAV files."""
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny", TINY, seed=0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test uses a session-wide cache folder, never ~/.cache; no MLflow env leaks in."""
    monkeypatch.setenv("SCENECLF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SCENECLF_STORAGE", raising=False)
