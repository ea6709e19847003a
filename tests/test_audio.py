import numpy as np
import pytest
import soundfile as sf
import torch

from sceneclf.data.audio import AudioConfig, WaveformCache, crop, fit_length, read_audio
from sceneclf.errors import DataError

CFG = AudioConfig(sample_rate=16000, clip_seconds=1.0, max_seconds=3.0)


def write(path, seconds, rate, channels=1, subtype="PCM_16", fmt=None):
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return path


@pytest.mark.parametrize("name,seconds,rate,channels,subtype", [
    ("a.wav", 2.0, 16000, 1, "PCM_16"),
    ("b.wav", 2.0, 44100, 2, "PCM_24"),
    ("c.wav", 0.3, 8000, 1, "PCM_U8"),
    ("d.wav", 5.0, 48000, 6, "FLOAT"),
    ("e.flac", 1.5, 22050, 2, "PCM_16"),
    ("f.ogg", 1.5, 16000, 1, "VORBIS"),
])
def test_decode_resample_downmix_pad_crop(tmp_path, name, seconds, rate, channels, subtype):
    wave = read_audio(write(tmp_path / name, seconds, rate, channels, subtype), CFG)
    expected = min(max(int(round(seconds * 16000)), CFG.clip_samples), CFG.max_samples)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - expected) <= 2
    # a 440 Hz tone survives resampling: peak of the spectrum at 440 Hz
    if seconds >= 1:
        spec = np.abs(np.fft.rfft(wave))
        assert abs(np.argmax(spec) * 16000 / len(wave) - 440) < 5


def test_crop_and_fit_length():
    w = torch.arange(10.0)
    assert crop(w, 4).tolist() == [3, 4, 5, 6]
    assert crop(w, 4, offset=0).tolist() == [0, 1, 2, 3]
    assert crop(w, 12).shape[-1] == 12
    assert len(fit_length(np.ones(5, np.float32), 9, 20)) == 9
    assert len(fit_length(np.ones(50, np.float32), 9, 20)) == 20


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(DataError, match="bad.wav: cannot decode"):
        read_audio(bad, CFG)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.wav"):
        read_audio(empty, CFG)


def test_cache_hit_on_second_run_and_rebuild_when_corrupt(tmp_path):
    f = write(tmp_path / "x.wav", 1.0, 16000)
    cache = WaveformCache(tmp_path / "cache", CFG)
    first = cache.load(f)
    assert (cache.hits, cache.misses) == (0, 1)
    again = WaveformCache(tmp_path / "cache", CFG)
    assert np.array_equal(again.load(f), first) and again.hits == 1
    again.path_for(f).write_bytes(b"garbage")
    third = WaveformCache(tmp_path / "cache", CFG)
    assert np.array_equal(third.load(f), first) and third.misses == 1


def test_preparing_sweeps_temporaries_a_killed_writer_left(tmp_path, tiny_data):
    """A kill between writing a cache entry's temporary and renaming it leaves `.NAME.*.tmp`
    behind; the next run removes those over an hour old and leaves younger ones (a writer that
    may still be at work) alone."""
    import os
    import time

    from sceneclf.data.prepare import DataConfig, prepare
    from sceneclf.model.frontend import FeatureConfig

    cache = tmp_path / "cache"
    old_file = cache / "mel" / "ab" / ".abc.npy.x1y2.tmp"
    old_dir = cache / "datasets" / ".synth-1.k3j4.tmp"
    young = cache / "wave" / "cd" / ".cde.npy.z9.tmp"
    for path in (old_file, young):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half a write")
    (old_dir / "audio").mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    for path in (old_file, old_dir):
        os.utime(path, (two_hours_ago, two_hours_ago))
    data = prepare(DataConfig(data=tiny_data), AudioConfig(), FeatureConfig(), cache)
    assert len(data.splits["train"]) > 0
    assert not old_file.exists() and not old_dir.exists()
    assert young.exists()
    assert not [p for p in cache.rglob("*.tmp") if p != young]  # the run itself left none
