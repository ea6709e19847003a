"""bfloat16 autocast against float32 training on this CPU, one fixed configuration per row.

Each row trains a CNN as a search trial does (the default data's train split, best state by
validation, 24 epochs with early stop after 6, Freq-MixStyle p 0.7 and a time shift, one thread),
once with SCENECLF_CPU_BF16=0 and once with it on, and prints validation and test accuracy and
the seconds each took. Not part of `run.py`; prints one markdown table.

    python -m bench.bf16_check [--widths 16,32,64 32,64,128] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, default_cache_dir, prepare
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import Budget
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import TrainConfig, score, train_model, train_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["16,32,64", "32,64,128"])
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = prepare(DataConfig(), AudioConfig(), FeatureConfig(), default_cache_dir())
    augment = AugmentConfig(mixstyle_p=0.7, mixstyle_alpha=0.3, time_shift=data.frames // 3)
    print("| widths | seed | training | val | test | test, unheard devices | seconds |\n|---|---|---|---|---|---|---|")
    for widths in (tuple(int(w) for w in spec.split(",")) for spec in args.widths):
        for seed in (int(s) for s in args.seeds.split(",")):
            for switch in ("0", "1"):
                os.environ["SCENECLF_CPU_BF16"] = switch
                t0 = time.perf_counter()
                model_cfg = ModelConfig(widths=widths, dropout=0.2, n_classes=len(data.classes))
                cfg = TrainConfig(lr=3e-3, epochs=24, early_stop=6, seed=seed)
                model, _ = train_model(FeatureConfig(), model_cfg, cfg, Budget(), data.splits["train"],
                                       data.splits["val"], data.frames, augment=augment)
                seconds = time.perf_counter() - t0
                val, _, _ = score(model, data.splits["val"], data.frames)
                test, _, logits = score(model, data.splits["test"], data.frames)
                devices = data.devices("test", logits, heard=("train",))
                known = devices is not None and devices.unheard_accuracy is not None
                unheard = f"{devices.unheard_accuracy:.3f}" if known else "-"
                print(f"| {','.join(map(str, widths))} | {seed} | {train_precision('cpu')} | {val:.3f} | {test:.3f} | "
                      f"{unheard} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
