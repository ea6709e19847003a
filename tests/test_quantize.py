"""The model at the precision it ships in: int8 and fp16 against float on a trained model, the
bytes they take, a quantized search trial's record, and the retrained model registered at int8."""

import io

import mlflow
import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.errors import ConfigError
from sceneclf.model.budget import Budget
from sceneclf.model.checkpoint import load_checkpoint
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig
from sceneclf.model.quantize import (
    DeployedClassifier,
    calibration_batches,
    half_conv_supported,
    parameter_bytes,
    to_precision,
)
from sceneclf.train import TrainConfig, score, train_model


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    return prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(), tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def trained(prepared):
    """A small CNN that has learnt its training clips (well above the 1/15 chance)."""
    torch.manual_seed(0)
    cfg = TrainConfig(lr=3e-3, batch_size=16, epochs=12, early_stop=12, seed=0)
    model, _ = train_model(FeatureConfig(noise=0.05), ModelConfig(widths=(16, 32, 48)), cfg, Budget(),
                           prepared.splits["train"], prepared.splits["train"], prepared.frames)
    return model.cpu()


def test_int8_and_fp16_keep_the_float_accuracy(prepared, trained):
    clips = prepared.splits["train"]
    float_acc, _, float_logits = score(trained, clips, prepared.frames)
    assert float_acc > 0.5
    int8 = to_precision(trained, "int8", calibration_batches(clips, prepared.frames))
    int8_acc, _, int8_logits = score(int8, clips, prepared.frames)
    assert isinstance(int8, DeployedClassifier) and int8.precision == "int8"
    assert int8.cnn.blocks[0][0].weight().dtype == torch.qint8  # the convolutions really run in int8
    assert abs(int8_acc - float_acc) <= 3 / len(clips)
    agree = (int8_logits.argmax(1) == float_logits.argmax(1)).float().mean().item()
    assert agree >= 0.85
    fp16 = to_precision(trained, "fp16")
    fp16_acc, _, fp16_logits = score(fp16, clips, prepared.frames)
    assert abs(fp16_acc - float_acc) <= 1 / len(clips)
    assert torch.allclose(fp16_logits, float_logits, atol=0.05)
    if half_conv_supported():
        assert next(fp16.cnn.parameters()).dtype == torch.float16
    fp32_acc, _, fp32_logits = score(to_precision(trained, "fp32"), clips, prepared.frames)
    assert fp32_acc == float_acc and torch.equal(fp32_logits, float_logits)
    assert next(trained.cnn.parameters()).dtype == torch.float32  # the trained model is left as it was


def test_parameter_bytes_at_each_precision(prepared):
    model = SceneClassifier(FeatureConfig(), ModelConfig(widths=(8, 16), n_classes=15))
    folded = 2 * 8 * 9 + 8 + 8 * 16 * 9 + 16 + 16 * 15 + 15  # BatchNorm folded into each conv's bias
    weights, biases = 2 * 8 * 9 + 8 * 16 * 9 + 16 * 15, 8 + 16 + 15
    assert parameter_bytes(to_precision(model, "fp32")) == 4 * folded
    assert parameter_bytes(to_precision(model, "fp16")) == 2 * folded
    int8 = to_precision(model, "int8", calibration_batches(prepared.splits["train"], prepared.frames, windows=8))
    assert parameter_bytes(int8) == weights + 4 * biases


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # torch.save of quantized tensors
def test_a_quantized_model_survives_pickling(prepared, trained):
    """What MLflow's pickle format stores: the same int8 model back, the same logits."""
    int8 = to_precision(trained, "int8", calibration_batches(prepared.splits["train"], prepared.frames))
    buf = io.BytesIO()
    torch.save(int8, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    wave = torch.randn(3, 24000)
    assert torch.equal(back(wave), int8(wave))


def test_bad_precision_is_one_line(trained, tiny_data):
    with pytest.raises(ConfigError, match=r"^precision 'int4': use one of fp32, fp16, int8$"):
        to_precision(trained, "int4")
    with pytest.raises(ConfigError, match="precision 'int4'"):
        Budget(precision="int4")
    res = CliRunner().invoke(cli, ["search", "--data", str(tiny_data), "--precision", "int4", "--no-mlflow"])
    assert res.exit_code == 2 and "Invalid value for '--precision': 'int4' is not one of" in res.output
    assert "Traceback" not in res.output
    with pytest.raises(ConfigError, match="^int8: no training windows"):
        to_precision(trained, "int8", [])


@pytest.fixture(scope="module")
def int8_study(tiny_data, tmp_path_factory):
    """A real search at int8 (2 trials, 2 epochs) and its retrain-best, through the CLI."""
    from conftest import TINY_SPACE

    root = tmp_path_factory.mktemp("int8")
    (root / "tiny.toml").write_text(TINY_SPACE)
    stores = ["--study", "q", "--storage", f"sqlite:///{root}/s.db", "--tracking-uri", f"sqlite:///{root}/mlflow.db"]
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        res = runner.invoke(cli, ["search", "--trials", "2", "--data", str(tiny_data), "--space", "tiny.toml",
                                  "--precision", "int8", "--no-progress", "--device", "cpu", *stores],
                            catch_exceptions=False)
        assert res.exit_code == 0, res.output
        retrained = runner.invoke(cli, ["retrain-best", "--out", str(root / "m.pt"), "--device", "cpu", *stores],
                                  catch_exceptions=False)
        assert retrained.exit_code == 0, retrained.output
    return {"root": root, "storage": f"sqlite:///{root}/s.db", "tracking": f"sqlite:///{root}/mlflow.db",
            "retrain_output": retrained.output}


def test_a_quantized_trial_is_scored_at_int8(int8_study, prepared):
    study = optuna.load_study(study_name="q", storage=int8_study["storage"])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done
    client = MlflowClient(int8_study["tracking"])
    for t in done:
        float_acc, drop = t.user_attrs["float_val_accuracy"], t.user_attrs["precision_drop"]
        assert drop == pytest.approx(float_acc - t.value, abs=1e-12)
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert metrics["val_accuracy_int8"] == pytest.approx(t.value)
        assert metrics["precision_drop"] == pytest.approx(drop)
        assert metrics["float_val_accuracy"] == pytest.approx(float_acc)
    # The objective is the best state's accuracy at int8: rebuilt from the best checkpoint, the same.
    best = study.best_trial
    ckpt = load_checkpoint(int8_study["root"] / "studies" / "checkpoints" / "q" / "best.pt")
    assert ckpt.metrics["val_accuracy"] == pytest.approx(best.user_attrs["float_val_accuracy"])
    int8 = to_precision(ckpt.model, "int8", calibration_batches(prepared.splits["train"], prepared.frames))
    assert score(int8, prepared.splits["val"], prepared.frames)[0] == pytest.approx(best.value)


def test_retrain_best_registers_the_int8_model(int8_study, prepared, tiny_data):
    assert "test_accuracy at int8 (as it ships)" in int8_study["retrain_output"]
    ckpt = load_checkpoint(int8_study["root"] / "m.pt")
    assert ckpt.train["precision"] == "int8" and "test_accuracy_int8" in ckpt.metrics
    client = MlflowClient(int8_study["tracking"])
    version = client.get_model_version("sceneclf", "1")
    run = client.get_run(version.run_id)
    assert run.data.tags["sceneclf.precision"] == "int8"
    assert run.data.metrics["test_accuracy_int8"] == pytest.approx(ckpt.metrics["test_accuracy_int8"])
    mlflow.set_tracking_uri(int8_study["tracking"])
    registered = mlflow.pytorch.load_model("models:/sceneclf/1")
    assert isinstance(registered, DeployedClassifier) and registered.precision == "int8"
    acc, _, _ = score(registered, prepared.splits["test"], prepared.frames)
    assert acc == pytest.approx(ckpt.metrics["test_accuracy_int8"])
    res = CliRunner().invoke(cli, ["evaluate", str(int8_study["root"] / "m.pt"), "--data", str(tiny_data),
                                   "--json", "--out-html", str(int8_study["root"] / "cm.html")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json

    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["accuracy_int8"] == pytest.approx(ckpt.metrics["test_accuracy_int8"])
    assert report["accuracy"] == pytest.approx(ckpt.metrics["test_accuracy"])
