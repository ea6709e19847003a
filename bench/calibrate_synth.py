"""Calibrate the synthetic default data set: how far its average spectra go, and how far a CNN.

Prints one table: split sizes, generation seconds, the bag-of-frames reference (per-band mean and
std of the log-mel over the whole clip: `sceneclf.tasks.reference`), a good CNN with and without augmentation and a poor configuration, each
scored on the test split. The data go through the tool's own loading path (`prepare`).

    OMP_NUM_THREADS=1 python -m bench.calibrate_synth [--cache DIR] [--epochs 40] [--skip cnn,aug]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.data.synth import TRAIN_DEVICES, SynthConfig, write_dataset
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import Budget, count_params
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.tasks.reference import fit_reference
from sceneclf.train import TrainConfig, score, train_model

GOOD = ModelConfig(widths=(24, 48, 96), dropout=0.2)
POOR = ModelConfig(widths=(4, 8))


def generation_seconds(cfg: SynthConfig) -> float:
    """Seconds to write the data set (audio and manifest) to a fresh temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix="synth-timing-"))
    try:
        t0 = time.perf_counter()
        write_dataset(tmp / "data", cfg, seed=0)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_cnn(data, model_cfg: ModelConfig, cfg: TrainConfig,
            augment: AugmentConfig = AugmentConfig()) -> tuple[float, float, float, str]:
    """(best val accuracy, test accuracy of the best state, seconds, test accuracy by device) of
    one seeded training."""
    t0 = time.perf_counter()
    model, result = train_model(FeatureConfig(), replace(model_cfg, n_classes=len(data.classes)), cfg, Budget(),
                                data.splits["train"], data.splits["val"], data.frames, augment=augment)
    test, _, logits = score(model, data.splits["test"], data.frames)
    return result.best_val_accuracy, test, time.perf_counter() - t0, by_device(data, logits)


def by_device(data, logits: torch.Tensor) -> str:
    """Test accuracy on devices heard in training and on those not (the file name's last part)."""
    clips = data.manifest.subset("test").clips
    right = (logits.argmax(1) == data.splits["test"].labels).tolist()
    heard = [c.path.stem.rsplit("_", 1)[-1] in TRAIN_DEVICES for c in clips]
    seen = [r for h, r in zip(heard, right) if h]
    unseen = [r for h, r in zip(heard, right) if not h]
    return f"seen devices {sum(seen) / max(1, len(seen)):.3f}, unseen {sum(unseen) / max(1, len(unseen)):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sceneclf-calibrate")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction)
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup alpha in the augmented run (0: off)")
    ap.add_argument("--skip", default="", help="comma-separated: gen, bof, cnn, aug, poor")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(1)
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"{name:<44} {value}", flush=True)

    if "gen" not in skip:
        row("generation seconds (write_dataset)", f"{generation_seconds(SynthConfig()):.1f}")
    data = prepare(DataConfig(val_fraction=args.val_fraction), AudioConfig(), FeatureConfig(), args.cache)
    row("clips train / val / test", " / ".join(str(len(data.splits[s])) for s in ("train", "val", "test")))
    if "bof" not in skip:
        ref = fit_reference(data.splits)
        row("bag-of-frames val / test (C)", f"{ref.val_accuracy:.3f} / {ref.test_accuracy:.3f} (C={ref.c:g})")
    good = TrainConfig(lr=3e-3, epochs=args.epochs, early_stop=args.epochs, seed=0)
    name = f"widths {','.join(map(str, GOOD.widths))} ({count_params(GOOD)} params)"
    if "cnn" not in skip:
        val, test, secs, devices = run_cnn(data, GOOD, good)
        row(f"CNN {name}, no aug val / test", f"{val:.3f} / {test:.3f} ({secs:.0f} s; {devices})")
    if "aug" not in skip:
        augment = AugmentConfig(time_shift=30, mixstyle_p=0.5, mixstyle_alpha=0.3, freq_masks=1, freq_width=4,
                                time_masks=1, time_width=10, mixup_alpha=args.mixup)
        val, test, secs, devices = run_cnn(data, GOOD, good, augment)
        row(f"CNN {name}, aug{' + mixup' if args.mixup else ''} val / test",
            f"{val:.3f} / {test:.3f} ({secs:.0f} s; {devices})")
    if "poor" not in skip:
        val, test, secs, _ = run_cnn(data, POOR, TrainConfig(lr=1e-4, epochs=20, seed=0))
        row("CNN widths 4,8, lr 1e-4, 20 epochs val / test", f"{val:.3f} / {test:.3f} ({secs:.0f} s)")


if __name__ == "__main__":
    main()
