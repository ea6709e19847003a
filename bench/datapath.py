"""1. Data path (issue 7.1 and issue 2's benchmark).

The seed-style pipeline decodes every clip with soundfile and computes its mel + MFCC inside
`Dataset.__getitem__`, batched by a torch `DataLoader` (num_workers=0), every epoch. Ours decodes
and computes mel power spectrograms once (on-disk caches), then per batch crops cached mels and
runs `FrontEnd.from_mel` (noise in the mel domain, log, DCT, normalisation). Same clips, same
model, same optimiser, same validation pass (BatchNorm folded into the convolutions, as
`train.evaluate` runs it); an epoch is a training pass plus a validation pass.

Then issue 2's split of our epoch: data (cropping and batching), features (from_mel) and model
(forward, loss, backward, step; forward only in validation).
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
import torchaudio.functional as AF
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Context, Section, Timer, fmt_s, median
from bench.compute import matmul_gflops
from sceneclf.data.audio import AudioConfig
from sceneclf.data.melset import MelSet, batches, clip_windows
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import LOG_EPS, FeatureConfig
from sceneclf.train import TrainConfig, fit

NOISE = 0.1  # a typical sampled noise level; both pipelines add training noise
MODEL = ModelConfig(widths=(16, 32, 64))  # the library default
BATCH = 32


class SeedStyleDataset(torch.utils.data.Dataset):
    """Decode and featurise one clip per call, every epoch: what a first script does."""

    def __init__(self, items: list[tuple[str, int]], audio: AudioConfig, features: FeatureConfig,
                 mean: torch.Tensor, std: torch.Tensor, train: bool):
        self.items, self.audio, self.train = items, audio, train
        self.noise = features.noise
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=features.sample_rate, n_fft=features.n_fft, hop_length=features.hop_length,
            n_mels=features.n_mels, power=2.0)
        self.dct = AF.create_dct(features.n_mels, features.n_mels, norm="ortho")
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        wave = torch.from_numpy(data.mean(axis=1))
        if rate != self.audio.sample_rate:
            wave = AF.resample(wave, rate, self.audio.sample_rate)
        n, length = wave.shape[0], self.audio.clip_samples
        if n < length:
            wave = nn.functional.pad(wave, ((length - n) // 2, length - n - (length - n) // 2))
        else:
            start = int(torch.randint(n - length + 1, (1,))) if self.train else (n - length) // 2
            wave = wave[start:start + length]
        if self.train and self.noise > 0:
            level = self.noise * float(torch.rand(()))
            wave = wave + level * wave.std() * torch.randn_like(wave)
        logmel = torch.log(self.mel(wave) + LOG_EPS)
        mfcc = self.dct.T @ logmel
        x = (torch.stack([logmel, mfcc]) - self.mean) / self.std
        return x, label


def seed_epoch(model: SceneClassifier, opt: torch.optim.Optimizer, train_loader, val_loader) -> float:
    """One training pass plus one validation pass, seed style; seconds."""
    with Timer() as t:
        model.train()
        for x, y in train_loader:
            loss = nn.functional.cross_entropy(model.cnn(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        cnn = model.fused().cnn  # the same evaluation model as ours (`train.evaluate`)
        with torch.inference_mode():
            for x, _ in val_loader:
                cnn(x)
    return t.seconds


def split_epoch(model: SceneClassifier, opt: torch.optim.Optimizer, train: MelSet, val: MelSet,
                frames: int, gen: torch.Generator) -> dict[str, float]:
    """Our epoch as `fit` runs it, timed by part: data, features, model (train and validation)."""
    parts = {"data": 0.0, "features": 0.0, "model": 0.0}

    def timed(loader):
        while True:
            t0 = time.perf_counter()
            try:
                item = next(loader)
            except StopIteration:
                return
            parts["data"] += time.perf_counter() - t0
            yield item

    t_all = time.perf_counter()
    model.train()
    for x, y in timed(batches(train, BATCH, frames, train=True, generator=gen)):
        t0 = time.perf_counter()
        feats = model.frontend.from_mel(x)
        t1 = time.perf_counter()
        loss = nn.functional.cross_entropy(model.cnn(feats), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        t2 = time.perf_counter()
        parts["features"] += t1 - t0
        parts["model"] += t2 - t1
    model.eval()
    net = model.fused()  # as `train.score` does
    with torch.inference_mode():
        for x, _ in timed(clip_windows(val, 128, frames)):
            t0 = time.perf_counter()
            feats = net.frontend.from_mel(x)
            t1 = time.perf_counter()
            net.cnn(feats)
            t2 = time.perf_counter()
            parts["features"] += t1 - t0
            parts["model"] += t2 - t1
    parts["epoch"] = time.perf_counter() - t_all
    return parts


def ours_epochs(data, features: FeatureConfig, model_cfg: ModelConfig, epochs: int) -> list[float]:
    """Seconds of each epoch of our pipeline (cached mels, batched front end) on prepared data."""
    torch.manual_seed(0)
    model = SceneClassifier(features, model_cfg)
    model.frontend.fit_stats(data.splits["train"].mels)
    seconds: list[float] = []
    fit(model, data.splits["train"], data.splits["val"],
        TrainConfig(batch_size=BATCH, epochs=epochs, early_stop=epochs + 1), data.frames,
        on_epoch=lambda e, m: seconds.append(m["seconds"]))
    return seconds


def seed_style(data, audio: AudioConfig, features: FeatureConfig, model_cfg: ModelConfig) -> tuple:
    """(model, optimiser, training loader, validation loader) of the seed-style pipeline over the
    same clips' files, normalised like ours; each `seed_epoch(*it)` is one epoch."""
    index = {c: i for i, c in enumerate(data.classes)}
    items = {s: [(str(c.path), index[c.label]) for c in data.manifest.clips if c.split == s]
             for s in ("train", "val")}
    torch.manual_seed(0)
    model = SceneClassifier(features, model_cfg)
    model.frontend.fit_stats(data.splits["train"].mels)  # same normalisation as ours
    mean, std = model.frontend.mean, model.frontend.std
    train_loader = torch.utils.data.DataLoader(
        SeedStyleDataset(items["train"], audio, features, mean, std, train=True),
        batch_size=BATCH, shuffle=True, num_workers=0)
    val_loader = torch.utils.data.DataLoader(
        SeedStyleDataset(items["val"], audio, features, mean, std, train=False),
        batch_size=128, shuffle=False, num_workers=0)
    return model, torch.optim.Adam(model.cnn.parameters(), lr=3e-3), train_loader, val_loader


def run(ctx: Context) -> Section:
    sec = Section("1. Data path: seed-style per-item decode + features against cached mels + batched front end")
    seed_epochs, our_epochs = (2, 3) if ctx.quick else (3, 6)
    audio, features = AudioConfig(), FeatureConfig(noise=NOISE)
    data = ctx.data()  # warms the shared cache (not timed here)
    n_classes = len(data.classes)
    model_cfg = ModelConfig(n_classes=n_classes, widths=MODEL.widths)
    train, val = data.splits["train"], data.splits["val"]
    audio_s = sum(m.shape[-1] for m in train.mels) * features.hop_length / audio.sample_rate
    sec.add(f"Default synthetic data ({data.manifest.root.name}): {len(train)} training clips "
            f"({audio_s / 60:.1f} min of audio), {len(val)} validation clips; model widths "
            f"{model_cfg.widths}, batch {BATCH}, noise {NOISE}, {torch.get_num_threads()} threads. "
            "Epoch = training pass + validation pass.", "")

    # -- ours, first run: fresh caches (the data set folder itself is shared) --------------------
    cold = ctx.tmp / "cold-cache"
    shutil.rmtree(cold, ignore_errors=True)
    (cold).mkdir(parents=True)
    (cold / "datasets").symlink_to(ctx.cache_dir / "datasets", target_is_directory=True)
    ctx.say("  ours: cold prepare (decode + mel into an empty cache)")
    with Timer() as t_cold:
        cold_data = prepare(DataConfig(), audio, FeatureConfig(), cold)
    with Timer() as t_warm:
        warm_data = prepare(DataConfig(), audio, FeatureConfig(), cold)
    assert len(warm_data.splits["train"]) == len(train)
    shutil.rmtree(cold, ignore_errors=True)

    ctx.say(f"  ours: fit for {our_epochs} epochs")
    seconds = ours_epochs(cold_data, features, model_cfg, our_epochs)
    ours_first = t_cold.seconds + seconds[0]
    n_clips = len(cold_data.manifest.clips)
    ours_later = median(seconds[1:])

    # -- seed style ------------------------------------------------------------------------------
    ctx.say(f"  seed style: {seed_epochs} epochs")
    seed_run = seed_style(data, audio, features, model_cfg)
    seed_times = [seed_epoch(*seed_run) for _ in range(seed_epochs)]
    seed_first, seed_later = seed_times[0], median(seed_times[1:])

    ratio = seed_later / ours_later
    first_ratio = seed_first / ours_first
    sec.table(
        ["pipeline", "first epoch (incl. decode/mel cache fill)", "epoch after the first (median)",
         "epochs timed"],
        [["seed style: soundfile + mel/MFCC in `__getitem__`, DataLoader", fmt_s(seed_first),
          fmt_s(seed_later), seed_epochs],
         ["ours: cached mels + batched `from_mel`", f"{fmt_s(ours_first)} (cache fill {fmt_s(t_cold.seconds)}, all {n_clips} clips incl. test)",
          fmt_s(ours_later), our_epochs],
         ["**seed / ours**", f"**{first_ratio:.1f}x**", f"**{ratio:.1f}x**", ""]])
    # -- the same pair with one thread (what each `--jobs 2` worker gets on 2 cores) -------------
    ctx.say("  seed style and ours again, 1 thread")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_1 = median([seed_epoch(*seed_run) for _ in range(2)])
        ours_1 = median(ours_epochs(data, features, model_cfg, 3)[1:])
    finally:
        torch.set_num_threads(saved)
    sec.table(["1 thread (a `--jobs 2` worker)", "epoch after the first (median)"],
              [["seed style", fmt_s(seed_1)], ["ours", fmt_s(ours_1)],
               ["**seed / ours**", f"**{seed_1 / ours_1:.1f}x**"]])
    sec.add(f"A later run (new process, caches warm) loads everything in {fmt_s(t_warm.seconds)} "
            f"(`prepare` on a hit), instead of {fmt_s(t_cold.seconds)} to fill the caches.", "")
    sec.goal(f"1 data path: seed-style / ours epoch time after the first ({saved} threads)",
             f"{ratio:.1f}x", ">= 5x", ratio >= 5)
    sec.goal("1 data path: the same at 1 thread", f"{seed_1 / ours_1:.1f}x", ">= 5x", seed_1 / ours_1 >= 5)

    # -- the same clips in the format TUT/DCASE recordings come in -------------------------------
    ctx.say("  seed style and ours on the same clips as 44.1 kHz 24-bit stereo files")
    rec_seed, rec_ours = recorded_format_pair(ctx, data, audio, features, model_cfg, seed_epochs, our_epochs)
    sec.add("The same clips written as the TUT/DCASE recordings are (44.1 kHz, 24-bit, stereo; "
            "resampled with torchaudio, both channels alike): the seed-style pipeline decodes, "
            "downmixes and resamples every clip every epoch, ours did it once when filling the cache.", "")
    sec.table(["44.1 kHz 24-bit stereo files", "epoch after the first (median)"],
              [["seed style", fmt_s(rec_seed)], ["ours", fmt_s(rec_ours)],
               ["**seed / ours**", f"**{rec_seed / rec_ours:.1f}x**"]])
    sec.goal("1 data path: seed-style / ours, the same clips as 44.1 kHz 24-bit stereo files",
             f"{rec_seed / rec_ours:.1f}x", ">= 5x", rec_seed / rec_ours >= 5)

    # -- issue 2: where our epoch goes -----------------------------------------------------------
    ctx.say("  ours: split of the epoch into data / features / model")
    rows, share_noise, p_noise, conv, conv_gflops = [], None, {}, 0.0, 0.0
    for noise in (NOISE, 0.0):
        torch.manual_seed(0)
        model = SceneClassifier(FeatureConfig(noise=noise), model_cfg)
        model.frontend.fit_stats(train.mels)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        split_epoch(model, opt, train, val, data.frames, gen)  # warm-up
        runs = [split_epoch(model, opt, train, val, data.frames, gen) for _ in range(2 if ctx.quick else 4)]
        p = {k: median([r[k] for r in runs]) for k in runs[0]}
        other = max(0.0, p["epoch"] - p["data"] - p["features"] - p["model"])
        share = (p["data"] + p["features"]) / p["epoch"]
        if noise == NOISE:
            share_noise, p_noise = share, p
            # for the ceiling below: the same model's convolutions, after the timed epochs
            ctx.say("  ours: the convolutions' share of the model step (torch.profiler)")
            conv, conv_gflops = conv_share(partial(split_epoch, model, opt, train, val, data.frames, gen))
        rows.append([f"noise {noise}", fmt_s(p["epoch"]),
                     f"{p['data'] * 1000:.0f} ms ({p['data'] / p['epoch']:.1%})",
                     f"{p['features'] * 1000:.0f} ms ({p['features'] / p['epoch']:.1%})",
                     f"{p['model'] * 1000:.0f} ms ({p['model'] / p['epoch']:.1%})",
                     f"{other * 1000:.0f} ms", f"{share:.1%}",
                     f"{(len(train) + len(val)) / p['epoch']:.0f}"])
    sec.table(["training noise", "epoch (median)", "data", "features", "model", "rest",
               "data + features", "clips/s"], rows)
    sec.add("Data = cropping and stacking cached mels (`train.batches`); features = "
            "`FrontEnd.from_mel` (mel-domain noise, log, DCT, normalisation); model = forward, "
            "loss, backward and Adam step (forward only in validation). "
            "Clips/s counts training and validation clips.", "")
    sec.goal("1 data path (issue 2): data + features share of an epoch after the first",
             f"{share_noise:.1%} (noise {NOISE})", "< 10 %", share_noise < 0.10)

    # -- how far the ratio can go: both pipelines run the same model step ------------------------
    peak = matmul_gflops(torch.get_num_threads())
    model_s = p_noise["model"]
    rest_of_seed = max(0.0, seed_later - model_s)  # its decode + features + DataLoader
    conv_s = conv * model_s

    def ceiling(ours_s: float, model_step_s: float) -> str:
        return f"{(rest_of_seed + model_step_s) / ours_s:.1f}x"

    conv_row = (f"besides, only the convolutions cost time ({conv:.0%} of the model step; "
                f"{conv_gflops:.0f} GFLOP/s)")
    sec.table(["seed / ours if ... (both pipelines run the same model step)", "ratio"],
              [["as measured (our epoch as timed in the split above)", ceiling(p_noise["epoch"], model_s)],
               ["our data and features cost nothing", ceiling(model_s, model_s)],
               [conv_row, ceiling(conv_s, conv_s)],
               [f"besides, the convolutions ran at the matmul peak ({peak:.0f} GFLOP/s)",
                ceiling(conv_s * conv_gflops / peak, conv_s * conv_gflops / peak)]])
    sec.add("The seed-style epoch spends its time outside the model step on decoding and features "
            f"({fmt_s(rest_of_seed)} here); a ratio of 5x needs that to be 4 times our whole epoch. "
            "The convolutions' time is torch.profiler's self time of `aten::mkldnn_convolution` "
            "and `aten::convolution_backward` over one epoch, their FLOPs `torch.utils.flop_counter`'s; "
            "the matmul peak is bench 2's (1024 x 1024 float32), measured here.", "")
    return sec


def conv_share(run_epoch) -> tuple[float, float]:
    """(fraction of the model time of a `split_epoch` call (`run_epoch`) spent in convolutions,
    forward and backward; their GFLOP/s): times from torch.profiler's self times of those
    operators, FLOPs from `torch.utils.flop_counter` over a second call (the same work)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        parts = run_epoch()
    seconds = sum(e.self_cpu_time_total for e in prof.key_averages()
                  if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward")) / 1e6
    counter = FlopCounterMode(display=False)
    with counter:
        run_epoch()
    counts = counter.get_flop_counts()["Global"]
    flops = sum(n for op, n in counts.items() if "convolution" in str(op))
    return seconds / parts["model"], flops / seconds / 1e9


def recorded_format_pair(ctx: Context, data, audio: AudioConfig, features: FeatureConfig,
                         model_cfg: ModelConfig, seed_epochs: int, our_epochs: int) -> tuple[float, float]:
    """Epoch time after the first, seed style and ours, on a copy of the default data set whose
    clips are 44.1 kHz 24-bit stereo files (the same manifest and splits)."""
    src = Path(data.manifest.root).resolve()
    root = ctx.tmp / "recorded-format"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("*.wav"))
    for clip in data.manifest.clips:
        wave, rate = sf.read(clip.path, dtype="float32")
        hi = AF.resample(torch.from_numpy(wave), rate, 44100).numpy()
        target = root / clip.path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, np.stack([hi, hi], axis=1), 44100, subtype="PCM_24")
    cache = ctx.tmp / "recorded-cache"
    shutil.rmtree(cache, ignore_errors=True)
    prepared = prepare(DataConfig(data=str(root)), audio, FeatureConfig(), cache)
    seconds = ours_epochs(prepared, features, model_cfg, our_epochs)
    seed_run = seed_style(prepared, audio, features, model_cfg)
    seed_times = [seed_epoch(*seed_run) for _ in range(seed_epochs)]
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return median(seed_times[1:]), median(seconds[1:])
