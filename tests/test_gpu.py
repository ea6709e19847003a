"""The CUDA path: front end on the device, mixed precision, pinned memory. Skipped without a GPU."""

import math

import pytest
import torch

from sceneclf.data.audio import AudioConfig
from sceneclf.data.melset import MelSet
from sceneclf.model.budget import Budget, build
from sceneclf.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import TrainConfig, fit, pick_device, score, train_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_picks_cpu_without_cuda():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def tilted(n: int, seed: int) -> MelSet:
    """Three classes told apart by their spectral tilt: easy, so a few epochs must learn them."""
    g = torch.Generator().manual_seed(seed)
    tilts = [torch.linspace(2, 0.2, 40), torch.ones(40), torch.linspace(0.2, 2, 40)]
    mels = [tilts[i % 3][:, None] * (0.5 + torch.rand(40, 100, generator=g)) for i in range(n)]
    return MelSet(mels, torch.tensor([i % 3 for i in range(n)]))


@cuda
def test_a_trial_trains_on_cuda_and_its_checkpoint_loads_on_cpu(tmp_path):
    train, val = tilted(96, 0), tilted(48, 1)
    features, cfg = FeatureConfig(noise=0.1), ModelConfig(n_classes=3, widths=(8, 16))
    model, result = train_model(features, cfg, TrainConfig(epochs=5, batch_size=16), Budget(), train, val, 94,
                                device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert model.frontend.mean.device.type == "cuda"  # the front end runs on the device
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    gpu_acc, _, gpu_logits = score(model, val, 94, device="cuda")
    assert gpu_acc > 0.6  # chance is 1/3
    path = save_checkpoint(tmp_path / "m.pt", Checkpoint(model, AudioConfig(), features, cfg, ("a", "b", "c")))
    cpu_model = load_checkpoint(path).model
    assert next(cpu_model.parameters()).device.type == "cpu"
    cpu_acc, _, cpu_logits = score(cpu_model, val, 94)
    assert abs(cpu_acc - gpu_acc) <= 1 / 48  # float16 autocast on the GPU, float32 here
    assert torch.allclose(cpu_logits, gpu_logits, atol=0.1)


@cuda
def test_a_compiled_trial_trains_the_model_itself_on_cuda():
    train, val = tilted(96, 0), tilted(48, 1)
    model = build(FeatureConfig(noise=0.1), ModelConfig(n_classes=3, widths=(8, 16)), Budget(), 94)
    model.frontend.fit_stats(train.mels)
    result = fit(model, train, val, TrainConfig(epochs=5, batch_size=16), 94, device="cuda",
                 compile_mode="reduce-overhead")
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert not any(k.startswith("_orig_mod") for k in result.best_state)  # checkpoints keep their keys
    model.load_state_dict(result.best_state)
    acc, _, _ = score(model, val, 94, device="cuda")  # the uncompiled model holds what training learnt
    assert acc > 0.6 and abs(acc - result.best_val_accuracy) <= 1 / 48
