"""`fit`: one training path for `train`, `search` and `retrain-best`.

Cross-entropy, Adam, ReduceLROnPlateau on the validation loss, early stopping, the best state
(by validation accuracy, then loss) kept in memory. With `TrainConfig.ema_epochs`, validation,
the best state and the last one are those of a moving average of the weights. No tracking and
no Optuna here: whatever watches training hangs on the `on_epoch(epoch, metrics)` callback,
which may raise to stop (Optuna's TrialPruned passes straight through). A `StateStore` passed
in keeps the whole training state after each epoch, so a killed run goes on at the next epoch.

On CUDA the splits' mels are held on the GPU (`ResidentMels`): crops, windows and the front end
run there, and an epoch waits for the GPU once, at its end, instead of after every batch.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from sceneclf.data.melset import MelSet, ResidentMels, batches, clip_windows, resident_batches, resident_windows
from sceneclf.errors import ConfigError, SceneclfError
from sceneclf.model.augment import Augment, AugmentConfig, soft_cross_entropy
from sceneclf.model.budget import Budget, build
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 20
    early_stop: int = 6  # epochs without a better validation score
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    ema_epochs: float = 0.0  # time constant of a moving average of the weights; 0: the raw weights
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.lr < 10:
            raise ConfigError(f"lr {self.lr} must lie in (0, 10)")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay {self.weight_decay} must be >= 0")
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"batch_size {self.batch_size} must lie in 1..4096")
        if self.epochs < 1:
            raise ConfigError(f"epochs {self.epochs} must be >= 1")
        if not 0 <= self.ema_epochs <= 100:
            raise ConfigError(f"ema_epochs {self.ema_epochs} must lie in [0, 100]")


class NonFiniteLossError(RuntimeError, SceneclfError):
    """The training loss became NaN or infinite (the search prunes the trial; `train` says so in
    one line)."""


class StateStore(Protocol):
    """Where `fit` keeps its training state between epochs (`sceneclf.search.resume`)."""

    def load(self) -> dict[str, Any] | None: ...  # the last state saved, or None: start afresh
    def save(self, epoch: int, state: Callable[[], dict[str, Any]]) -> None: ...  # may skip


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int  # 1-based
    best_val_accuracy: float
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics
    (`torch.optim.swa_utils.AveragedModel`), updated after every optimiser step. Its decay per
    step spans `epochs` epochs; until that many steps have passed it is the plain mean of the
    weights so far (decay (t - 1) / t at step t), so early weights weigh no more than later ones."""

    def __init__(self, model: nn.Module, steps_per_epoch: int, epochs: float) -> None:
        self.decay = 1.0 - 1.0 / max(1.0, steps_per_epoch * epochs)
        self.steps = 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)

    @property
    def module(self) -> SceneClassifier:
        return self.averaged.module

    @torch.no_grad()
    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _n: torch.Tensor) -> None:
        decay = min(self.decay, (self.steps - 1) / self.steps)
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:  # BatchNorm's batch counters: kept as the model's
            torch._foreach_copy_(averaged, current)

    def update(self, model: nn.Module) -> None:
        self.steps += 1
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.steps = int(state["steps"])


@torch.inference_mode()
def score(model: SceneClassifier, data: MelSet | ResidentMels, frames: int, batch_size: int = 128,
          device: torch.device | str = "cpu") -> tuple[float, float, torch.Tensor]:
    """(accuracy, mean cross-entropy, logits (N, C)) of whole clips: each clip's logits are the
    mean of its windows' (`clip_windows`), by the model in eval mode with its BatchNorms folded
    into the convolutions (`SceneClassifier.fused`, a copy)."""
    model.eval()
    model = model.fused()
    n_classes = model.cnn.cfg.n_classes
    resident = isinstance(data, ResidentMels)
    home = data.mels.device if resident else torch.device("cpu")  # where the sums are kept
    total = torch.zeros(len(data), n_classes, device=home)
    count = torch.zeros(len(data), device=home)
    cuda = torch.device(device).type == "cuda"
    windows = resident_windows(data, batch_size, frames) if resident else clip_windows(data, batch_size, frames)
    for x, owners in windows:
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            logits = model.forward_mel(x.to(device, non_blocking=True)).float().to(home)
        total.index_add_(0, owners, logits)
        count.index_add_(0, owners, torch.ones(len(owners), device=home))
    out = (total / count.clamp_min(1)[:, None]).cpu()
    labels = data.labels.cpu()
    loss = nn.functional.cross_entropy(out, labels).item() if len(data) else math.nan
    acc = (out.argmax(1) == labels).float().mean().item() if len(data) else math.nan
    return acc, loss, out


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The precision the CNN trains in: float16 on CUDA, bfloat16 on a CPU that computes it natively
    (AVX512-BF16 or AMX tiles), else None (float32). SCENECLF_CPU_BF16=0 keeps a CPU in float32."""
    if device.type == "cuda":
        return torch.float16
    # private probes (torch 2.3+): a torch without them trains in float32
    native = any(getattr(torch.cpu, probe, lambda: False)() for probe in
                 ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if device.type == "cpu" and native and os.environ.get("SCENECLF_CPU_BF16", "1") != "0":
        return torch.bfloat16
    return None


def train_precision(device: torch.device | str) -> str:
    """How `fit` trains on `device`, as logged with every trial: fp32, bf16-mixed or fp16-mixed."""
    amp = autocast_dtype(torch.device(device))
    return "fp32" if amp is None else ("bf16" if amp == torch.bfloat16 else "fp16") + "-mixed"


def fit(model: SceneClassifier, train: MelSet, val: MelSet, cfg: TrainConfig, frames: int,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        device: torch.device | str = "cpu", keep_last: bool = False,
        augment: AugmentConfig = AugmentConfig(), store: StateStore | None = None,
        resident: bool | None = None, until_train_loss: float | None = None, min_epochs: int = 1,
        compile_mode: str | None = None) -> FitResult:
    """Train `model` and return its best state (by validation accuracy, then loss), or with
    `keep_last` the final epoch's state (for retraining on train + validation data): the states
    of the weights' moving average (`WeightAverage`) unless `cfg.ema_epochs` is 0.

    `augment` runs on the front end's output of each training batch (and mixup on its labels).
    `on_epoch(epoch, metrics)` is called after each epoch (1-based) with train_loss,
    train_accuracy, val_loss, val_accuracy, lr and seconds; an exception it raises stops training.
    Raises NonFiniteLossError as soon as a batch loss is NaN or infinite. With `store`, training
    starts from the state it holds (at the epoch after it) and saves its state after each epoch.
    `resident` (default: on CUDA) holds the splits on the device; a non-finite batch loss is then
    found at the end of its epoch. With `until_train_loss`, training also stops after the first
    epoch from `min_epochs` on whose mean training loss is at most that. With `compile_mode`
    ("default", "reduce-overhead": CUDA graphs, "max-autotune"), the CNN's training forward and
    backward run through `torch.compile` in that mode; validation runs the model as it is.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = torch.device(device)
    cuda = device.type == "cuda"  # pinned host memory and a resident data set on CUDA only
    amp = autocast_dtype(device)
    resident = cuda if resident is None else resident
    if resident:
        train, val = ResidentMels.of(train, frames, device), ResidentMels.of(val, frames, device)
    batcher = resident_batches if resident else batches
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    model.to(device)
    augmenter = Augment(augment).to(device)
    mixup = augmenter.mixup(model.cnn.cfg.n_classes)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    average = WeightAverage(model, steps_per_epoch, cfg.ema_epochs) if cfg.ema_epochs > 0 else None
    judged = model if average is None else average.module  # the weights validated and kept
    cnn = model.cnn if compile_mode is None else torch.compile(model.cnn, mode=compile_mode)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    best: FitResult | None = None
    history: list[dict[str, float]] = []
    stale, start = 0, 1
    saved = store.load() if store is not None else None
    if saved is not None:
        best, history, stale, start = _restore(saved, model, opt, sched, scaler, gen, device, average)
    for epoch in range(start, cfg.epochs + 1):
        if stale >= cfg.early_stop:
            break
        t0 = time.perf_counter()
        model.train()
        augmenter.train()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss x clips, right answers
        seen = 0
        for x, y in batcher(train, cfg.batch_size, frames, train=True, generator=gen):
            if cuda and not resident:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if compile_mode is not None:  # CUDA graphs: a new step may reuse the last step's output memory
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                inputs = augmenter(model.frontend.from_mel(augmenter.mel(x)))
                target = y
                if mixup is not None:
                    inputs, target = mixup(inputs, y)
                # the CNN alone in bfloat16 on a CPU: the front end's DCT and statistics stay float32
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = cnn(inputs)
                loss = (nn.functional.cross_entropy if mixup is None else soft_cross_entropy)(logits.float(), target)
            if not resident and not torch.isfinite(loss):  # resident: checked at the epoch's end
                raise NonFiniteLossError(f"training loss became {loss.item()} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if average is not None:
                average.update(model)
            sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
            seen += len(y)
        total_loss, correct = sums.tolist()
        if not math.isfinite(total_loss):
            raise NonFiniteLossError(f"training loss became {total_loss} at epoch {epoch}")
        val_acc, val_loss, _ = score(judged, val, frames, device=device)
        lr = opt.param_groups[0]["lr"]
        metrics = {
            "train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        history.append(metrics)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss became {val_loss} at epoch {epoch}")
        sched.step(val_loss)
        if best is None or keep_last or (val_acc, -val_loss) > (best.best_val_accuracy, -best.best_val_loss):
            state = {k: v.detach().cpu().clone() for k, v in judged.state_dict().items()}
            best = FitResult(state, epoch, val_acc, val_loss)
            stale = 0
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if store is not None:
            store.save(epoch, lambda e=epoch, b=best, s=stale: _snapshot(e, model, opt, sched, scaler, gen, b,
                                                                         history, s, average))
        if until_train_loss is not None and epoch >= min_epochs and metrics["train_loss"] <= until_train_loss:
            break
    assert best is not None
    best.history = history
    return best


def _snapshot(epoch: int, model: nn.Module, opt, sched, scaler, gen: torch.Generator, best: FitResult,
              history: list[dict[str, float]], stale: int, average: WeightAverage | None) -> dict[str, Any]:
    """Everything `fit` needs to go on after `epoch`, as tensors and plain values (loadable with
    `torch.load(weights_only=True)`)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "stale": stale,
        "average": average.state_dict() if average is not None else None,
        "history": history, "best": {"state": best.best_state, "epoch": best.best_epoch,
                                     "val_accuracy": best.best_val_accuracy, "val_loss": best.best_val_loss},
        "rng": {"batches": gen.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
                "python": random.getstate()},
    }


def _restore(saved: dict[str, Any], model: nn.Module, opt, sched, scaler, gen: torch.Generator,
             device: torch.device, average: WeightAverage | None) -> tuple[FitResult, list[dict[str, float]], int, int]:
    """Put a `_snapshot` back; returns (best, history, stale, next epoch)."""
    model.load_state_dict(saved["model"])
    model.to(device)
    if average is not None:
        average.load_state_dict(saved["average"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    rng = saved["rng"]
    gen.set_state(rng["batches"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    b = saved["best"]
    best = FitResult(b["state"], b["epoch"], b["val_accuracy"], b["val_loss"])
    return best, list(saved["history"]), int(saved["stale"]), int(saved["epoch"]) + 1


def train_model(features: FeatureConfig, model_cfg: ModelConfig, cfg: TrainConfig, budget: Budget,
                train: MelSet, val: MelSet, frames: int,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                device: torch.device | str = "cpu", keep_last: bool = False,
                augment: AugmentConfig = AugmentConfig(), store: StateStore | None = None,
                until_train_loss: float | None = None, min_epochs: int = 1) -> tuple[SceneClassifier, FitResult]:
    """Check the budget, build, normalise with training statistics, fit (from the state in
    `store`, if any; until `until_train_loss`, if given); the model returned holds the best state."""
    torch.manual_seed(cfg.seed)  # initial weights follow the trial's seed too
    model = build(features, model_cfg, budget, frames)
    model.frontend.fit_stats(train.mels)
    result = fit(model, train, val, cfg, frames, on_epoch=on_epoch, device=device, keep_last=keep_last,
                 augment=augment, store=store, until_train_loss=until_train_loss,
                 min_epochs=min_epochs)
    model.load_state_dict(result.best_state)
    return model, result


def pick_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: use auto, cpu or cuda")
    return torch.device(name)
