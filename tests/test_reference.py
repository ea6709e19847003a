"""The bag-of-frames reference: wins where classes differ in their average spectrum, loses where
they differ only in time-frequency pattern."""

import torch

from sceneclf.data.melset import MelSet
from sceneclf.model.budget import Budget
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.tasks.reference import bag_of_frames, fit_reference
from sceneclf.train import TrainConfig, score, train_model

N_MELS, T = 16, 48


def spectral(n: int, seed: int) -> MelSet:
    """Class 0 louder in the low half of the bands, class 1 in the high half."""
    g = torch.Generator().manual_seed(seed)
    mels, labels = [], []
    for i in range(n):
        tilt = torch.linspace(1.5, 0.5, N_MELS) if i % 2 == 0 else torch.linspace(0.5, 1.5, N_MELS)
        mels.append(tilt[:, None] * (0.5 + torch.rand(N_MELS, T, generator=g)))
        labels.append(i % 2)
    return MelSet(mels, torch.tensor(labels))


def patterns(n: int, seed: int) -> MelSet:
    """A sweep across the bands, rising (class 0) or falling (class 1): every band is lit for the
    same number of frames either way, so per-band mean and std cannot tell them apart."""
    g = torch.Generator().manual_seed(seed)
    mels, labels = [], []
    for i in range(n):
        shift = int(torch.randint(N_MELS, (1,), generator=g))
        t = torch.arange(T)[None, :] + shift
        band = torch.arange(N_MELS)[:, None]
        lit = (t % N_MELS) == (band if i % 2 == 0 else N_MELS - 1 - band)
        mels.append(0.01 + lit.float() + 0.01 * torch.rand(N_MELS, T, generator=g))
        labels.append(i % 2)
    return MelSet(mels, torch.tensor(labels))


def test_features_are_band_means_and_stds():
    data = spectral(2, 0)
    x = bag_of_frames(data)
    logmel = torch.log(data.mels[0].double() + 1e-6)
    assert x.shape == (2, 2 * N_MELS)
    assert torch.allclose(torch.from_numpy(x[0, :N_MELS]), logmel.mean(-1))


def test_reference_wins_on_average_spectra():
    ref = fit_reference({"train": spectral(40, 0), "val": spectral(20, 1), "test": spectral(20, 2)})
    assert ref.val_accuracy == 1.0 and ref.test_accuracy == 1.0


def test_reference_loses_on_patterns_where_a_cnn_wins():
    splits = {"train": patterns(64, 0), "val": patterns(32, 1), "test": patterns(32, 2)}
    ref = fit_reference(splits)
    assert ref.test_accuracy <= 0.7
    features = FeatureConfig(n_fft=128, hop_length=64, n_mels=N_MELS)  # every mel band holds an FFT bin
    model, _ = train_model(features, ModelConfig(n_classes=2, widths=(8, 16), dropout=0.0),
                           TrainConfig(lr=1e-2, epochs=15, batch_size=16), Budget(), splits["train"],
                           splits["val"], T)
    cnn_accuracy, _, _ = score(model, splits["test"], T)
    assert cnn_accuracy >= ref.test_accuracy + 0.25


def test_every_search_stores_logs_and_shows_its_reference(retrained_study):
    import optuna
    from mlflow.tracking import MlflowClient

    from sceneclf.data.audio import AudioConfig
    from sceneclf.data.prepare import DataConfig, prepare
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.report.figures import study_figures
    from sceneclf.search.record import StudyAttr

    study = optuna.load_study(study_name="t", storage=retrained_study["storage"])
    stored = study.user_attrs[StudyAttr.REFERENCE]
    # The same reference, fitted again on the same splits.
    prepared = prepare(DataConfig(data=str(retrained_study["data"])), AudioConfig(), FeatureConfig(),
                       retrained_study["root"] / "cache")
    again = fit_reference(prepared.splits)
    assert stored == again.to_dict()
    parent = MlflowClient(retrained_study["tracking"]).get_run(study.user_attrs[StudyAttr.PARENT_RUN])
    assert parent.data.metrics["reference_val_accuracy"] == stored["reference_val_accuracy"]
    assert parent.data.metrics["reference_test_accuracy"] == stored["reference_test_accuracy"]
    assert f"vs bag-of-frames reference {stored['reference_val_accuracy']:.3f}" in retrained_study["search_output"]
    assert f"vs bag-of-frames reference {stored['reference_test_accuracy']:.3f}" in retrained_study["retrain_output"]
    history = study_figures(study)["optimization_history"]
    lines = [s for s in history.layout.shapes if s.type == "line"]
    assert [line.y0 for line in lines] == [stored["reference_val_accuracy"]]
