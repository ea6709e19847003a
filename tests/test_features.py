import pytest
import torch

from sceneclf.errors import ConfigError
from sceneclf.model.frontend import FeatureConfig, FrontEnd


def test_two_channel_shape_and_frames():
    cfg = FeatureConfig()
    fe = FrontEnd(cfg).eval()
    x = fe(torch.randn(3, 48000) * 0.1)
    assert x.shape == (3, 2, cfg.n_mels, cfg.frames(48000))


def test_noise_only_in_training():
    fe = FrontEnd(FeatureConfig(noise=0.3))
    mel = fe.mel_power(torch.randn(2, 16000) * 0.1)
    fe.eval()
    assert torch.equal(fe.from_mel(mel), fe.from_mel(mel))
    fe.train()
    assert not torch.allclose(fe.from_mel(mel), fe.from_mel(mel))
    quiet = FrontEnd(FeatureConfig(noise=0.0)).train()
    assert torch.equal(quiet.from_mel(mel), quiet.from_mel(mel))


def test_mel_domain_noise_matches_waveform_noise():
    """The noise added to cached mels has the mean power that white noise added to the waveform
    puts into each band (within 15 %)."""
    torch.manual_seed(0)
    fe = FrontEnd(FeatureConfig(noise=1.0))
    t = torch.arange(64000)
    sig = (0.3 * torch.sin(t * 0.05) + 0.05 * torch.randn(64000)).unsqueeze(0)
    mel = fe.mel_power(sig)
    level = 0.5
    real = (fe.mel_power(sig + level * sig.pow(2).mean().sqrt() * torch.randn(1, 64000)) - mel).mean(-1)
    fe.train()
    draws = torch.stack([fe._noise_mel(mel) for _ in range(400)])  # level ~ U(0, 1)
    # E[level^2] for level ~ U(0,1) is 1/3
    model = draws.mean((0, 3)) * 3 * level ** 2
    ratio = real / model
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.15)


def test_fit_stats_normalises_training_features():
    fe = FrontEnd(FeatureConfig())
    mels = [fe.mel_power(torch.randn(1, 16000) * s)[0] for s in (0.01, 0.1, 1.0)]
    fe.fit_stats(mels)
    fe.eval()
    x = torch.cat([fe.from_mel(m.unsqueeze(0)) for m in mels], dim=-1)
    assert x.mean(-1).abs().max() < 1e-3
    assert (x.std(-1) - 1).abs().max() < 0.05


def test_invalid_feature_config():
    with pytest.raises(ConfigError, match="n_mels"):
        FeatureConfig(n_mels=2)
    with pytest.raises(ConfigError, match="noise"):
        FeatureConfig(noise=-1)
