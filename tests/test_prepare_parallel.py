"""Preparation in worker processes and the one mel store per data set: the same mels from 1 and 2
processes, a bad file named whichever process met it, a store appended for a new file, a torn
store rebuilt, and no waveform cache unless asked. Real WAV files, real worker processes."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig
from sceneclf.data.pool import ProgressLine
from sceneclf.data.prepare import DataConfig, PreparedData, prepare
from sceneclf.data.store import MelStore
from sceneclf.errors import DataError
from sceneclf.model.frontend import FeatureConfig

RATE = 22050  # not the model's rate: every clip is resampled too


def run(data: Path, cache: Path, **kwargs) -> PreparedData:
    return prepare(DataConfig(data=str(data)), AudioConfig(), FeatureConfig(), cache, **kwargs)


def all_mels(prepared: PreparedData) -> list[np.ndarray]:
    return [m.numpy() for s in ("train", "val", "test") for m in prepared.splits[s].mels]


def store_dir(cache: Path) -> Path:
    (found,) = (cache / "mels").iterdir()
    return found


def csv_data(root: Path, n: int = 12) -> Path:
    """A CSV data set of `n` clips over 2 classes and 4 recording groups, noise of differing
    lengths (so that every clip has its own number of frames)."""
    rng = np.random.default_rng(0)
    rows = ["path,label,group"]
    for i in range(n):
        add_clip(root, f"c{i:02d}.wav", rng.normal(0, 0.1, int(RATE * (3.0 + 0.1 * i))))
        rows.append(f"c{i:02d}.wav,{'ab'[i % 2]},g{i % 4}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def add_clip(root: Path, name: str, wave: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    sf.write(root / name, wave.astype(np.float32), RATE, subtype="PCM_16")


@pytest.mark.parametrize("other_thread", [False, True], ids=["fork", "fork server (another thread runs)"])
def test_two_workers_give_the_same_bytes_as_one(tiny_data, tmp_path, other_thread):
    one = run(tiny_data, tmp_path / "one", workers=1)
    stop = threading.Event()
    waiting = threading.Thread(target=stop.wait)
    if other_thread:  # forking beside a live thread is unsafe: the workers come from a fork server
        waiting.start()
    try:
        two = run(tiny_data, tmp_path / "two", workers=2)
    finally:
        stop.set()
    assert one.computed == two.computed == len(one.manifest.clips)
    assert one.fingerprint == two.fingerprint
    assert [m.tobytes() for m in all_mels(one)] == [m.tobytes() for m in all_mels(two)]
    again = run(tiny_data, tmp_path / "two", workers=2)  # from the store: nothing computed
    assert again.computed == 0
    assert [m.tobytes() for m in all_mels(again)] == [m.tobytes() for m in all_mels(one)]


@pytest.mark.parametrize("bad_at", [2, 50], ids=["first chunk: a worker process", "later: any"])
def test_corrupt_file_is_named_whichever_worker_met_it(tiny_data, tmp_path, bad_at):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = sorted((data / "audio").glob("*.wav"))[bad_at]  # the first chunks go to the worker processes
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as caught:
        run(data, cache, workers=2)
    message = str(caught.value)
    assert message.startswith(f"{bad.resolve()}: cannot decode audio") and "\n" not in message
    kept = len(json.loads((store_dir(cache) / "index.json").read_text())["clips"])
    assert kept > 0  # what was computed before the error is kept
    skipping = run(data, cache, workers=2, skip_bad=True)
    assert len(skipping.skipped) == 1 and skipping.skipped[0].startswith(str(bad.resolve()))
    assert skipping.computed == 89 - kept
    assert sum(len(s) for s in skipping.splits.values()) == 89


def test_cli_names_the_corrupt_file_in_one_line(tmp_path, monkeypatch):
    data = csv_data(tmp_path / "data")
    (data / "c05.wav").write_bytes(b"\x00" * 512)
    monkeypatch.setenv("SCENECLF_PREP_WORKERS", "1")  # restored after the test; the option overrides it
    res = CliRunner().invoke(cli, ["train", "--data", str(data), "--epochs", "1", "--prep-workers", "2",
                                   "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "m.pt"),
                                   ])
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.splitlines() if x.strip()]
    assert line.startswith("Error: ") and f"{(data / 'c05.wav').resolve()}: cannot decode audio" in line


def test_store_is_appended_when_a_new_file_appears(tmp_path):
    data = csv_data(tmp_path / "data")
    cache = tmp_path / "cache"
    first = run(data, cache, workers=2)
    store = store_dir(cache)
    before_index = json.loads((store / "index.json").read_text())
    before_bytes = (store / "mels.f32").read_bytes()
    add_clip(data, "new.wav", np.random.default_rng(1).normal(0, 0.1, RATE * 4))
    with (data / "manifest.csv").open("a") as f:
        f.write("new.wav,b,g9\n")
    second = run(data, cache, workers=2)
    assert second.computed == 1
    after_index = json.loads((store / "index.json").read_text())
    assert {k: after_index["clips"][k] for k in before_index["clips"]} == before_index["clips"]
    assert len(after_index["clips"]) == len(before_index["clips"]) + 1
    assert (store / "mels.f32").read_bytes()[:len(before_bytes)] == before_bytes
    old = {c.path.name: m for c, m in zip(first.manifest.clips, ordered(first))}
    new = {c.path.name: m for c, m in zip(second.manifest.clips, ordered(second))}
    assert all(np.array_equal(old[name], new[name]) for name in old)
    fresh = run(data, tmp_path / "fresh", workers=1)
    assert np.array_equal(dict(zip([c.path.name for c in fresh.manifest.clips], ordered(fresh)))["new.wav"],
                          new["new.wav"])


def ordered(prepared: PreparedData) -> list[np.ndarray]:
    """Each clip's mel in manifest order (the splits hold them grouped by split)."""
    taken = {s: iter(prepared.splits[s].mels) for s in prepared.splits}
    return [next(taken[c.split or "train"]).numpy() for c in prepared.manifest.clips]


@pytest.mark.parametrize("tear", ["index missing", "index garbage", "array truncated", "tail torn"])
def test_torn_store_is_rebuilt_not_a_crash(tmp_path, tear):
    data = csv_data(tmp_path / "data")
    cache = tmp_path / "cache"
    first = run(data, cache, workers=1)
    expected = [m.copy() for m in ordered(first)]  # first's tensors map the file about to be torn
    store = store_dir(cache)
    array = store / "mels.f32"
    if tear == "index missing":
        (store / "index.json").unlink()
    elif tear == "index garbage":
        (store / "index.json").write_text('{"version": 2, "clips": {')
    elif tear == "array truncated":
        with array.open("r+b") as f:
            f.truncate(array.stat().st_size // 2)
    else:  # a writer killed mid-append: bytes past the committed end, the index as it was
        with array.open("ab") as f:
            f.write(b"\x7f" * 1000)
    again = run(data, cache, workers=1)
    assert again.computed == (0 if tear == "tail torn" else len(first.manifest.clips))
    assert all(np.array_equal(a, b) for a, b in zip(expected, ordered(again)))
    if tear == "tail torn":  # the next append overwrites the torn tail
        add_clip(data, "new.wav", np.random.default_rng(2).normal(0, 0.1, RATE * 3))
        with (data / "manifest.csv").open("a") as f:
            f.write("new.wav,a,g9\n")
        third = run(data, cache, workers=1)
        assert third.computed == 1
        n = json.loads((store / "index.json").read_text())["length"]
        assert array.stat().st_size == n * 4


def test_waveform_cache_only_when_asked_and_old_caches_ignored(tmp_path):
    data = csv_data(tmp_path / "data")
    cache = tmp_path / "cache"
    old = cache / "mel" / "ab" / "0123.npy"  # a per-clip entry of the previous cache version
    old.parent.mkdir(parents=True)
    old.write_bytes(b"not an array of this version")
    prepared = run(data, cache, workers=1)
    assert prepared.computed == 12
    assert not (cache / "wave").exists()
    store_bytes = sum(f.stat().st_size for f in store_dir(cache).iterdir())
    audio_bytes = sum(f.stat().st_size for f in data.glob("*.wav"))
    assert store_bytes < audio_bytes / 3
    with_waves = run(data, tmp_path / "cache2", workers=1, waves=True)
    assert with_waves.computed == 12
    assert len(list((tmp_path / "cache2" / "wave").rglob("*.npy"))) == 12


def test_two_processes_preparing_one_store_at_once_add_each_clip_once(tiny_data, tmp_path):
    """Two `prepare` processes on one cold store: one computes while the other waits for the lock,
    then finds every clip there."""
    code = ("import sys; from pathlib import Path; from sceneclf.data.audio import AudioConfig; "
            "from sceneclf.data.prepare import DataConfig, prepare; from sceneclf.model.frontend import FeatureConfig; "
            "p = prepare(DataConfig(data=sys.argv[1]), AudioConfig(), FeatureConfig(), Path(sys.argv[2]), workers=1); "
            "print(p.computed, p.fingerprint)")
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny_data), str(cache)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outs) == [0, 90] and outs[0][1] == outs[1][1]
    index = json.loads((store_dir(cache) / "index.json").read_text())
    assert len(index["clips"]) == 90
    assert index["length"] == sum(t for _, t in index["clips"].values()) * 40
    assert (store_dir(cache) / "mels.f32").stat().st_size == index["length"] * 4


def test_progress_line_shows_clips_per_second_and_time_left():
    out = io.StringIO()
    line = ProgressLine(out)
    line.t0 -= 2.0  # as if started two seconds ago
    line(50, 200)
    line(200, 200)
    first, last = out.getvalue().split("\r")[1:]
    assert re.fullmatch(r"preparing: 50/200 clips, 2\d clips/s, \d s left\x1b\[K", first)
    assert re.fullmatch(r"preparing: 200/200 clips, \d+ clips/s\x1b\[K\n", last)


def test_a_second_writer_waits_for_the_lock_says_so_and_sees_the_first_ones_clips(tmp_path):
    waited, seen = threading.Event(), []

    def second() -> None:
        other = MelStore(tmp_path / "store", 4)
        with other.appending(on_wait=waited.set) as appender:
            seen.append(sorted(other.clips))
            appender.add("b", np.zeros((4, 2), np.float32))

    with MelStore(tmp_path / "store", 4).appending() as first:
        first.add("a", np.ones((4, 3), np.float32))
        thread = threading.Thread(target=second)
        thread.start()
        assert waited.wait(10)
    thread.join(10)
    assert seen == [["a"]]
    final = MelStore(tmp_path / "store", 4).load()
    assert final.clips == {"a": (0, 3), "b": (12, 2)}
    assert np.array_equal(final.mel("a").numpy(), np.ones((4, 3)))
    assert np.array_equal(final.mel("b").numpy(), np.zeros((4, 2)))


def test_prepare_as_a_library_call_runs_in_this_process_alone(monkeypatch):
    """Worker processes would re-run a caller's script that has no `__main__` guard: a library
    call gets them only when asked (`workers=`, or the CLI's `--prep-workers`, default auto)."""
    from sceneclf.data.pool import auto_workers, requested_workers

    monkeypatch.delenv("SCENECLF_PREP_WORKERS", raising=False)
    assert requested_workers(5000) == 1
    monkeypatch.setenv("SCENECLF_PREP_WORKERS", "auto")
    assert requested_workers(5000) == auto_workers(5000)
    monkeypatch.setenv("SCENECLF_PREP_WORKERS", "3")
    assert requested_workers(5000) == 3
