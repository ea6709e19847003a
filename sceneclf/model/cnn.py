"""SceneCNN: Conv-BatchNorm-ReLU blocks, global average pooling and a linear head over the
2-channel front-end output; SceneClassifier puts the front end in front of it. Pure torch."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sceneclf.errors import ConfigError
from sceneclf.model import KERNEL_SIZES, MAX_BLOCKS
from sceneclf.model.frontend import FeatureConfig, FrontEnd

BN_MOMENTUM = 0.3  # short epochs: running statistics must keep up with the weights (bench compute)


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
        if not 1 <= len(self.widths) <= MAX_BLOCKS or min(self.widths) < 1:
            raise ConfigError(f"widths {self.widths}: need 1..{MAX_BLOCKS} blocks of width >= 1")
        if self.kernel_size not in KERNEL_SIZES:
            raise ConfigError(f"kernel_size {self.kernel_size} must be one of {', '.join(map(str, KERNEL_SIZES))}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} must lie in [0, 1)")


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d(1)`, computed as a mean over the channels-last layout the blocks
    produce: same values, but its backward hands the ReLU before it a gradient in that layout
    instead of a broadcast one walked across strides (bench compute has the gain)."""

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
                # Max-pool before the ReLU: the same outputs (ReLU commutes with max), on a quarter of the elements.
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = GlobalAvgPool2d()
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cin, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last: the CPU convolutions run faster on these small maps (bench compute).
        x = self.pool(self.blocks(x.contiguous(memory_format=torch.channels_last))).flatten(1)
        return self.head(self.dropout(x))

    @torch.no_grad()
    def fused(self) -> SceneCNN:
        """A copy for inference, in eval mode, with each BatchNorm folded into the convolution
        before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`, from the running statistics): the
        same outputs to float rounding, without BatchNorm's pass over the largest feature maps."""
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
