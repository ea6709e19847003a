import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sceneclf.data import synth
from sceneclf.data.synth import SCENE_CLASSES, SynthConfig, default_dataset, generate, write_dataset
from sceneclf.errors import ConfigError, DataError

TINY = SynthConfig(clips_per_class=3, locations_per_class=2, min_seconds=1.0, max_seconds=1.5)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth") / "data", TINY, seed=0)


def test_generate_covers_every_class_with_valid_audio():
    clips = generate(TINY, seed=0)
    assert len(SCENE_CLASSES) == 15 and SCENE_CLASSES[2] == "cafe/restaurant"
    assert [c.label for c in clips].count("beach") == 3
    assert {c.label for c in clips} == set(SCENE_CLASSES)
    assert len({c.name for c in clips}) == len(clips)
    for clip in clips:
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert TINY.min_seconds <= len(clip.audio) / TINY.sample_rate <= TINY.max_seconds
        assert np.isfinite(clip.audio).all() and 0 < np.abs(clip.audio).max() < 0.99
        assert "/" not in clip.name.removeprefix("audio/") and clip.name.endswith(".wav")


def test_generate_is_deterministic_and_seed_dependent():
    a, b, c = generate(TINY, 0), generate(TINY, 0), generate(TINY, 1)
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b))
    assert not any(np.array_equal(x.audio, z.audio) for x, z in zip(a, c) if len(x.audio) == len(z.audio))


def test_locations_are_unique_across_classes_and_shared_within():
    clips = generate(TINY, 0)
    by_location: dict[str, set[str]] = {}
    for clip in clips:
        by_location.setdefault(clip.location, set()).add(clip.label)
    assert len(by_location) == 15 * TINY.locations_per_class
    assert all(len(labels) == 1 for labels in by_location.values())


def test_written_files_match_manifest(tiny):
    meta = read_rows(tiny / "meta.txt")
    assert len(meta) == 15 * TINY.clips_per_class and all(len(row) == 3 for row in meta)
    assert {row[1] for row in meta} == set(SCENE_CLASSES)
    wavs = sorted(str(p.relative_to(tiny)) for p in (tiny / "audio").glob("*.wav"))
    assert wavs == sorted(row[0] for row in meta)
    info = sf.info(tiny / meta[0][0])
    assert (info.samplerate, info.channels, info.subtype) == (TINY.sample_rate, 1, "PCM_16")
    assert (tiny / synth.DONE).is_file()
    assert not [p for p in tiny.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_fold_split_is_by_location_and_covers_every_file(tiny):
    setup = tiny / "evaluation_setup"
    location = {row[0]: row[2] for row in read_rows(tiny / "meta.txt")}
    train, evaluate = read_rows(setup / "fold1_train.txt"), read_rows(setup / "fold1_evaluate.txt")
    test = read_rows(setup / "fold1_test.txt")
    assert all(len(r) == 2 for r in train + evaluate) and all(len(r) == 1 for r in test)
    assert [r[0] for r in test] == [r[0] for r in evaluate]
    train_files, eval_files = {r[0] for r in train}, {r[0] for r in evaluate}
    assert train_files | eval_files == set(location) and not train_files & eval_files
    assert not {location[f] for f in train_files} & {location[f] for f in eval_files}
    assert {r[1] for r in evaluate} == set(SCENE_CLASSES)  # every class on both sides
    assert {r[1] for r in train} == set(SCENE_CLASSES)


def test_write_is_byte_identical_for_a_seed(tiny, tmp_path):
    again = write_dataset(tmp_path / "again", TINY, seed=0)
    other = write_dataset(tmp_path / "other", TINY, seed=1)
    assert digest(again) == digest(tiny)
    changed = {k for k, v in digest(other).items() if digest(tiny).get(k) != v}
    assert any(k.startswith("audio/") for k in changed)


def test_write_replaces_a_synthetic_set_but_refuses_other_folders(tmp_path):
    out = write_dataset(tmp_path / "d", TINY, seed=0)
    before = digest(out)
    write_dataset(out, TINY, seed=1)
    assert digest(out) != before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="mine"):
        write_dataset(tmp_path / "mine", TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_default_dataset_is_generated_once(tmp_path, monkeypatch):
    calls = []
    real_build = synth._build
    monkeypatch.setattr(synth, "_build", lambda *a: calls.append(1) or real_build(*a))
    first = default_dataset(tmp_path, TINY, seed=0)
    stamp = (first / synth.DONE).stat().st_mtime_ns
    second = default_dataset(tmp_path, TINY, seed=0)
    assert first == second and first.name.startswith("synth-") and len(calls) == 1
    assert (first / synth.DONE).stat().st_mtime_ns == stamp
    assert default_dataset(tmp_path, TINY, seed=1) != first and len(calls) == 2


@pytest.mark.parametrize(
    "field, value",
    [
        ("clips_per_class", 0),
        ("clips_per_class", 1),  # fewer clips than locations
        ("locations_per_class", 1),
        ("locations_per_class", 2.5),
        ("sample_rate", 100),
        ("min_seconds", 0.0),
        ("max_seconds", 0.5),
        ("eval_fraction", 1.0),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SynthConfig(**{**vars(TINY), field: value})
