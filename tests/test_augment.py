import pytest
import torch

from sceneclf.model.augment import DeviceResponse, FreqMixStyle, Mixup, SpecAugment, TimeShift, soft_cross_entropy
from sceneclf.errors import ConfigError


def batch(b: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, 40, 94, generator=g) * torch.rand(1, 1, 40, 1, generator=g) * 3 + 1


ALL = [FreqMixStyle(p=1.0), SpecAugment(), TimeShift(20)]


@pytest.mark.parametrize("module", ALL, ids=lambda m: type(m).__name__)
def test_identity_in_eval_mode_and_shape_kept_in_training(module):
    x = batch()
    assert module.eval()(x) is x
    torch.manual_seed(0)
    y = module.train()(x)
    assert y.shape == x.shape and y.dtype == x.dtype and not torch.equal(y, x)


def test_device_response_is_one_smooth_gain_curve_per_clip_within_its_bounds():
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(64, 40, 50, generator=g) + 0.1  # mel power (B, n_mels, T)
    module = DeviceResponse(p=1.0, max_db=6.0)
    assert module.eval()(mel) is mel
    torch.manual_seed(0)
    out = module.train()(mel)
    db = 10 * torch.log10(out / mel)  # (B, n_mels, T)
    assert torch.allclose(db, db[..., :1].expand_as(db), atol=1e-3)  # one gain per band, all frames
    curve = db[..., 0]
    assert curve.abs().max() <= 6.0 * (1 + DeviceResponse.PEAKS) + 1e-3  # tilt + peaks, each within max_db
    assert (curve.abs().amax(1) > 0.1).all()  # p = 1: every clip is coloured
    assert (curve.diff(dim=1).abs().amax(1) < 6.0).all()  # smooth across neighbouring bands
    assert not torch.allclose(curve[0], curve[1])  # each clip its own response


def test_device_response_probability_picks_clips():
    mel = torch.ones(4000, 16, 3)
    torch.manual_seed(0)
    out = DeviceResponse(p=0.25, max_db=10.0).train()(mel)
    untouched = (out == mel).all(dim=(1, 2)).float().mean().item()
    assert abs(untouched - 0.75) < 0.03
    assert DeviceResponse(p=0.0).train()(mel) is mel


def test_mixup_eval_is_identity_with_one_hot_targets():
    x, y = batch(), torch.tensor([0, 1, 2, 3, 4, 5])
    out, target = Mixup(15).eval()(x, y)
    assert out is x and torch.equal(target, torch.nn.functional.one_hot(y, 15).float())


def test_freq_mixstyle_keeps_a_batch_of_one():
    x = batch(1)
    torch.manual_seed(0)
    assert torch.allclose(FreqMixStyle(p=1.0).train()(x), x, atol=1e-5)


def test_freq_mixstyle_mixes_band_statistics_and_keeps_the_pattern():
    x = batch(8)
    torch.manual_seed(1)
    y = FreqMixStyle(p=1.0, alpha=0.5).train()(x)
    z = lambda t: (t - t.mean(3, keepdim=True)) / t.std(3, keepdim=True)  # noqa: E731
    assert torch.allclose(z(y), z(x), atol=1e-4)  # per-band pattern over time unchanged
    # New band means lie between the clips' own means (convex mixes of two of them).
    mu, new = x.mean(3), y.mean(3)
    assert (new >= mu.min(0).values - 1e-4).all() and (new <= mu.max(0).values + 1e-4).all()
    assert not torch.allclose(new, mu)


def test_freq_mixstyle_p_zero_never_mixes():
    x = batch()
    assert FreqMixStyle(p=0.0).train()(x) is x


def test_mixup_targets_sum_to_one_and_match_the_mix():
    torch.manual_seed(0)
    x = torch.zeros(32, 2, 40, 10)
    y = torch.randint(0, 15, (32,))
    x += y.view(-1, 1, 1, 1).float()  # each clip's value is its label, so the mix is readable
    out, target = Mixup(15, alpha=0.4).train()(x, y)
    assert target.shape == (32, 15)
    assert torch.allclose(target.sum(1), torch.ones(32)) and (target >= 0).all()
    expected = (target * torch.arange(15.0)).sum(1)  # the label mix, as a value
    assert torch.allclose(out[:, 0, 0, 0], expected, atol=1e-5)
    assert torch.allclose(out.amin((1, 2, 3)), out.amax((1, 2, 3)))


def test_soft_cross_entropy_matches_hard_labels():
    logits, y = torch.randn(5, 15), torch.tensor([1, 4, 0, 14, 7])
    hard = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 15).float()), hard)


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_spec_augment_fills_exactly_the_masked_cells(fill):
    x = batch()
    aug = SpecAugment(freq_masks=2, freq_width=8, time_masks=2, time_width=20, fill=fill).train()
    torch.manual_seed(3)
    mask = aug.mask(x)
    torch.manual_seed(3)
    y = aug(x)
    full = mask.expand_as(x)
    value = torch.zeros_like(x) if fill == "zero" else x.mean((2, 3), keepdim=True).expand_as(x)
    assert torch.equal(y[full], value[full]) and torch.equal(y[~full], x[~full])
    assert mask.any()
    # Masks are whole bands and whole spans: a masked cell's row or column is masked throughout.
    m = mask[:, 0]
    rows, cols = m.all(2), m.all(1)
    assert torch.equal(m, rows[:, :, None] | cols[:, None, :])


def test_spec_augment_widths_are_bounded():
    x = batch(64)
    torch.manual_seed(0)
    m = SpecAugment(freq_masks=1, freq_width=5, time_masks=0).train().mask(x)[:, 0]
    assert m.all(2).sum(1).max() <= 5 and not m.all(1).any()


def test_time_shift_is_a_roll_per_clip():
    x = batch()
    torch.manual_seed(0)
    y = TimeShift(10).train()(x)
    for i in range(len(x)):
        assert any(torch.equal(y[i], torch.roll(x[i], s, dims=-1)) for s in range(-10, 11))


@pytest.mark.parametrize("make", [lambda: FreqMixStyle(p=2.0), lambda: Mixup(1), lambda: SpecAugment(fill="x"),
                                  lambda: TimeShift(-1), lambda: DeviceResponse(p=-0.1), lambda: DeviceResponse(max_db=50)])
def test_bad_settings_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_augment_config_runs_in_fit_and_changes_training():
    """The same seeded fit with and without augmentation: the first epoch's loss differs, and
    the model evaluates the same way afterwards (augmentation is training-only)."""
    from sceneclf.data.melset import MelSet
    from sceneclf.model.augment import AugmentConfig
    from sceneclf.model.budget import Budget
    from sceneclf.model.cnn import ModelConfig
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.train import TrainConfig, train_model

    g = torch.Generator().manual_seed(0)
    data = MelSet([torch.rand(40, 100, generator=g) + 0.1 for _ in range(24)], torch.tensor([i % 3 for i in range(24)]))
    cfg = (FeatureConfig(), ModelConfig(n_classes=3, widths=(4, 8)), TrainConfig(epochs=1, batch_size=8), Budget())
    _, plain = train_model(*cfg, data, data, 94)
    heavy = AugmentConfig(mixstyle_p=1.0, mixup_alpha=0.4, freq_masks=2, time_masks=2, time_shift=10)
    _, augmented = train_model(*cfg, data, data, 94, augment=heavy)
    assert plain.history[0]["train_loss"] != augmented.history[0]["train_loss"]
    _, coloured = train_model(*cfg, data, data, 94, augment=AugmentConfig(response_p=1.0, response_db=20.0))
    assert plain.history[0]["train_loss"] != coloured.history[0]["train_loss"]


def test_augment_config_refuses_bad_values():
    from sceneclf.model.augment import AugmentConfig

    with pytest.raises(ConfigError, match="mixstyle_p 2"):
        AugmentConfig(mixstyle_p=2.0)
    with pytest.raises(ConfigError, match="mixup_alpha -1"):
        AugmentConfig(mixup_alpha=-1.0)
    with pytest.raises(ConfigError, match="response_db 41"):
        AugmentConfig(response_db=41.0)
