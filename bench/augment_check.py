"""What each augmentation buys a model trained as retrain-best trains it, one fixed configuration.

A CNN of widths 24,48,96 (lr 3e-3, batch 32, 30 epochs, seed 0, one thread) on the default data's
train + val splits, the last state of its weights' moving average scored on test, overall and by
recording device, once per augmentation setting. Not part of `run.py`; prints one markdown table.

    OMP_NUM_THREADS=1 python -m bench.augment_check [--epochs 30] [--only none,mixstyle]
"""

from __future__ import annotations

import argparse
import time

import torch

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, default_cache_dir, prepare
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import Budget
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.tasks.retrain import AVERAGE_EPOCHS
from sceneclf.train import TrainConfig, score, train_model

SETTINGS = {
    "none": AugmentConfig(),
    "mixstyle": AugmentConfig(mixstyle_p=0.7, mixstyle_alpha=0.3, time_shift=30),
    "response": AugmentConfig(response_p=0.8, response_db=10.0, time_shift=30),
    "both": AugmentConfig(response_p=0.8, response_db=10.0, mixstyle_p=0.7, mixstyle_alpha=0.3, time_shift=30),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--only", default=",".join(SETTINGS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = prepare(DataConfig(), AudioConfig(), FeatureConfig(), default_cache_dir())
    model_cfg = ModelConfig(widths=(24, 48, 96), dropout=0.2, n_classes=len(data.classes))
    cfg = TrainConfig(lr=3e-3, epochs=args.epochs, early_stop=args.epochs, seed=0, ema_epochs=AVERAGE_EPOCHS)
    print("| augmentation | test | test, unheard devices | right of each device | seconds |\n|---|---|---|---|---|")
    for name in args.only.split(","):
        t0 = time.perf_counter()
        model, _ = train_model(FeatureConfig(), model_cfg, cfg, Budget(), data.splits["train"] + data.splits["val"],
                               data.splits["val"], data.frames, augment=SETTINGS[name], keep_last=True)
        acc, _, logits = score(model, data.splits["test"], data.frames)
        devices = data.devices("test", logits, heard=("train", "val"))
        unheard = "-" if devices is None or devices.unheard_accuracy is None else f"{devices.unheard_accuracy:.3f}"
        each = "-" if devices is None else " ".join(f"{d} {r}/{n}" for d, (r, n) in sorted(devices.counts.items()))
        print(f"| {name} | {acc:.3f} | {unheard} | {each} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
