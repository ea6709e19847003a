"""The CUDA path: front end on the device, mixed precision, pinned memory. Skipped without a GPU."""

import pytest
import torch

from sceneclf.data.melset import MelSet
from sceneclf.model.budget import Budget
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import TrainConfig, pick_device, score, train_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_picks_cpu_without_cuda():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@cuda
def test_fit_on_cuda_with_mixed_precision():
    g = torch.Generator().manual_seed(0)
    mels = [torch.rand(40, 100, generator=g) * (1 + i % 3) for i in range(48)]
    data = MelSet(mels, torch.tensor([i % 3 for i in range(48)]))
    model, result = train_model(FeatureConfig(noise=0.1), ModelConfig(n_classes=3, widths=(8, 16)),
                                TrainConfig(epochs=3, batch_size=16), Budget(), data, data, 94,
                                device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert model.frontend.mean.device.type == "cuda"  # the front end runs on the device
    acc, loss, _ = score(model, data, 94, device="cuda")
    assert result.epochs_run == 3 and loss == loss
