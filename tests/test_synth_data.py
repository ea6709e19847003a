"""The default generator's classes: confusable groups with shared spectra, told apart by
time-frequency structure; recording locations and devices colour clips whatever their class."""

from collections import Counter

import numpy as np
import pytest
import torch

from sceneclf.data import synth
from sceneclf.data.synth import SCENE_CLASSES, SYNTH_VERSION, SynthConfig, generate
from sceneclf.model.frontend import LOG_EPS, FeatureConfig, FrontEnd

SR = 16000
MEL = FrontEnd(FeatureConfig()).eval()


def log_mel(audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.log(MEL.mel_power(torch.from_numpy(audio)[None])[0] + LOG_EPS).numpy()


def groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in SCENE_CLASSES:
        out.setdefault(synth._CLASSES[label][0], []).append(label)
    return out


def render(label: str, n_clips: int, seed: int = 0) -> list[np.ndarray]:
    """Clips of `label` at one fixed location with fixed sources (the same for every class of
    a group), so that only the class makes a difference."""
    group, *attrs = synth._CLASSES[label]
    loc_rng = np.random.default_rng(seed)
    sources = synth._draw(synth._GROUPS[group], loc_rng, np.random.default_rng(1))
    where = synth._draw(synth._LOCATION, loc_rng, np.random.default_rng(1))
    where["level"], where["bg_level"] = -20.0, -12.0
    flat = np.ones_like
    return [log_mel(synth._render(sources, where, tuple(attrs), 3 * SR, SR, np.random.default_rng([seed, k]), flat))
            for k in range(n_clips)]


def orientation(x: np.ndarray) -> float:
    """Mean product of the time and frequency gradients: the slant of ridges and edges."""
    dt, df = np.diff(x, axis=1)[:-1, :], np.diff(x, axis=0)[:, :-1]
    return float(np.mean(dt * df))


def onset_skew(x: np.ndarray) -> float:
    """Skewness of the frame-to-frame change of loudness: > 0 for sharp onsets and slow decays."""
    d = np.diff(x.mean(0))
    return float(np.mean((d - d.mean()) ** 3) / (d.std() ** 3 + 1e-12))


def flutter(x: np.ndarray) -> float:
    """Share of the loudness envelope's modulation power between 3 and 8 Hz (frames at 31 Hz)."""
    env = x.mean(0) - x.mean()
    power = np.abs(np.fft.rfft(env)) ** 2
    hz = np.fft.rfftfreq(len(env), 512 / SR)
    return float(power[(hz > 3) & (hz < 8)].sum() / power[hz > 0.2].sum())


PATTERNS = (orientation, onset_skew, flutter)


def test_version_and_class_groups():
    assert SYNTH_VERSION == 7
    sizes = sorted(len(v) for v in groups().values())
    assert len(sizes) == 4 and min(sizes) >= 3 and max(sizes) <= 5 and sum(sizes) == 15
    for members in groups().values():  # no two classes of a group look alike
        signatures = {synth._CLASSES[label][1:] for label in members}
        assert len(signatures) == len(members)


@pytest.mark.parametrize("group", ["vehicle", "street", "indoor", "nature"])
def test_a_groups_classes_share_band_means_but_not_patterns(group):
    members = groups()[group]
    clips = {label: render(label, 6) for label in members}
    means = {label: np.mean([c.mean(1) for c in cs], axis=0) for label, cs in clips.items()}
    stds = {label: np.mean([c.std(1) for c in cs], axis=0) for label, cs in clips.items()}
    for a in members:
        for b in members:
            assert np.abs(means[a] - means[b]).max() < 0.5  # nats: within 2.2 dB in every band
            assert np.abs(stds[a] - stds[b]).max() < 0.5
    stats = {label: np.array([[f(c) for f in PATTERNS] for c in cs]) for label, cs in clips.items()}
    for a in members:
        for b in members:
            if a < b:  # some pattern tells them apart: means over 3 standard errors apart
                gap = np.abs(stats[a].mean(0) - stats[b].mean(0))
                se = np.sqrt((stats[a].var(0) + stats[b].var(0)) / len(stats[a]))
                assert (gap > 3 * se).any(), (a, b, gap / se)


def test_groups_differ_in_band_means_more_than_their_classes():
    means = {label: np.mean([c.mean(1) for c in render(label, 3)], axis=0) for label in SCENE_CLASSES}
    within, between = [], []
    for a in SCENE_CLASSES:
        for b in SCENE_CLASSES:
            if a < b:
                gap = np.abs(means[a] - means[b]).max()
                (within if synth._CLASSES[a][0] == synth._CLASSES[b][0] else between).append(gap)
    assert max(within) < min(between)


def test_locations_colour_clips_more_than_classes_of_a_group_differ():
    """Band means (log-mel over a clip) spread more across a class's locations than the
    location-averaged band means of a group's classes spread across its classes."""
    cfg = SynthConfig(clips_per_class=8, locations_per_class=8, min_seconds=3.0, max_seconds=3.0)
    members = [SCENE_CLASSES.index(label) for label in groups()["vehicle"]]
    means = np.array([[log_mel(synth._clip(cfg, 0, c, i, set()).audio).mean(1) for i in range(8)] for c in members])
    across_locations = means.var(axis=1).mean()  # (classes, locations, bands) -> one number
    across_classes = means.mean(axis=1).var(axis=0).mean()
    assert across_locations > 4 * across_classes


def test_generate_is_bit_identical_for_a_seed():
    cfg = SynthConfig(clips_per_class=2, locations_per_class=2, min_seconds=1.0, max_seconds=1.2)
    a, b = generate(cfg, 3), generate(cfg, 3)
    assert [c.name for c in a] == [c.name for c in b]
    assert all(x.audio.tobytes() == y.audio.tobytes() for x, y in zip(a, b))


def test_default_config_gives_val_and_test_of_300_clips():
    """The split of the default set: its locations' roles, as the fold's lists record them."""
    cfg = SynthConfig()
    roles = synth.location_roles(cfg, 0)
    rows = [(label, roles.get(f"{synth._LOC_PREFIX[c]}{i % cfg.locations_per_class:03d}", "train"))
            for c, label in enumerate(SCENE_CLASSES) for i in range(cfg.clips_per_class)]
    assert Counter(split for _, split in rows) == {"train": 900, "val": 300, "test": 300}
    assert {label for label, split in rows if split == "test"} == set(SCENE_CLASSES)
    assert {label for label, split in rows if split == "val"} == set(SCENE_CLASSES)


def test_a_config_without_val_locations_leaves_validation_to_the_carve():
    roles = synth.location_roles(SynthConfig(val_fraction=0.0), 0)
    assert set(roles.values()) == {"test"} and len(roles) == 15 * 4
    few = synth.location_roles(SynthConfig(clips_per_class=2, locations_per_class=2), 0)
    assert list(few.values()) == ["test"] * 15  # one location each for test and train, none left


def test_devices_as_in_tau_2020_mobile():
    """Training locations are heard mostly through the flat device "a", never through s1-s6;
    validation locations through a, b, c and s1-s3 alike; test locations through a, b, c, s4-s6."""
    cfg = SynthConfig(clips_per_class=60, locations_per_class=10, min_seconds=0.5, max_seconds=0.5)
    roles = synth.location_roles(cfg, 0)
    clips = generate(cfg, 0)
    devices = {role: [c.device for c in clips if roles.get(c.location, "train") == role]
               for role in ("train", "val", "test")}
    train = devices["train"]
    assert 0.8 < train.count("a") / len(train) < 1.0
    assert set(train) == {"a", "b", "c"}
    assert set(devices["val"]) == {"a", "b", "c", "s1", "s2", "s3"} == set(synth.VAL_DEVICES)
    assert set(devices["test"]) == {"a", "b", "c", "s4", "s5", "s6"} == set(synth.TEST_DEVICES)
    assert all(c.name.endswith(f"_{c.device}.wav") for c in clips)


def test_device_responses_are_fixed_per_device_and_differ():
    f = np.fft.rfftfreq(1024, 1 / SR)
    assert np.array_equal(synth.device_response(f, 0, "a"), np.ones_like(f))
    responses = {d: 20 * np.log10(synth.device_response(f, 0, d)[4:480]) for d in synth.DEVICES}
    assert np.array_equal(responses["s4"], 20 * np.log10(synth.device_response(f, 0, "s4")[4:480]))
    for a in synth.DEVICES:
        for b in synth.DEVICES:
            if a < b:  # every two devices colour some band by more than 6 dB differently
                assert np.abs(responses[a] - responses[b]).max() > 6


def test_device_responses_depart_from_flat_by_a_set_amount():
    for device in synth.DEVICES[1:]:
        db = 20 * np.log10(synth.device_response(synth._DEVICE_GRID, 0, device))
        assert db.std() == pytest.approx(synth._DEVICE_SD[device[0]], rel=1e-9)
    assert synth._DEVICE_SD["b"] == synth._DEVICE_SD["c"] < synth._DEVICE_SD["s"]
