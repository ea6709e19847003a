"""9. Deploy: a model at fp32, fp16 and int8, in PyTorch and as ONNX files, on the default data.

The model: `$BENCH_DEPLOY_MODEL` (a checkpoint), else the default study's best trial
(`studies/checkpoints/sceneclf/best.pt` under the folder the suite runs in) when it was trained on
the default data, else a default-size model trained here. For each precision, side by side:
- PyTorch (`sceneclf.model.quantize.to_precision`, what the search scores): test accuracy of whole
  clips (`train.score`), parameter kB at that precision, time of one forward pass and of the CNN
  alone (the front end is float at every precision);
- ONNX (`sceneclf.tasks.export.build`, what `sceneclf export` writes): file kB, test accuracy of
  whole clips in ONNX Runtime (mean logits of the clip's 3 s waveform windows, as `score` does
  with mel windows), top-label agreement with PyTorch float on the same waveform windows, time of
  one forward pass.
Forward passes: one 3 s window (batch 1, waveform in) on one thread, runs of each variant
interleaved, median.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bench.common import Context, Section, Timer, median
from sceneclf.data.audio import AudioConfig
from sceneclf.data.melset import window_starts
from sceneclf.data.prepare import DataConfig
from sceneclf.model import PRECISIONS
from sceneclf.model.budget import Budget
from sceneclf.model.checkpoint import Checkpoint, load_checkpoint
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.model.quantize import calibration_batches, parameter_bytes, to_precision
from sceneclf.tasks import export as ex
from sceneclf.train import TrainConfig, score, train_model

BEST = Path("studies/checkpoints/sceneclf/best.pt")
DATA = DataConfig()  # the default data, as `Context.data` prepares it
INT8_GOAL = 1.5  # points of test accuracy int8 may lose against float


def the_model(ctx: Context, data) -> tuple[Checkpoint, str]:
    """(checkpoint, where it came from): see the module doc."""
    named = os.environ.get("BENCH_DEPLOY_MODEL")
    for path, what in ((named and Path(named), "$BENCH_DEPLOY_MODEL"), (BEST, "the default study's best trial")):
        if path and path.exists():
            ckpt = load_checkpoint(path)
            if ckpt.classes == data.classes and ckpt.features.n_mels == FeatureConfig().n_mels:
                return ckpt, f"{what} ({path})"
            ctx.say(f"  {path}: not a model of the default data, not used")
    epochs = 3 if ctx.quick else 20
    ctx.say(f"  train a default-size model ({epochs} epochs)")
    cfg = ModelConfig(n_classes=len(data.classes))
    model, _ = train_model(FeatureConfig(), cfg, TrainConfig(epochs=epochs), Budget(), data.splits["train"],
                           data.splits["val"], data.frames)
    return (Checkpoint(model.cpu().eval(), AudioConfig(), FeatureConfig(), cfg, data.classes),
            f"a default-size model (widths {cfg.widths}) trained here for {epochs} epochs")


def clip_scores(forward, clips: list[tuple[np.ndarray, int]], length: int) -> np.ndarray:
    """(N, C) logits of whole clips: the mean over each clip's half-overlapping waveform windows,
    `forward` mapping (windows, samples) float32 to logits."""
    out = []
    for wave, _ in clips:
        windows = np.stack([wave[s:s + length] for s in window_starts(len(wave), length)])
        out.append(np.asarray(forward(windows)).mean(0))
    return np.stack(out)


def timed(fns: dict[str, callable], reps: int) -> dict[str, float]:
    """Median seconds of each function, runs interleaved (one warm-up each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            with Timer() as t:
                fn()
            times[name].append(t.seconds)
    return {k: median(v) for k, v in times.items()}


def run(ctx: Context) -> Section:
    sec = Section("9. Deploy: fp32, fp16 and int8 in PyTorch and ONNX")
    data = ctx.data()
    ckpt, origin = the_model(ctx, data)
    test = data.splits["test"]
    audio = ckpt.audio
    calibration = list(calibration_batches(data.splits["train"], data.frames))
    waves = ex.load_clips(DATA, audio, ctx.cache_dir, "test", 10**6, ckpt.classes)
    train_waves = ex.load_clips(DATA, audio, ctx.cache_dir, "train", ex.CALIBRATION_CLIPS, ckpt.classes)
    labels = np.array([label for _, label in waves])
    fused = ckpt.model.fused()
    with torch.inference_mode():  # PyTorch float on the very windows ONNX Runtime gets
        float_top = clip_scores(lambda w: fused(torch.from_numpy(w)).numpy(), waves, audio.clip_samples).argmax(1)

    rows, forward = {}, {}
    window = torch.randn(1, audio.clip_samples) * 0.1
    with torch.inference_mode():
        features = fused.frontend(window)  # what the CNN alone gets: the front end is float at every precision
    for precision in PRECISIONS:
        ctx.say(f"  {precision}: PyTorch, then ONNX")
        model = to_precision(ckpt.model, precision, calibration)
        acc, _, _ = score(model, test, data.frames)
        path = ctx.tmp / "deploy" / f"model-{precision}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        cal = [ex.centre(w, audio.clip_samples) for w, _ in train_waves] if precision == "int8" else None
        with Timer() as t_export:
            proto = ex.build(ckpt.model, precision, cal, ckpt.classes, audio.clip_samples)
        path.write_bytes(proto.SerializeToString())
        sess = ex.session(path)
        top = clip_scores(lambda w, sess=sess: ex.run_onnx(sess, w), waves, audio.clip_samples).argmax(1)
        rows[precision] = {"torch_acc": acc, "param_kb": parameter_bytes(model) / 1000,
                           "file_kb": path.stat().st_size / 1000, "weights_kb": ex.weight_bytes(proto) / 1000,
                           "onnx_acc": float((top == labels).mean()), "agree": float((top == float_top).mean()),
                           "export_s": t_export.seconds}

        one_thread = ex.session(path, threads=1)

        def torch_forward(model=model):
            with torch.inference_mode():
                model(window)

        def cnn_forward(model=model):
            with torch.inference_mode():
                model.cnn(features)

        forward[f"torch {precision}"] = torch_forward
        forward[f"cnn {precision}"] = cnn_forward
        forward[f"onnx {precision}"] = lambda sess=one_thread: ex.run_onnx(sess, window.numpy())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = timed(forward, 20 if ctx.quick else 100)
    finally:
        torch.set_num_threads(threads)

    base = rows["fp32"]
    sec.add(f"Model: {origin}; {len(test)} test clips of the default data; ONNX Runtime on whole clips "
            f"(mean logits of 3 s windows). Forward pass: one 3 s window, 1 thread, median of "
            f"{20 if ctx.quick else 100} interleaved runs.", "")
    table = []
    for p, r in rows.items():
        table.append([p, f"{r['torch_acc']:.3f}", f"{100 * (r['torch_acc'] - base['torch_acc']):+.1f}",
                      f"{r['param_kb']:.1f}", f"{1000 * seconds[f'torch {p}']:.2f} ms",
                      f"{1000 * seconds[f'cnn {p}']:.2f} ms",
                      f"{r['file_kb']:.1f} ({r['weights_kb']:.1f})", f"{r['onnx_acc']:.3f}",
                      f"{100 * r['agree']:.1f} %", f"{1000 * seconds[f'onnx {p}']:.2f} ms", f"{r['export_s']:.1f} s"])
    sec.table(["precision", "PyTorch test acc", "vs fp32 (points)", "parameter kB", "PyTorch forward",
               "PyTorch CNN alone",
               "ONNX file kB (CNN weights)", "ONNX test acc", "ONNX top label = PyTorch fp32 (same windows)",
               "ONNX forward",
               "export"], table)
    drop = 100 * (base["torch_acc"] - rows["int8"]["torch_acc"])
    sec.goal("9 deploy: int8 test accuracy drop against fp32, PyTorch (points)", f"{drop:+.1f}",
             f"<= {INT8_GOAL}", None if ctx.quick else drop <= INT8_GOAL)
    onnx_drop = 100 * (base["onnx_acc"] - rows["int8"]["onnx_acc"])
    sec.goal("9 deploy: int8 test accuracy drop against fp32, ONNX Runtime (points)", f"{onnx_drop:+.1f}",
             f"<= {INT8_GOAL}", None if ctx.quick else onnx_drop <= INT8_GOAL)
    sec.goal("9 deploy: int8 forward time / fp32, PyTorch", f"{seconds['torch int8'] / seconds['torch fp32']:.2f}",
             "report", None)
    sec.goal("9 deploy: int8 CNN time / fp32, PyTorch", f"{seconds['cnn int8'] / seconds['cnn fp32']:.2f}",
             "report", None)
    sec.goal("9 deploy: int8 forward time / fp32, ONNX Runtime", f"{seconds['onnx int8'] / seconds['onnx fp32']:.2f}",
             "report", None)
    sec.goal("9 deploy: ONNX fp32 file / int8 file (kB)", f"{base['file_kb']:.1f} / {rows['int8']['file_kb']:.1f}",
             "report", None)
    return sec
