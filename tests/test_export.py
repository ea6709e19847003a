"""`sceneclf export`: a trained checkpoint as an ONNX file, run in ONNX Runtime on soundfile-written
clips of two lengths, against the PyTorch model; int8 and fp16; one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.errors import ConfigError
from sceneclf.model.budget import Budget
from sceneclf.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig
from sceneclf.tasks import export as ex
from sceneclf.train import TrainConfig, train_model

RATE = 16000
# Seconds: shorter and longer than the 3 s trained on, an odd (59) and an even (156) frame count
# (the max-pools round up, so the graph's shapes must hold for both).
LENGTHS = (1.9, 5.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Path:
    """A checkpoint trained on the tiny data set, long enough to predict many different labels."""
    data = prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(),
                   tmp_path_factory.getbasetemp() / "cache")
    cfg = ModelConfig(n_classes=len(data.classes), widths=(16, 32))
    model, _ = train_model(FeatureConfig(), cfg, TrainConfig(epochs=10, batch_size=8, lr=1e-2, early_stop=10), Budget(),
                           data.splits["train"], data.splits["val"], data.frames)
    path = tmp_path_factory.mktemp("export") / "tiny.pt"
    return save_checkpoint(path, Checkpoint(model.cpu().eval(), AudioConfig(), FeatureConfig(), cfg, data.classes))


@pytest.fixture(scope="module")
def clips(tmp_path_factory, tiny_data) -> dict[float, np.ndarray]:
    """Every tiny clip cut (or tiled) to each of LENGTHS, written as WAV and read back: {seconds: (N, samples)}."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for seconds in LENGTHS:
        n = int(seconds * RATE)
        waves = []
        for i, src in enumerate(sorted(tiny_data.rglob("*.wav"))):
            wave, rate = sf.read(src, dtype="float32")
            assert rate == RATE
            path = root / f"{seconds:g}s-{i}.wav"
            sf.write(path, np.tile(wave, 2)[:n], RATE, subtype="FLOAT")
            waves.append(sf.read(path, dtype="float32")[0])
        out[seconds] = np.stack(waves)
    return out


def cli_export(model: Path, out: Path, tiny_data: Path, *extra: str):
    return CliRunner().invoke(cli, ["export", str(model), "--format", "onnx", "--out", str(out),
                                    "--data", str(tiny_data), *extra])


@pytest.fixture(scope="module")
def fp32_file(trained, tiny_data) -> tuple[Path, str]:
    out = trained.parent / "tiny-fp32.onnx"
    res = cli_export(trained, out, tiny_data)
    assert res.exit_code == 0, res.output
    return out, res.output


def torch_logits(model: SceneClassifier, waves: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.fused()(torch.from_numpy(waves)).numpy()


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def test_fp32_runs_in_onnxruntime_like_pytorch(fp32_file, trained, clips):
    path, output = fp32_file
    kb = float(re.search(r"onnx: .*?, ([\d.]+) kB at fp32", output).group(1))
    assert kb == round(path.stat().st_size / 1000, 1)
    assert re.search(r"same top label on \d+ \(100\.0 %\)", output), output
    ckpt = load_checkpoint(trained)
    proto = onnx.load(path)
    assert [t.values.name for t in proto.graph.sparse_initializer] == ["frontend.mel.mel_scale.fb"]  # mostly zeros
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == list(ckpt.classes) and meta["sample_rate"] == str(RATE)
    sess = ex.session(path)
    for seconds, waves in clips.items():  # the time axis is dynamic, the batch axis too
        ours, ref = ex.run_onnx(sess, waves), torch_logits(ckpt.model, waves)
        assert ours.shape == (len(waves), len(ckpt.classes))
        assert len(set(ref.argmax(1))) >= 5  # labels that vary, so agreeing on them means something
        assert agreement(ours, ref) >= 0.99, seconds
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
    one = clips[LENGTHS[0]][:1]
    np.testing.assert_allclose(ex.run_onnx(sess, one), torch_logits(ckpt.model, one), atol=1e-4, rtol=1e-4)


def test_int8_is_smaller_and_keeps_the_labels(fp32_file, trained, tiny_data, clips):
    out = trained.parent / "tiny-int8.onnx"
    res = cli_export(trained, out, tiny_data, "--precision", "int8")
    assert res.exit_code == 0, res.output
    assert "calibrated on 30 training clips" in res.output
    assert out.stat().st_size < fp32_file[0].stat().st_size
    types = {t.name: t.data_type for t in onnx.load(out).graph.initializer}
    assert types["cnn.blocks.1.0.weight_quantized"] == onnx.TensorProto.INT8
    ckpt = load_checkpoint(trained)
    sess = ex.session(out)
    for waves in clips.values():
        ours, ref = ex.run_onnx(sess, waves), torch_logits(ckpt.model, waves)
        assert ours.shape == (len(waves), len(ckpt.classes))
        assert agreement(ours, ref) >= 0.9  # quantization moves a few near-ties


def test_fp16_halves_the_cnn_weights(trained, clips):
    ckpt = load_checkpoint(trained)
    proto = ex.build(ckpt.model, "fp16", classes=ckpt.classes)
    types = {t.name: t.data_type for t in proto.graph.initializer}
    assert types["cnn.blocks.1.0.weight"] == onnx.TensorProto.FLOAT16
    sparse = {t.values.name: t.values.data_type for t in proto.graph.sparse_initializer}
    assert types["frontend.dct"] == sparse["frontend.mel.mel_scale.fb"] == onnx.TensorProto.FLOAT  # front end float32
    sess = ex.session(proto.SerializeToString())
    for waves in clips.values():
        ours, ref = ex.run_onnx(sess, waves), torch_logits(ckpt.model, waves)
        assert agreement(ours, ref) >= 0.99
        np.testing.assert_allclose(ours, ref, atol=0.05)


def assert_one_line_error(res, *parts: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert "Traceback" not in res.output and lines[-1].startswith("Error:"), res.output
    assert sum(line.startswith("Error:") for line in lines) == 1, res.output
    for part in parts:
        assert part in lines[-1], (part, lines[-1])


def test_bad_precision_is_one_line(trained, tiny_data, tmp_path):
    res = cli_export(trained, tmp_path / "m.onnx", tiny_data, "--precision", "int4")
    assert_one_line_error(res, "--precision", "int4")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ConfigError, match="--precision int4"):
        ex.check_precision("int4")


def test_corrupt_model_file_is_one_line(trained, tiny_data, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(trained.read_bytes()[:3000])
    res = cli_export(bad, tmp_path / "m.onnx", tiny_data)
    assert_one_line_error(res, str(bad), "not a readable sceneclf checkpoint")
    assert not (tmp_path / "m.onnx").exists()


class Branchy(SceneClassifier):
    """Control flow on the input's values: torch.export cannot trace it."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        logits = super().forward(wave)
        return logits if wave.abs().max() > 0.5 else -logits


def test_unexportable_model_is_one_line():
    model = Branchy(FeatureConfig(), ModelConfig(n_classes=3, widths=(4,))).eval()
    with pytest.raises(ConfigError, match="cannot be exported to ONNX") as info:
        ex.to_onnx(model)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_export_an_mlflow_model_by_uri(retrained_study, tmp_path, monkeypatch):
    s = retrained_study
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["export", s["model_uri"], "--tracking-uri", s["tracking"], "--data", str(s["data"]),
                                   "--check-clips", "10"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sceneclf-1-fp32.onnx"  # named after the URI
    assert f"onnx: {out}" in res.output
    ckpt = load_checkpoint(s["checkpoint"])  # the same weights as the registered model
    waves = np.random.default_rng(0).normal(0, 0.1, (3, 40000)).astype(np.float32)
    np.testing.assert_allclose(ex.run_onnx(ex.session(out), waves), torch_logits(ckpt.model, waves), atol=1e-4, rtol=1e-4)
