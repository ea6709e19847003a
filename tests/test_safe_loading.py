"""Safe loading: nothing is unpickled from user files, and a checkpoint whose contents fail
validation is refused with a one-line message naming the file."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import sceneclf
from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig
from sceneclf.errors import ConfigError
from sceneclf.model.checkpoint import FORMAT, VERSION, Checkpoint, load_checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig

PACKAGE = Path(sceneclf.__file__).parent


def test_every_torch_load_is_weights_only_and_nothing_else_unpickles():
    calls = 0
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            calls += 1
            call = text[match.start():text.index(")", match.start()) + 1]
            assert "weights_only=True" in call, f"{source.name}: {call}"
        for unsafe in ("pickle.load", "cloudpickle", "joblib.load", "allow_pickle=True",
                       "pyfunc.load_model", "pytorch.load_model", "dill."):
            assert unsafe not in text, f"{source.name} uses {unsafe}"
    assert calls >= 1


class Payload:
    """Unpickling this would create a file: the proof that something ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def tiny() -> Checkpoint:
    cfg = ModelConfig(n_classes=3, widths=(4,))
    return Checkpoint(SceneClassifier(FeatureConfig(), cfg), AudioConfig(), FeatureConfig(), cfg,
                      ("a", "b", "c"), metrics={"val_accuracy": 0.5})


def payload(**changes) -> dict:
    ckpt = tiny()
    base = {"format": FORMAT, "version": VERSION, "state_dict": ckpt.model.state_dict(),
            "audio": asdict(ckpt.audio), "features": asdict(ckpt.features), "model": asdict(ckpt.model_cfg),
            "classes": list(ckpt.classes), "train": {}, "metrics": {}}
    base.update(changes)
    return base


def test_a_sound_checkpoint_loads(tmp_path):
    path = save_checkpoint(tmp_path / "ok.pt", tiny())
    assert load_checkpoint(path).classes == ("a", "b", "c")


def test_a_pickled_object_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save(payload(metrics={"x": Payload(marker)}), path)
    with pytest.raises(ConfigError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable sceneclf checkpoint") and "\n" not in message
    assert not marker.exists()
    # and through the CLI: one line, exit code 2, nothing run
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(16000, dtype="float32"), 16000)
    res = CliRunner().invoke(cli, ["predict", str(path), str(wav)])
    assert res.exit_code == 2 and "evil.pt: not a readable sceneclf checkpoint" in res.output
    assert "Traceback" not in res.output and not marker.exists()


def nan_weights() -> dict:
    state = tiny().model.state_dict()
    state["cnn.head.weight"] = torch.full_like(state["cnn.head.weight"], float("nan"))
    return payload(state_dict=state)


def wrong_shapes() -> dict:
    state = tiny().model.state_dict()
    state["cnn.head.weight"] = torch.zeros(5, 4)
    return payload(state_dict=state)


@pytest.mark.parametrize("contents,message", [
    (lambda: payload(model={**asdict(ModelConfig(n_classes=3)), "widths": []}), "configs are invalid"),
    (lambda: payload(model={**asdict(ModelConfig(n_classes=3)), "kernel_size": 4}), "configs are invalid"),
    (lambda: payload(model={**asdict(ModelConfig(n_classes=3)), "surprise": 1}), "configs are invalid"),
    (lambda: payload(features={**asdict(FeatureConfig()), "n_mels": 0}), "configs are invalid"),
    (lambda: payload(audio={**asdict(AudioConfig()), "sample_rate": -5}), "configs are invalid"),
    (lambda: payload(classes=["a", "b"]), "2 class names for a 3-class model"),
    (lambda: payload(classes="abc"), "class names"),
    (lambda: {k: v for k, v in payload().items() if k != "model"}, "configs are invalid"),
    (lambda: payload(format="something-else"), "not a sceneclf checkpoint"),
    (lambda: torch.zeros(3), "not a sceneclf checkpoint"),
    (lambda: {k: v for k, v in payload().items() if k != "state_dict"}, "weights do not fit"),
    (wrong_shapes, "weights do not fit"),
    (nan_weights, "NaN or infinite weights"),
])
def test_invalid_checkpoints_are_refused(tmp_path, contents, message):
    path = tmp_path / "bad.pt"
    torch.save(contents(), path)
    with pytest.raises(ConfigError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


@pytest.mark.parametrize("data,message", [
    (b"", "not a readable sceneclf checkpoint"),
    (b"PK\x03\x04 truncated zip", "not a readable sceneclf checkpoint"),
    (None, "not a readable sceneclf checkpoint"),  # the first half of a real checkpoint
])
def test_broken_files_are_refused(tmp_path, data, message):
    path = tmp_path / "broken.pt"
    if data is None:
        whole = save_checkpoint(tmp_path / "whole.pt", tiny()).read_bytes()
        data = whole[: len(whole) // 2]
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=message):
        load_checkpoint(path)
