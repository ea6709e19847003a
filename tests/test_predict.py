"""`sceneclf predict`: long, short, stereo, 44.1 kHz, FLAC and corrupt files; windows and averaging."""

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from click.testing import CliRunner

from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig, fit_length
from sceneclf.model.checkpoint import Checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig
from sceneclf.tasks.predict import read_windows, window_starts

CLASSES = ("alpha", "beta", "gamma", "delta")
RATE = 16000


def scene(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Noise plus a tone whose pitch and level change over time, so windows differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * (300 + 40 * t) * t) * (0.2 + 0.15 * np.sin(2 * np.pi * 0.1 * t))
    return (0.05 * rng.standard_normal(len(t)) + tone).astype(np.float32)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A randomly initialised (seeded) 4-class model: its outputs depend on the input."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_classes=len(CLASSES), widths=(8, 16))
    model = SceneClassifier(FeatureConfig(), cfg).eval()
    with torch.no_grad():  # spread the logits so the classes' probabilities differ clearly
        model.cnn.head.weight.mul_(20)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    return save_checkpoint(path, Checkpoint(model, AudioConfig(), FeatureConfig(), cfg, CLASSES)), model


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    sf.write(d / "long.wav", scene(20.0), RATE, subtype="PCM_16")
    sf.write(d / "short.wav", scene(0.2, seed=1), RATE, subtype="FLOAT")
    mono = scene(5.0, seed=2)
    sf.write(d / "mono.wav", mono, RATE, subtype="FLOAT")
    sf.write(d / "stereo.wav", np.stack([mono, mono], axis=1), RATE, subtype="FLOAT")
    sf.write(d / "cd.wav", scene(4.0, rate=44100, seed=3), 44100, subtype="PCM_24")
    sf.write(d / "field.flac", scene(7.3, rate=22050, seed=4), 22050, format="FLAC")
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 20)
    (d / "notes.txt").write_text("not audio, and not looked at inside a folder")
    return d


def run(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)


def test_window_starts_cover_the_recording():
    assert window_starts(100, 300) == [0]
    assert window_starts(300, 300) == [0]
    starts = window_starts(20 * RATE, 3 * RATE)
    assert starts[:3] == [0, 24000, 48000]
    assert starts[-1] == 17 * RATE  # the last window ends at the end of the recording
    assert all(b - a <= 3 * RATE // 2 for a, b in zip(starts, starts[1:]))


def test_predict_folder_every_kind_of_file(model_file, recordings):
    res = run(model_file[0], recordings, "--format", "json")
    assert res.exit_code == 1  # one file could not be read
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"long.wav", "short.wav", "mono.wav", "stereo.wav", "cd.wav", "field.flac", "broken.wav"}
    assert "cannot decode audio" in rows["broken.wav"]["error"]
    for name, row in rows.items():
        if name == "broken.wav":
            continue
        assert [t["label"] for t in row["top"]] and len(row["top"]) == 3
        probs = [t["probability"] for t in row["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert rows["long.wav"]["seconds"] == pytest.approx(20.0)
    assert rows["field.flac"]["seconds"] == pytest.approx(7.3, abs=1e-3)
    assert "1 of 7 file(s) could not be read" in res.stderr


def test_stereo_is_downmixed_and_rates_are_resampled(model_file, recordings):
    res = run(model_file[0], recordings / "mono.wav", recordings / "stereo.wav", "--format", "json",
              "--top-k", "4")
    assert res.exit_code == 0, res.output
    mono, stereo = (json.loads(res.stdout)[i]["top"] for i in (0, 1))
    assert mono == stereo
    # The same scene written at 44.1 kHz and at 16 kHz gives nearly the same scores.
    wave = sf.read(recordings / "cd.wav", dtype="float32")[0]
    resampled = AF.resample(torch.from_numpy(wave), 44100, RATE).numpy()
    sf.write(recordings.parent / "cd_at_16k.wav", resampled, RATE, subtype="FLOAT")
    res = run(model_file[0], recordings / "cd.wav", recordings.parent / "cd_at_16k.wav", "--format", "json",
              "--top-k", "4")
    a, b = ({t["label"]: t["probability"] for t in r["top"]} for r in json.loads(res.stdout))
    assert max(abs(a[c] - b[c]) for c in CLASSES) < 0.02


def test_windows_are_averaged_and_listed(model_file, recordings):
    path, model = model_file
    res = run(path, recordings / "long.wav", "--format", "json", "--per-window", "--top-k", "4")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    wins = row["per_window"]
    assert [w["start"] for w in wins] == [s / RATE for s in window_starts(20 * RATE, 3 * RATE)]
    probs = np.array([[{t["label"]: t["probability"] for t in w["top"]}[c] for c in CLASSES] for w in wins])
    mean = {t["label"]: t["probability"] for t in row["top"]}
    # The file's probabilities are the softmax of the windows' mean logits (log-probabilities differ
    # from logits by one constant per window, which the softmax removes).
    expected = torch.softmax(torch.from_numpy(np.log(probs)).mean(0), 0).numpy()
    assert expected == pytest.approx([mean[c] for c in CLASSES], abs=1e-5)
    assert probs.std(0).max() > 1e-4  # windows differ: the average is not trivial
    # The window starting at 1.5 s is exactly that stretch of the recording through the model.
    wave = sf.read(recordings / "long.wav", dtype="float32")[0]
    with torch.inference_mode():
        direct = torch.softmax(model(torch.from_numpy(wave[24000:72000])[None]), 1)[0].numpy()
    assert probs[1] == pytest.approx(direct, abs=1e-5)


def test_resampled_windows_match_resampling_the_whole_recording(tmp_path):
    """Windows are read and resampled a batch-sized stretch at a time; the stretches' edges must not
    show: every window equals the same stretch cut from the whole recording resampled at once."""
    wave = scene(40.0, rate=44100, seed=5)
    sf.write(tmp_path / "long44k.wav", wave, 44100, subtype="FLOAT")
    whole = AF.resample(torch.from_numpy(wave), 44100, RATE).numpy()
    cfg = AudioConfig()
    starts = window_starts(len(whole), cfg.clip_samples)
    got = [w for _, _, batch in read_windows(tmp_path / "long44k.wav", cfg, batch=4) for w in batch.numpy()]
    assert len(got) == len(starts) > 8  # several stretches of 4 windows
    for start, window in zip(starts, got):
        expected = fit_length(whole[start:start + cfg.clip_samples], cfg.clip_samples, cfg.clip_samples)
        assert np.abs(window - expected).max() < 1e-3, start


def test_short_file_is_padded_like_training(model_file, recordings):
    path, model = model_file
    res = run(path, recordings / "short.wav", "--format", "json", "--top-k", "4")
    got = {t["label"]: t["probability"] for t in json.loads(res.stdout)[0]["top"]}
    wave = sf.read(recordings / "short.wav", dtype="float32")[0]
    with torch.inference_mode():
        direct = torch.softmax(model(torch.from_numpy(fit_length(wave, 3 * RATE, 3 * RATE))[None]), 1)[0]
    assert [got[c] for c in CLASSES] == pytest.approx(direct.tolist(), abs=1e-5)


def test_samples_far_outside_the_audio_range_get_an_error_row(model_file, tmp_path):
    """As in training (`read_audio`), absurd sample values are refused by name, not turned into
    NaN probabilities; the other files still get theirs."""
    sf.write(tmp_path / "absurd.wav", np.full(3 * RATE, 1e30, dtype="float32"), RATE, subtype="FLOAT")
    sf.write(tmp_path / "fine.wav", scene(3.0, seed=6), RATE, subtype="FLOAT")
    res = run(model_file[0], tmp_path / "absurd.wav", tmp_path / "fine.wav", "--format", "json")
    assert res.exit_code == 1
    absurd, fine = json.loads(res.stdout)
    assert "far outside -1..1" in absurd["error"]
    assert all(np.isfinite(t["probability"]) for t in fine["top"])


def test_table_and_csv_output_and_errors(model_file, recordings, tmp_path):
    res = run(model_file[0], recordings / "field.flac", recordings / "broken.wav", tmp_path / "missing.wav")
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{recordings / 'field.flac'}  (7.3 s)")
    assert "broken.wav  ERROR: cannot decode audio" in lines[1]
    assert "missing.wav  ERROR: no such file or folder" in lines[2]
    res = run(model_file[0], recordings / "long.wav", recordings / "broken.wav", "--format", "csv",
              "--per-window", "--top-k", "2")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == ["file", "window_start", "label_1", "probability_1", "label_2", "probability_2", "error"]
    assert rows[0]["window_start"] == "" and len(rows) == 1 + 13 + 1
    assert rows[-1]["error"].startswith("cannot decode audio") and rows[-1]["label_1"] == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run(model_file[0], empty)
    assert res.exit_code == 1 and "no audio files in folder" in res.stdout
    res = run(tmp_path / "nope.pt", recordings / "long.wav")
    assert res.exit_code == 2 and "nope.pt: checkpoint not found" in res.output
