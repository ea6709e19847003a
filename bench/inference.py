"""7. Inference: `sceneclf predict` throughput in seconds of audio per second.

A default-size model is trained for a few epochs and checkpointed. Inputs: the test split's clips
(16 kHz mono WAV, 3 to 6 s each) and one long recording written at 44.1 kHz stereo (so decoding,
downmixing and resampling are paid). Side by side: the real command (a new process: start-up
included), a one-file command (start-up alone, about), the same work in-process
(`predict.predict_paths`), and the model's forward pass alone on 3 s windows.
"""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from bench.common import PYTHON, Context, Section, Timer, Watched, fmt_s, median
from sceneclf.data.audio import AudioConfig
from sceneclf.model.budget import Budget
from sceneclf.model.checkpoint import Checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import TrainConfig, train_model


def run(ctx: Context) -> Section:
    sec = Section("7. Inference: `sceneclf predict` throughput")
    data = ctx.data()
    audio, features = AudioConfig(), FeatureConfig(noise=0.1)
    model_cfg = ModelConfig(n_classes=len(data.classes), widths=(16, 32, 64))
    ctx.say("  train a checkpoint (3 epochs)")
    model, result = train_model(features, model_cfg, TrainConfig(epochs=3), Budget(), data.splits["train"],
                                data.splits["val"], data.frames)
    ckpt = ctx.tmp / "predict" / "model.pt"
    save_checkpoint(ckpt, Checkpoint(model, audio, features, model_cfg, data.classes,
                                     metrics={"val_accuracy": result.best_val_accuracy}))

    clips = [c.path for c in data.manifest.clips if c.split == "test"]
    clip_seconds = sum(sf.info(str(p)).duration for p in clips)
    long_minutes = 3 if ctx.quick else 10
    long_path = ctx.tmp / "predict" / "long-44k-stereo.wav"
    pieces, total = [], 0
    while total < long_minutes * 60 * 16000:
        for p in clips:
            wave, _ = sf.read(str(p), dtype="float32")
            pieces.append(wave)
            total += len(wave)
    mono = torch.from_numpy(np.concatenate(pieces)[: long_minutes * 60 * 16000])
    up = AF.resample(mono, 16000, 44100).numpy()
    sf.write(str(long_path), np.stack([up, 0.8 * up], axis=1), 44100, subtype="PCM_16")
    long_seconds = sf.info(str(long_path)).duration

    def command(paths, name: str) -> float:
        cmd = [PYTHON, "-m", "sceneclf", "predict", str(ckpt), *map(str, paths), "--format", "csv"]
        m = Watched(cmd, ctx.tmp / "predict" / f"{name}.log").wait()
        if m.returncode != 0:
            raise RuntimeError(f"predict exited with {m.returncode}:\n{m.log.read_text()[-2000:]}")
        return m.wall

    from sceneclf.tasks import predict as pr

    def in_process(paths) -> float:
        with Timer() as t:
            results = pr.predict_paths(model, paths, audio)
        assert all(r.error is None for r in results)
        return t.seconds

    reps = 1 if ctx.quick else 3
    ctx.say("  the command, the start-up, in-process")
    times: dict[str, list[float]] = {k: [] for k in ("cmd clips", "cmd long", "cmd one", "lib clips", "lib long")}
    for _ in range(reps):
        times["cmd one"].append(command(clips[:1], "one"))
        times["cmd clips"].append(command(clips, "clips"))
        times["cmd long"].append(command([long_path], "long"))
        times["lib clips"].append(in_process(clips))
        times["lib long"].append(in_process([long_path]))
    t = {k: median(v) for k, v in times.items()}

    ctx.say("  forward pass alone, BatchNorm folded (as predict runs it) and apart")
    model.eval()
    windows = torch.randn(16, audio.clip_samples) * 0.1
    forward_rate = {}
    for name, net in (("folded", model.fused()), ("apart", model)):
        with torch.inference_mode():
            net(windows)
            with Timer() as tf:
                n = 0
                while n < (10 if ctx.quick else 30):
                    net(windows)
                    n += 1
        forward_rate[name] = n * 16 * audio.clip_seconds / tf.seconds

    startup = t["cmd one"]
    rows = [
        [f"`sceneclf predict` on {len(clips)} test clips (16 kHz mono)", f"{clip_seconds:.0f} s",
         fmt_s(t["cmd clips"]), f"{clip_seconds / t['cmd clips']:.0f}",
         f"{clip_seconds / max(1e-9, t['cmd clips'] - startup):.0f}"],
        [f"`sceneclf predict` on one {long_minutes}-min recording (44.1 kHz stereo)", f"{long_seconds:.0f} s",
         fmt_s(t["cmd long"]), f"{long_seconds / t['cmd long']:.0f}",
         f"{long_seconds / max(1e-9, t['cmd long'] - startup):.0f}"],
        ["`sceneclf predict` on one clip (start-up, about)", "", fmt_s(startup), "", ""],
        [f"in-process `predict_paths`, {len(clips)} clips", f"{clip_seconds:.0f} s", fmt_s(t["lib clips"]),
         f"{clip_seconds / t['lib clips']:.0f}", ""],
        [f"in-process `predict_paths`, {long_minutes}-min recording", f"{long_seconds:.0f} s",
         fmt_s(t["lib long"]), f"{long_seconds / t['lib long']:.0f}", ""],
        ["`SceneClassifier.fused()` forward alone (as predict runs), batches of 16 x 3 s windows", "", "",
         f"{forward_rate['folded']:.0f}", ""],
        ["the same, BatchNorm apart (the model as trained)", "", "", f"{forward_rate['apart']:.0f}", ""],
    ]
    sec.add(f"Model widths {model_cfg.widths}, {torch.get_num_threads()} threads; windows of "
            f"{audio.clip_seconds:g} s with 50 % overlap (each second of a long recording goes through "
            f"the model about twice); median of {reps} run(s).", "")
    sec.table(["what", "audio", "wall", "audio s / s", "audio s / s without start-up"], rows)
    sec.goal("7 inference: `sceneclf predict`, long recording (audio s per s, start-up included)",
             f"{long_seconds / t['cmd long']:.0f}", "report", None)
    sec.goal("7 inference: `sceneclf predict`, many short clips (audio s per s, start-up included)",
             f"{clip_seconds / t['cmd clips']:.0f}", "report", None)
    return sec
