"""SceneCNN: a small, budgeted CNN over the 2-channel front-end output.

Pure torch: no printing, no Optuna, no MLflow. Parameter counts are computed from the config
alone, before anything is built; MACs come from `torch.utils.flop_counter` run on the meta device
(no memory, no compute), so a configuration over budget costs nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sceneclf.errors import BudgetError, ConfigError
from sceneclf.features import FeatureConfig, FrontEnd

# BatchNorm running statistics follow the weights faster than torch's 0.1: an epoch here is only
# 10-40 optimiser steps, and with 0.1 the evaluation statistics lag the weights, which made the
# validation accuracy jump by 7-10 points from epoch to epoch. Measured on the default data (three
# trainings of 20 epochs): mean epoch-to-epoch change 0.084 -> 0.064, mean of the last five epochs
# 0.711 -> 0.741, first-epoch accuracy 0.18 -> 0.22 (momentum 0.1 -> 0.3).
BN_MOMENTUM = 0.3


@dataclass(frozen=True)
class ModelConfig:
    n_classes: int = 15
    widths: tuple[int, ...] = (16, 32, 64)
    kernel_size: int = 3
    dropout: float = 0.1
    in_channels: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.n_classes < 2:
            raise ConfigError(f"n_classes {self.n_classes}: need at least 2 classes")
        if not 1 <= len(self.widths) <= 6 or min(self.widths) < 1:
            raise ConfigError(f"widths {self.widths}: need 1..6 blocks of width >= 1")
        if self.kernel_size not in (1, 3, 5, 7):
            raise ConfigError(f"kernel_size {self.kernel_size} must be 1, 3, 5 or 7")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} must lie in [0, 1)")


@dataclass(frozen=True)
class Budget:
    max_params: int = 128_000
    max_macs: int | None = None  # per clip, forward pass

    def violations(self, n_params: int, macs: int | None) -> list[float]:
        """Optuna-style constraint values: <= 0 is feasible."""
        out = [float(n_params - self.max_params)]
        if self.max_macs is not None:
            out.append(float((macs or 0) - self.max_macs))
        return out

    def check(self, n_params: int, macs: int | None) -> None:
        if n_params > self.max_params:
            raise BudgetError(
                f"model has {n_params:,} parameters, over the budget of {self.max_params:,} (--max-params)"
            )
        if self.max_macs is not None and macs is not None and macs > self.max_macs:
            raise BudgetError(f"model needs {macs:,} MACs per clip, over the limit of {self.max_macs:,}")


def count_params(cfg: ModelConfig) -> int:
    """Trainable parameters of SceneCNN(cfg), from the config alone."""
    total, cin, k = 0, cfg.in_channels, cfg.kernel_size
    for w in cfg.widths:
        total += cin * w * k * k + 2 * w  # conv (no bias) + BatchNorm scale and shift
        cin = w
    return total + cin * cfg.n_classes + cfg.n_classes


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d(1)`, computed as a mean over the channels-last layout the blocks
    produce. Same values; but its backward hands the ReLU before it a gradient in that layout,
    where torch's own pooling hands it a broadcast one that the ReLU's backward walks across
    strides: 2.1 -> 0.5 ms for ReLU + pooling forward and backward of the default CNN's last block
    (32 x 64 x 10 x 24), a training step 3-4 % faster (steps interleaved; 2 cores, 2026-11-24)."""

    def __init__(self) -> None:
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1, 2).mean(1)[:, :, None, None]


class SceneCNN(nn.Module):
    """Conv-BN-ReLU blocks (max-pooled between blocks), global average pooling, linear head.
    Works for any input length (adaptive pooling)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        blocks, cin = [], cfg.in_channels
        for i, w in enumerate(cfg.widths):
            layers: list[nn.Module] = [
                nn.Conv2d(cin, w, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=False),
                nn.BatchNorm2d(w, momentum=BN_MOMENTUM),
            ]
            if i < len(cfg.widths) - 1:
                # Pooling before the ReLU computes exactly Conv-BN-ReLU-MaxPool (ReLU is monotone,
                # so it commutes with max; same outputs and gradients, bit for bit) with the ReLU
                # and its backward on a quarter of the elements: 1.03-1.04x per training pass
                # here (bench 2, 06:02 on 2026-11-24).
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = GlobalAvgPool2d()
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cin, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last: the CPU convolutions run 1.2-1.5x faster on these small maps (bench/RESULTS.md).
        x = self.pool(self.blocks(x.contiguous(memory_format=torch.channels_last))).flatten(1)
        return self.head(self.dropout(x))

    @torch.no_grad()
    def fused(self) -> SceneCNN:
        """A copy for inference, in eval mode, with each BatchNorm folded into the convolution
        before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`, from the running statistics): the
        same outputs to float rounding, without BatchNorm's pass over the largest feature maps. A
        validation pass of the default CNN (150 clips, after a training pass, as in `fit`): 59 -> 43
        ms on 2 cores (2026-11-24); no gain measured in a process whose heap earlier work had grown."""
        with torch.inference_mode(False):  # callable from inference code: the copy needs real tensors
            out = copy.deepcopy(self).eval()
            for block in out.blocks:
                conv, bn = block[0], block[1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    block[0], block[1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
        return out


class SceneClassifier(nn.Module):
    """Front end + CNN: raw waveforms (B, samples) in, class logits out. What checkpoints and
    MLflow models hold, so one object serves training (`forward_mel`) and inference (`forward`)."""

    def __init__(self, features: FeatureConfig, model: ModelConfig):
        super().__init__()
        self.frontend = FrontEnd(features)
        self.cnn = SceneCNN(model)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.frontend(wave))

    def forward_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.frontend.from_mel(mel))

    def fused(self) -> SceneClassifier:
        """A copy for evaluation and prediction (eval mode, BatchNorm folded into the
        convolutions: `SceneCNN.fused`); this model is left as it is, trainable."""
        cnn = self.cnn.fused()
        with torch.inference_mode(False):
            return copy.deepcopy(self, memo={id(self.cnn): cnn}).eval()  # the CNN is not copied twice


def count_macs(cfg: ModelConfig, input_shape: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass for one (n_mels, frames) input, counted by
    torch.utils.flop_counter on the meta device."""
    with torch.device("meta"):
        model = SceneCNN(cfg).eval()
        x = torch.empty(1, cfg.in_channels, *input_shape)
    from torch.utils.flop_counter import FlopCounterMode  # imports triton: 0.2 s that predict does not need

    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return counter.get_total_flops() // 2


@dataclass
class LayerRow:
    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class ModelSummary:
    rows: list[LayerRow] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()

    @property
    def n_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def format(self) -> str:
        """A torchinfo-style table: layer, output shape, parameters, MACs."""
        head = f"{'Layer (type)':<34}{'Output shape':<22}{'Param #':>10}{'MACs':>14}"
        rule = "=" * len(head)
        lines = [rule, head, rule]
        for r in self.rows:
            label = f"{r.name} ({r.kind})"
            lines.append(f"{label:<34}{list(r.shape)!s:<22}{r.params:>10,}{r.macs:>14,}")
        lines += [
            rule,
            f"Input shape: {list(self.input_shape)}",
            f"Total params: {self.n_params:,}",
            f"Total MACs: {self.macs:,}",
            rule,
        ]
        return "\n".join(lines)


def summarize(cfg: ModelConfig, input_shape: tuple[int, int]) -> ModelSummary:
    """Per-layer output shape, parameters and MACs of SceneCNN(cfg) for one input, on the meta
    device (nothing is allocated)."""
    with torch.device("meta"):
        model = SceneCNN(cfg).eval()
        x = torch.empty(1, cfg.in_channels, *input_shape)
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(out.shape)))
        for n, m in leaves
    ]
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    flops = counter.get_flop_counts()
    root = type(model).__name__
    summary = ModelSummary(input_shape=tuple(x.shape))
    for n, m in leaves:
        per_op = flops.get(f"{root}.{n}", {})
        summary.rows.append(LayerRow(
            name=n, kind=type(m).__name__, shape=shapes.get(n, ()),
            params=sum(p.numel() for p in m.parameters()),
            macs=int(sum(per_op.values())) // 2,
        ))
    return summary


def build(features: FeatureConfig, model: ModelConfig, budget: Budget, frames: int) -> SceneClassifier:
    """Check the budget from the configs alone, then build."""
    n_params = count_params(model)
    macs = count_macs(model, (features.n_mels, frames)) if budget.max_macs is not None else None
    budget.check(n_params, macs)
    return SceneClassifier(features, model)
