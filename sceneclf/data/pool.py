"""Decoding, resampling and mel computation of many clips, in worker processes.

Each worker runs one torch thread and builds its front end once; clips go out in small chunks
and come back as arrays, or as the one-line error of a file that cannot be used. The calling
process is one of the workers (it computes while the others start) and runs one torch thread
too, so results never depend on how many processes made them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

from sceneclf.data import audio as audio_mod
from sceneclf.data.audio import AudioConfig, WaveformCache
from sceneclf.errors import ConfigError, DataError
from sceneclf.model.frontend import FeatureConfig, FrontEnd

WORKERS_ENV = "SCENECLF_PREP_WORKERS"
CLIPS_PER_WORKER = 100  # below this many clips per process, starting it costs more than it saves

Result = np.ndarray | str  # a mel power spectrogram (n_mels, T), or why the file was refused
_state: dict = {}


def requested_workers(clips: int) -> int:
    """`$SCENECLF_PREP_WORKERS` (set by `--prep-workers`): a number, or `auto` (`auto_workers`);
    unset, 1: a library caller's script is not re-run by worker processes it did not ask for."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if not given:
        return 1
    if given == "auto":
        return auto_workers(clips)
    try:
        n = int(given)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{WORKERS_ENV}={given!r}: give a whole number of processes >= 1")
    return n


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_workers(clips: int) -> int:
    """The cores this process may use, but none idle for want of clips (CLIPS_PER_WORKER each)."""
    return max(1, min(usable_cores(), clips // CLIPS_PER_WORKER))


def _setup(audio: AudioConfig, features: FeatureConfig, waves_root: Path | None) -> None:
    _state.update(audio=audio, frontend=FrontEnd(features).eval(),
                  waves=WaveformCache(waves_root, audio) if waves_root is not None else None)


def _init_worker(audio: AudioConfig, features: FeatureConfig, waves_root: Path | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)
    _setup(audio, features, waves_root)


def _mel(path: Path) -> Result:
    waves = _state["waves"]
    try:
        wave = waves.load(path) if waves is not None else audio_mod.read_audio(path, _state["audio"])
    except DataError as exc:
        return str(exc)
    with torch.inference_mode():
        return _state["frontend"].mel_power(torch.from_numpy(wave).unsqueeze(0))[0].contiguous().numpy()


def _mels(paths: Sequence[Path]) -> list[Result]:
    return [_mel(p) for p in paths]


def compute_mels(paths: Sequence[Path], audio: AudioConfig, features: FeatureConfig, workers: int,
                 waves_root: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, Result]]:
    """(i, mel or error) for each of `paths`, in the order they finish, from `workers` processes
    in all: this one and `workers - 1` started for the purpose. With `waves_root`, decoded
    waveforms are cached there too."""
    chunk = max(1, min(16, len(paths) // (max(workers, 1) * 8)))
    todo = deque(range(0, len(paths), chunk))
    helpers = min(workers - 1, len(todo) - 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker: the same values whatever the number of processes
    _setup(audio, features, waves_root)
    pool = _start_pool(helpers, audio, features, waves_root) if helpers > 0 else None
    pending: dict = {}
    done = 0
    try:
        while todo or pending:
            while pool is not None and todo and len(pending) < 2 * helpers:  # two chunks queued each
                start = todo.popleft()
                pending[pool.submit(_mels, paths[start:start + chunk])] = start
            finished = [f for f in pending if f.done()]
            if not finished and todo:  # this process works too, while the others start or are busy
                start = todo.popleft()
                finished_here = [(start, _mels(paths[start:start + chunk]))]
            else:
                if not finished:
                    finished = list(wait(pending, return_when=FIRST_COMPLETED)[0])
                finished_here = []
                for future in finished:
                    start = pending.pop(future)
                    finished_here.append((start, _result(future, paths[start])))
            for start, results in finished_here:
                yield from enumerate(results, start)
                done += len(results)
                if progress is not None:
                    progress(done, len(paths))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        _state.clear()
        torch.set_num_threads(threads)


def _start_pool(n: int, audio: AudioConfig, features: FeatureConfig, waves_root: Path | None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n, mp_context=_context(), initializer=_init_worker,
                               initargs=(audio, features, waves_root))


def _context() -> mp.context.BaseContext:
    """fork where this process runs no other thread (DataLoader's way: no second import of torch,
    and the workers use one torch thread); else a fork server that imports torch once."""
    methods = mp.get_all_start_methods()
    if sys.platform == "linux" and "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


def _result(future, first: Path) -> list[Result]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise DataError(f"{first}: a preparation worker died while decoding this file or one of the next "
                        "few (killed, or out of memory)") from None


class ProgressLine:
    """`done/total clips, clips/s, time left` on one line of a terminal, at most 4 times a second."""

    def __init__(self, stream=None, what: str = "preparing"):
        self.stream = stream or sys.stderr
        self.what = what
        self.t0 = time.monotonic()
        self.shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.shown < 0.25:
            return
        self.shown = now
        rate = done / max(now - self.t0, 1e-9)
        left = f", {(total - done) / rate:.0f} s left" if done < total and rate > 0 else ""
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.what}: {done}/{total} clips, {rate:.0f} clips/s{left}\033[K{end}")
        self.stream.flush()
