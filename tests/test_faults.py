"""An exception inside one trial fails that trial, with its reason, and the search goes on; when
every recent trial fails, the search stops and says why. Through the CLI, real stores."""

from __future__ import annotations

import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from mlflow_store import mlflow_template, tracking_uri  # noqa: F401  (fixtures)
from optuna.trial import TrialState

import sceneclf.search.objective as search_mod
from sceneclf.cli import cli
from sceneclf.model.cnn import SceneCNN

SPACE = """
[train]
epochs = 1
[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true
[params.base_width]
type = "int"
low = 4
high = 16
step = 4
[params.n_blocks]
type = "int"
low = 1
high = 2
"""


@pytest.fixture
def stores(tmp_path, monkeypatch, tracking_uri):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.toml").write_text(SPACE)
    return {"storage": f"sqlite:///{tmp_path}/studies/s.db", "tracking": tracking_uri, "dir": tmp_path}


def search(stores, data, trials: int):
    return CliRunner().invoke(cli, [
        "search", "--data", str(data), "--study", "f", "--storage", stores["storage"],
        "--tracking-uri", stores["tracking"], "--space", "space.toml", "--trials", str(trials),
        "--epochs", "1", "--no-progress", "--device", "cpu", "--sampler", "random"])


def runs_by_id(stores) -> dict:
    client = MlflowClient(stores["tracking"])
    exp = client.get_experiment_by_name("f")
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=1000)}


def test_out_of_memory_fails_one_trial_and_the_search_goes_on(stores, tiny_data, monkeypatch):
    """Wide first blocks run "out of memory" in their forward pass, inside training."""
    real = SceneCNN.forward

    def forward(self, x):
        if self.cfg.widths[0] >= 12 and x.device.type != "meta":  # not when MACs are counted
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x)

    monkeypatch.setattr(SceneCNN, "forward", forward)
    res = search(stores, tiny_data, 2)
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="f", storage=stores["storage"])
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and all(t.user_attrs["widths"][0] < 12 for t in done)
    assert failed, "the random sampler with seed 0 should draw some wide first blocks"
    runs = runs_by_id(stores)
    for t in failed:
        assert t.user_attrs["widths"][0] >= 12
        assert t.user_attrs["reason"].startswith("OutOfMemoryError: CUDA out of memory")
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FAILED" and run.data.tags["reason"].startswith("OutOfMemoryError")


def test_every_trial_failing_stops_the_search_and_says_why(stores, tiny_data, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr(search_mod, "train_model", broken)
    res = search(stores, tiny_data, 20)
    study = optuna.load_study(study_name="f", storage=stores["storage"])
    assert len(study.trials) == 5 and all(t.state == TrialState.FAIL for t in study.trials)
    assert ("search stopped: the last 5 trials failed "
            "(RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR)") in res.output
    assert res.exit_code == 1, res.output
    assert all(r.info.status != "RUNNING" for r in runs_by_id(stores).values())


def test_failure_after_training_closes_the_run_with_the_reason(stores, tiny_data, monkeypatch):
    """Disk full while the checkpoint is written: the trial fails with the reason, its MLflow run
    is closed, the next trials go on."""
    real = search_mod.save_checkpoint
    calls = []

    def full(path, ckpt, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(path, ckpt, *args, **kwargs)

    monkeypatch.setattr(search_mod, "save_checkpoint", full)
    res = search(stores, tiny_data, 1)
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="f", storage=stores["storage"])
    [failed] = [t for t in study.trials if t.state == TrialState.FAIL]
    assert "No space left on device" in failed.user_attrs["reason"]
    run = runs_by_id(stores)[failed.user_attrs["mlflow_run_id"]]
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["reason"]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
