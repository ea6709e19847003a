"""Training, caching and the train command on the tiny synthetic data set."""

import numpy as np
import optuna
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import native_bf16

from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig
from sceneclf.data.melset import (
    MelSet,
    ResidentMels,
    batches,
    clip_windows,
    resident_batches,
    resident_windows,
    window_starts,
)
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.model.budget import Budget, count_params
from sceneclf.model.checkpoint import load_checkpoint
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import NonFiniteLossError, TrainConfig, fit, score, train_model, train_precision


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    return prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(),
                   tmp_path_factory.mktemp("cache"))


def test_splits_keep_locations_apart(prepared):
    groups = {}
    for clip in prepared.manifest.clips:
        groups.setdefault(clip.group, set()).add(clip.split)
    assert all(len(s) == 1 for s in groups.values())
    assert all(len(prepared.splits[s]) > 0 for s in ("train", "val", "test"))


def test_second_prepare_decodes_nothing(tiny_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(), cache)
    import sceneclf.data.audio as audio

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(audio, "read_audio", refuse)
    again = prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(), cache)
    assert again.fingerprint == first.fingerprint
    assert all(torch.equal(a, b) for a, b in zip(first.splits["train"].mels, again.splits["train"].mels))


def test_short_training_beats_chance_clearly(prepared):
    torch.set_num_threads(2)
    cfg = TrainConfig(lr=3e-3, batch_size=16, epochs=12, early_stop=12, seed=0)
    model, result = train_model(FeatureConfig(noise=0.05), ModelConfig(widths=(16, 32, 48)), cfg,
                                Budget(), prepared.splits["train"], prepared.splits["train"],
                                prepared.frames)
    # training accuracy on 15 classes: chance is 1/15 (0.633 here, the same at 1 and 2 threads)
    acc, _, _ = score(model, prepared.splits["train"], prepared.frames)
    assert acc > 0.5
    assert result.epochs_run == 12 and len(result.history) == 12


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_cpu_with_bfloat16_trains_its_cnn_in_it_and_scores_in_float32(prepared, monkeypatch, switch):
    monkeypatch.setenv("SCENECLF_CPU_BF16", switch)
    mixed = native_bf16() and switch == "1"
    assert train_precision("cpu") == ("bf16-mixed" if mixed else "fp32")
    model = SceneClassifier(FeatureConfig(), ModelConfig(widths=(8, 16)))
    seen = {True: set(), False: set()}  # training or not -> dtypes out of the first block
    model.cnn.blocks[0].register_forward_hook(lambda m, i, out: seen[m.training].add(out.dtype))
    cfg = TrainConfig(batch_size=16, epochs=1, early_stop=1, seed=0)
    result = fit(model, prepared.splits["train"], prepared.splits["val"], cfg, prepared.frames)
    assert seen[True] == {torch.bfloat16 if mixed else torch.float32}
    # the hook travels into score's folded copy: validation ran in float32
    assert seen[False] == {torch.float32} and all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(result.history[0]["train_loss"])


def test_the_seed_alone_decides_a_training(prepared):
    """Initial weights, shuffling, crops and noise all follow `TrainConfig.seed`, whatever the
    global random state before: a trial trains the same in any process."""
    train, val = prepared.splits["train"], prepared.splits["val"]

    def losses(seed: int, global_seed: int) -> list[float]:
        torch.manual_seed(global_seed)
        cfg = TrainConfig(batch_size=16, epochs=2, early_stop=2, seed=seed)
        _, result = train_model(FeatureConfig(noise=0.05), ModelConfig(widths=(8, 16)), cfg, Budget(),
                                train, val, prepared.frames)
        return [h[k] for h in result.history for k in ("train_loss", "val_loss")]

    assert losses(3, global_seed=123) == losses(3, global_seed=456)
    assert losses(3, global_seed=123) != losses(4, global_seed=123)


def test_training_stops_at_the_first_epoch_under_a_target_loss(prepared):
    """retrain-best's stopping rule: the same training, cut after the first epoch from
    `min_epochs` on whose mean training loss is at most the target, and the last state kept."""
    train, val = prepared.splits["train"], prepared.splits["val"]
    cfg = TrainConfig(batch_size=16, epochs=6, early_stop=6, seed=2)

    def run(target, min_epochs=1):
        return train_model(FeatureConfig(noise=0.05), ModelConfig(widths=(8, 16)), cfg, Budget(), train, val,
                           prepared.frames, keep_last=True, until_train_loss=target, min_epochs=min_epochs)

    _, full = run(None)
    losses = [h["train_loss"] for h in full.history]
    target = losses[2]  # met by epoch 3 at the latest
    for min_epochs in (1, 4):
        first = next(i for i, loss in enumerate(losses) if loss <= target and i + 1 >= min_epochs) + 1
        model, cut = run(target, min_epochs)
        assert cut.epochs_run == first and cut.best_epoch == first
        assert [h["train_loss"] for h in cut.history] == losses[:first]
        assert all(torch.equal(v, cut.best_state[k]) for k, v in model.state_dict().items())
    assert run(target)[1].epochs_run <= 3


def test_nan_loss_stops_at_once(prepared):
    broken = MelSet([m * float("nan") for m in prepared.splits["train"].mels], prepared.splits["train"].labels)
    from sceneclf.model.cnn import SceneClassifier

    model = SceneClassifier(FeatureConfig(), ModelConfig())
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        fit(model, broken, prepared.splits["val"], TrainConfig(epochs=3), prepared.frames)


def test_callback_sees_every_epoch_and_can_stop(prepared):
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(epoch, metrics):
        seen.append((epoch, sorted(metrics)))
        if epoch == 2:
            raise Stop

    from sceneclf.model.cnn import SceneClassifier

    with pytest.raises(Stop):
        fit(SceneClassifier(FeatureConfig(), ModelConfig()), prepared.splits["train"], prepared.splits["val"],
            TrainConfig(epochs=5), prepared.frames, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2]
    assert seen[0][1] == ["lr", "seconds", "train_accuracy", "train_loss", "val_accuracy", "val_loss"]


def test_train_command_and_checkpoint_round_trip(tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    res = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), "--epochs", "2", "--widths", "8,16",
                                   "--out", str(out), "--device", "cpu"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Total params:" in res.output and "epoch   2/2" in res.output and "test_accuracy" in res.output
    ckpt = load_checkpoint(out)
    assert ckpt.model_cfg.widths == (8, 16) and len(ckpt.classes) == 15
    # the checkpoint alone rebuilds the same predictions from raw audio
    wave = torch.from_numpy(sf.read(sorted((tiny_data / "audio").glob("*.wav"))[0], dtype="float32")[0])
    x = wave[: AudioConfig().clip_samples].unsqueeze(0)
    again = load_checkpoint(out)
    with torch.inference_mode():
        assert torch.equal(ckpt.model(x), again.model(x))
    assert not torch.equal(again.model.frontend.mean, torch.zeros_like(again.model.frontend.mean))


@pytest.mark.parametrize("args,message", [
    (["--widths", "64,128,256"], "parameters, over the budget of 128,000 (--max-params)"),
    (["--widths", "a,b"], "'a,b' is not a comma-separated list"),
    (["--lr", "-1"], "--lr"),
    (["--max-params", "100"], "over the budget of 100"),
])
def test_train_bad_options(tiny_data, args, message):
    res = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), *args])
    assert res.exit_code == 2 and message in res.output
    assert "Traceback" not in res.output


def test_corrupt_file_named_or_skipped(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "audio").glob("*.wav"))[3]
    victim.write_bytes(b"RIFF....not really")
    res = CliRunner().invoke(cli, ["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and victim.name in res.output and "cannot decode" in res.output
    res = CliRunner().invoke(cli, ["train", "--data", str(data), "--epochs", "1", "--skip-bad",
                                   "--out", str(tmp_path / "m.pt")])
    assert res.exit_code == 0, res.output
    assert "skipped 1 unreadable file" in res.output


def test_budget_counts_the_data_sets_own_classes(tmp_path):
    rng = np.random.default_rng(0)
    for label, colour in (("quiet", 0.05), ("loud", 0.5)):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(8):
            sf.write(tmp_path / "d" / label / f"{label}{i}.wav", colour * rng.standard_normal(16000 * 3), 16000)
    exact = count_params(ModelConfig(n_classes=2, widths=(8, 16)))
    args = ["train", "--data", str(tmp_path / "d"), "--widths", "8,16", "--epochs", "1",
            "--out", str(tmp_path / "m.pt"), "--device", "cpu"]
    res = CliRunner().invoke(cli, [*args, "--max-params", str(exact)])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "m.pt").model_cfg.n_classes == 2
    res = CliRunner().invoke(cli, [*args, "--max-params", str(exact - 1)])
    assert res.exit_code == 2 and f"model has {exact:,} parameters, over the budget of {exact - 1:,}" in res.output


def test_a_clip_is_scored_by_the_mean_of_its_window_logits():
    torch.manual_seed(0)
    model = SceneClassifier(FeatureConfig(), ModelConfig(n_classes=3, widths=(4, 8))).eval()
    mels = [torch.rand(40, n) + 0.1 for n in (94, 150, 200, 60)]
    data = MelSet(mels, torch.tensor([0, 1, 2, 0]))
    _, _, logits = score(model, data, 94, batch_size=3)
    fused = model.fused()
    with torch.inference_mode():
        for mel, got in zip(mels, logits):
            starts = window_starts(mel.shape[-1], 94)
            crops = [torch.nn.functional.pad(mel[:, s:s + 94], (0, max(0, 94 - mel.shape[-1]))) for s in starts]
            want = fused.forward_mel(torch.stack(crops)).mean(0)
            assert torch.allclose(got, want, atol=1e-5)
    assert window_starts(150, 94) == [0, 47, 56] and window_starts(200, 94) == [0, 47, 94, 106]


def _ragged(seed: int = 0) -> MelSet:
    g = torch.Generator().manual_seed(seed)
    mels = [torch.rand(40, n, generator=g) + 0.1 for n in (94, 150, 200, 60, 130, 94, 101)]
    return MelSet(mels, torch.tensor([0, 1, 2, 0, 1, 2, 0]))


def test_resident_mels_cut_the_same_windows_and_centre_crops():
    data = _ragged()
    resident = ResidentMels.of(data, 94, "cpu")
    for (x, owners), (rx, rowners) in zip(clip_windows(data, 4, 94), resident_windows(resident, 4, 94), strict=True):
        assert torch.equal(x, rx) and torch.equal(owners, rowners)
    for (x, y), (rx, ry) in zip(batches(data, 3, 94, train=False), resident_batches(resident, 3, 94, train=False),
                                strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_resident_training_crops_are_windows_of_their_own_clip():
    data = _ragged()
    resident = ResidentMels.of(data, 94, "cpu")
    gen = torch.Generator().manual_seed(0)
    offsets = set()
    for _ in range(20):
        for x, y in resident_batches(resident, 3, 94, train=True, generator=gen):
            for crop, label in zip(x, y):
                found = [(i, s) for i, mel in enumerate(data.mels) for s in range(max(1, mel.shape[-1] - 93))
                         if torch.equal(crop, torch.nn.functional.pad(mel, (0, max(0, 94 - mel.shape[-1])))[:, s:s + 94])]
                assert len(found) == 1 and data.labels[found[0][0]] == label
                offsets.add(found[0])
    assert len({i for i, _ in offsets}) == len(data)  # every clip drawn
    assert len({s for i, s in offsets if i == 2}) > 5  # at random offsets


def test_resident_fit_learns_and_scores_like_the_host_path(prepared):
    """As test_short_training_beats_chance_clearly, with the splits held as ResidentMels."""
    torch.set_num_threads(2)
    train = prepared.splits["train"]
    cfg = TrainConfig(lr=3e-3, batch_size=16, epochs=12, early_stop=12, seed=0)
    torch.manual_seed(0)
    model = SceneClassifier(FeatureConfig(noise=0.05), ModelConfig(widths=(16, 32, 48)))
    model.frontend.fit_stats(train.mels)
    result = fit(model, train, train, cfg, prepared.frames, resident=True)
    assert all(np.isfinite(h["train_loss"]) for h in result.history) and result.epochs_run == 12
    model.load_state_dict(result.best_state)
    host = score(model, train, prepared.frames)
    held = score(model, ResidentMels.of(train, prepared.frames, "cpu"), prepared.frames)
    assert host[0] == held[0] > 0.5 and torch.allclose(host[2], held[2], atol=1e-5)


def test_resident_fit_finds_a_nan_loss_in_its_first_epoch(prepared):
    broken = MelSet([m * float("nan") for m in prepared.splits["train"].mels], prepared.splits["train"].labels)
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        fit(SceneClassifier(FeatureConfig(), ModelConfig()), broken, prepared.splits["val"], TrainConfig(epochs=3),
            prepared.frames, resident=True)


def test_weight_average_is_the_plain_mean_until_its_span_then_a_moving_average():
    from torch import nn

    from sceneclf.train import WeightAverage

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(net, steps_per_epoch=2, epochs=2.0)  # span 4 steps: decay 0.75
    for k in range(1, 6):
        with torch.no_grad():
            for t in [*net.parameters(), net[1].running_mean]:
                t.fill_(float(k))
        net[1].num_batches_tracked.fill_(k)
        average.update(net)
        if k == 4:
            assert average.module[0].weight.unique().tolist() == [2.5]  # (1 + 2 + 3 + 4) / 4
    assert average.module[0].weight.unique().tolist() == [3.125]  # 0.75 * 2.5 + 0.25 * 5
    assert average.module[1].running_mean.unique().tolist() == [3.125]
    assert average.module[1].num_batches_tracked.item() == 5


@pytest.mark.parametrize("ema_epochs", [0.0, 2.0])
def test_fit_validates_and_keeps_the_averaged_weights(prepared, ema_epochs):
    """With a moving average the state kept is the average's, not the raw last weights, and the
    validation accuracy logged is that state's; without one, the raw weights are kept."""
    train, val = prepared.splits["train"], prepared.splits["val"]
    cfg = TrainConfig(batch_size=16, epochs=3, early_stop=3, seed=0, ema_epochs=ema_epochs)
    model = SceneClassifier(FeatureConfig(), ModelConfig(widths=(8, 16)))
    model.frontend.fit_stats(train.mels)
    result = fit(model, train, val, cfg, prepared.frames, keep_last=True)
    raw = model.state_dict()
    same = all(torch.equal(raw[k], v) for k, v in result.best_state.items())
    assert same == (ema_epochs == 0)
    model.load_state_dict(result.best_state)
    assert score(model, val, prepared.frames)[0] == result.history[-1]["val_accuracy"]


def test_retrain_that_never_reaches_the_trial_loss_stops_at_its_limit_and_says_so(prepared):
    """A target the retraining cannot reach (loss 0): it trains `LONGER` times the trial's
    epochs, no more, keeps the target in the checkpoint, and warns in one line."""
    from conftest import TINY_SPACE

    from sceneclf.search.record import TrialAttr
    from sceneclf.search.space import parse_space, sample
    from sceneclf.tasks.retrain import LONGER, BestTrial, retrain

    space = parse_space(TINY_SPACE)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    asked = study.ask()
    configs = sample(asked, space, len(prepared.classes))
    for key, value in {TrialAttr.BEST_TRAIN_LOSS: 0.0, TrialAttr.BEST_EPOCH: 1, TrialAttr.EPOCHS_RUN: 2}.items():
        asked.set_user_attr(key, value)
    study.tell(asked, 0.5)
    said: list[str] = []
    ckpt, history = retrain(BestTrial(study.trials[0], configs, space.budget, None), prepared, None, 0, "cpu",
                            said.append)
    assert len(history) == LONGER * 2 == ckpt.metrics["epochs"] == ckpt.train["epochs"]
    assert ckpt.train["until_train_loss"] == 0.0 == ckpt.metrics["target_train_loss"]
    assert ckpt.metrics["final_train_loss"] == history[-1]["train_loss"] > 0.0
    assert said[0] == ("training for 1 epochs (the trial's best) or more, until train_loss <= 0.0000 "
                       "(the trial's then), at most 6 epochs")
    assert said[-1] == (f"train_loss {history[-1]['train_loss']:.4f} after 6 epochs is still above the trial's "
                        "0.0000: this model may be worse than the trial's own")
