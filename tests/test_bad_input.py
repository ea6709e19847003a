"""Bad and odd input, each built for real by the test, each with the expected outcome: a clear
one-line error naming the file or option (exit code 2, no traceback), or correct handling.

Most cases are a small CSV data set (2 classes x 3 clips, explicit train/val/test split) where
one thing is odd, run through `sceneclf train --epochs 1`; the store cases run `sceneclf search`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pytest
import soundfile as sf
from click.testing import CliRunner
from mlflow_store import mlflow_template, tracking_uri  # noqa: F401  (fixtures)

from sceneclf.cli import cli
from sceneclf.model.checkpoint import load_checkpoint

RATE = 16000
SPLITS = ("train", "val", "test")


def tone(path: Path, seconds: float = 0.5, rate: int = RATE, channels: int = 1, subtype: str = "PCM_16",
         freq: float = 440.0, fmt: str | None = None) -> Path:
    t = np.arange(max(1, int(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return path


def dataset(root: Path, rows: list[str] | None = None, header: str = "path,label,split",
            newline: str = "\n", labels: tuple[str, str] = ("a", "b")) -> Path:
    """root/manifest.csv over root/<label-index>_<n>.wav: per class one train, one val, one test clip."""
    if rows is None:
        rows = []
        for k, label in enumerate(labels):
            for n, split in enumerate(SPLITS):
                tone(root / f"c{k}_{n}.wav", freq=300 + 400 * k)
                rows.append(f"c{k}_{n}.wav,{label},{split}")
    (root / "manifest.csv").write_bytes((newline.join([header, *rows]) + newline).encode("utf-8"))
    return root


def odd_clip(make: Callable[[Path], object]) -> Callable[[Path], Path]:
    """The data set with its first training clip (c0_0.wav) replaced by `make(path)`."""
    def build(root: Path) -> Path:
        dataset(root)
        target = root / "c0_0.wav"
        target.unlink()
        make(target)
        return root
    return build


def write_bytes(data: bytes) -> Callable[[Path], object]:
    return lambda p: p.write_bytes(data)


def truncated(p: Path) -> None:
    tone(p, seconds=0.5)
    p.write_bytes(p.read_bytes()[:44 + 1000])  # the header promises 16,000 bytes of samples


def nan_clip(p: Path) -> None:
    sf.write(p, np.full(8000, np.nan, dtype="float32"), RATE, subtype="FLOAT")


def escaping(how: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        outside = tone(root.parent / "outside" / "secret.wav")
        dataset(root)
        if how == "dotdot":
            listed = "../outside/secret.wav"
        elif how == "absolute":
            listed = str(outside)
        else:
            (root / "link.wav").symlink_to(outside)
            listed = "link.wav"
        text = (root / "manifest.csv").read_text().replace("c0_0.wav", listed)
        (root / "manifest.csv").write_text(text)
        return root
    return build


def labels_spaces_unicode(root: Path) -> Path:
    return dataset(root, labels=("city centre", "Café – 北京 straße"))


def missing_column(root: Path) -> Path:
    dataset(root)
    text = (root / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_text("\n".join(["path,split"] + [",".join(r.split(",")[::2]) for r in text[1:]]))
    return root


def duplicated_rows(root: Path) -> Path:
    dataset(root)
    rows = (root / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_text("\n".join(rows + rows[1:] + rows[1:3]) + "\n")
    return root


def crlf(root: Path) -> Path:
    return dataset(root, newline="\r\n")


def empty_class_folder(root: Path) -> Path:
    """Folders layout: two class folders with clips, one empty class folder."""
    for k, label in enumerate(("a", "b")):
        for n in range(6):
            tone(root / label / f"g{n}_{k}.wav", freq=300 + 400 * k)
    (root / "empty").mkdir()
    return root


def one_class(root: Path) -> Path:
    for n in range(3):
        tone(root / f"c0_{n}.wav")
    return dataset(root, rows=[f"c0_{n}.wav,a,{s}" for n, s in enumerate(SPLITS)])


def class_all_unreadable(root: Path) -> Path:
    """With --skip-bad, every clip of class b is unreadable."""
    dataset(root)
    for n in range(3):
        (root / f"c1_{n}.wav").write_text("not audio")
    return root


def one_clip_per_class(root: Path) -> Path:
    for label in ("a", "b"):
        tone(root / label / "x.wav")
    return root


def header_only(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("path,label\n")
    return root


def not_utf8(root: Path) -> Path:
    dataset(root)
    (root / "manifest.csv").write_bytes("path,label\nc0_0.wav,caf\xe9\n".encode("latin-1"))
    return root


@dataclass
class Case:
    name: str
    build: Callable[[Path], Path] | None  # the data set (None: a plain one)
    error: tuple[str, ...] = ()  # substrings of the one-line error; () means it must work
    command: str = "train"
    extra: list[str] = field(default_factory=list)
    check: Callable[[Path, str], None] | None = None  # (work folder, output) -> assertions


def classes_are(*names: str) -> Callable[[Path, str], None]:
    def check(work: Path, output: str) -> None:
        assert load_checkpoint(work / "m.pt").classes == tuple(sorted(names))
    return check


def reads_train_clips(n: int) -> Callable[[Path, str], None]:
    def check(work: Path, output: str) -> None:
        assert f"train {n}," in output, output
    return check


CASES = [
    Case("zero-byte file", odd_clip(write_bytes(b"")), ("c0_0.wav", "cannot decode audio")),
    Case("truncated WAV", odd_clip(truncated), check=reads_train_clips(2)),
    Case("text file named .wav", odd_clip(write_bytes(b"hello, I am not a sound\n" * 20)),
         ("c0_0.wav", "cannot decode audio")),
    Case("silence", odd_clip(lambda p: sf.write(p, np.zeros(8000), RATE))),
    Case("clip of NaNs (float WAV)", odd_clip(nan_clip), ("c0_0.wav", "NaN or infinite samples")),
    Case("1 sample long", odd_clip(lambda p: tone(p, seconds=1 / RATE))),
    Case("10-minute file", odd_clip(lambda p: tone(p, seconds=600))),
    Case("8-bit", odd_clip(lambda p: tone(p, subtype="PCM_U8"))),
    Case("24-bit", odd_clip(lambda p: tone(p, subtype="PCM_24"))),
    Case("32-bit float", odd_clip(lambda p: tone(p, subtype="FLOAT"))),
    Case("6 channels", odd_clip(lambda p: tone(p, channels=6))),
    Case("8 kHz", odd_clip(lambda p: tone(p, rate=8000))),
    Case("96 kHz", odd_clip(lambda p: tone(p, rate=96000))),
    Case("FLAC named .wav", odd_clip(lambda p: tone(p, fmt="FLAC", subtype="PCM_16"))),
    Case("OGG Vorbis named .wav", odd_clip(lambda p: tone(p, fmt="OGG", subtype="VORBIS"))),
    Case("labels with spaces and unicode", labels_spaces_unicode,
         check=classes_are("city centre", "Café – 北京 straße")),
    Case("manifest missing a column", missing_column, ("manifest.csv", "missing column 'label'")),
    Case("duplicated rows", duplicated_rows, check=reads_train_clips(2)),
    Case("Windows line endings", crlf, check=classes_are("a", "b")),
    Case("path with .. out of the data folder", escaping("dotdot"),
         ("manifest.csv line 2", "../outside/secret.wav", "escapes the data folder")),
    Case("absolute path outside the data folder", escaping("absolute"),
         ("manifest.csv line 2", "secret.wav", "escapes the data folder")),
    Case("symlink out of the data folder", escaping("symlink"),
         ("manifest.csv line 2", "link.wav", "escapes the data folder")),
    Case("empty class folder", empty_class_folder, check=classes_are("a", "b")),
    Case("a class whose clips are all unreadable (--skip-bad)", class_all_unreadable,
         ("/data: class 'b' has no usable training clips",), extra=["--skip-bad"]),
    Case("a single class", one_class, ("/data: only 1 class ('a')", "at least 2")),
    Case("one clip per class (nothing for validation)", one_clip_per_class,
         ("/data: the validation split is empty",)),
    Case("float WAV with absurd values (1e30)", odd_clip(lambda p: sf.write(
        p, np.full(8000, 1e30, dtype="float32"), RATE, subtype="FLOAT")), ("c0_0.wav", "outside")),
    Case("manifest with a header only", header_only, ("manifest.csv", "no clips listed")),
    Case("manifest not UTF-8", not_utf8, ("manifest.csv", "not UTF-8")),
    Case("--cache-dir is a file", None, ("--cache-dir",), extra=["--cache-dir", "{work}/afile"]),
    Case("--out under a file", None, ("--out",), extra=["--out", "{work}/afile/m.pt"]),
    Case("storage URL with an unknown scheme", None, ("--storage foo://x", "cannot open"),
         command="search", extra=["--storage", "foo://x"]),
    Case("PostgreSQL storage (psycopg) nobody listens on", None,
         ("--storage postgresql+psycopg://nouser@127.0.0.1:1/x", "cannot open"),
         command="search", extra=["--storage", "postgresql+psycopg://nouser@127.0.0.1:1/x"]),
    Case("PostgreSQL storage, default driver, nobody listening", None,
         ("--storage postgresql://nouser@127.0.0.1:1/x", "cannot open"),
         command="search", extra=["--storage", "postgresql://nouser@127.0.0.1:1/x"]),
    Case("storage file that is not a database", None, ("--storage", "cannot open"),
         command="search", extra=["--storage", "sqlite:///{work}/afile"]),
    Case("journal storage file that is garbage", None, ("--storage", "journal.log"),
         command="search", extra=["--storage", "{work}/journal.log"]),
    Case("unreachable tracking URI", None, ("--tracking-uri http://127.0.0.1:1", "not usable"),
         command="search", extra=["--tracking-uri", "http://127.0.0.1:1"]),
]


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("plain") / "data")


def invoke(case: Case, data: Path, work: Path, tracking: str):
    extra = [a.replace("{work}", str(work)) for a in case.extra]
    if case.command == "train":
        args = ["train", "--data", str(data), "--epochs", "1", "--widths", "4", "--device", "cpu"]
        if "--out" not in extra:
            args += ["--out", str(work / "m.pt")]
    else:
        args = ["search", "--data", str(data), "--trials", "1", "--epochs", "1", "--no-progress",
                "--device", "cpu", "--study", "bad"]
        if "--storage" not in extra:
            args += ["--storage", f"sqlite:///{work}/studies/s.db"]
        if "--tracking-uri" not in extra:
            args += ["--tracking-uri", tracking]
    return CliRunner().invoke(cli, args + extra)


def assert_one_line_error(res, parts: tuple[str, ...]) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == len(lines) - 1, res.output  # one line, the last one
    for part in parts:
        assert part in lines[-1], (part, lines[-1])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, plain, tmp_path, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("I am a file, not a folder or a database")
    (tmp_path / "journal.log").write_bytes(os.urandom(300) + b"\n{not json\n")
    data = case.build(tmp_path / "data") if case.build else plain
    res = invoke(case, data, tmp_path, tracking_uri)
    if case.error:
        assert_one_line_error(res, case.error)
    else:
        assert res.exit_code == 0, (res.output, res.exception)
        assert (tmp_path / "m.pt").is_file()
        if case.check:
            case.check(tmp_path, res.output)
    if case.command == "search" and case.error:
        # nothing started: the storage, if it exists at all, holds no trial
        db = tmp_path / "studies" / "s.db"
        if db.exists():
            for summary in optuna.get_all_study_summaries(f"sqlite:///{db}"):
                assert summary.n_trials == 0


def test_study_with_another_search_space(plain, tmp_path, monkeypatch):
    """An existing study of the same name, searched with another space: refused before any trial."""
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="taken", storage=storage, direction="maximize")
    study.set_user_attr("sceneclf", {"space_name": "other.toml", "space_text": "[params.lr]\n",
                                     "budget": {"max_params": 1, "max_macs": None}, "epochs": 1, "data": {},
                                     "fingerprint": "x", "sampler": "tpe", "pruner": "median"})
    res = CliRunner().invoke(cli, ["search", "--data", str(plain), "--trials", "1", "--epochs", "1",
                                   "--no-progress", "--no-mlflow", "--study", "taken", "--storage", storage])
    assert_one_line_error(res, ("--study taken", "different search space", "other.toml"))
    assert optuna.load_study(study_name="taken", storage=storage).trials == []


def test_table_has_at_least_twenty_kinds():
    assert len(CASES) + 1 >= 20


def test_worker_with_unreachable_tracking_uri_stops_before_loading_data(plain, tmp_path, monkeypatch):
    """A worker joining a study checks its MLflow store first: one line, no data prepared."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCENECLF_CACHE", str(tmp_path / "cache"))
    storage = f"sqlite:///{tmp_path}/s.db"
    res = CliRunner().invoke(cli, ["worker", "--study", "joined", "--storage", storage, "--data", str(plain),
                                   "--trials", "1", "--no-progress", "--tracking-uri", "http://127.0.0.1:1"])
    assert_one_line_error(res, ("--tracking-uri http://127.0.0.1:1", "not usable"))
    assert not (tmp_path / "cache").exists()
