"""A trained model at the precision it ships in, and the bytes its parameters take there. Pure torch.

- fp32: the model as trained, BatchNorm folded into the convolutions (`SceneClassifier.fused`).
- fp16: weights and activations of the CNN in half precision when this CPU runs half convolutions,
  else weights rounded to fp16 and computed in fp32 (`half_conv_supported` says which).
- int8: PyTorch eager post-training static quantization (`torch.ao.quantization`, x86 backend) of
  the CNN: each BatchNorm folded into its convolution, conv + ReLU fused, observers calibrated on
  training windows, then converted. The front end (log-mel, MFCC, normalisation) stays float.

What `to_precision` returns answers like a SceneClassifier (`forward`, `forward_mel`, `fused`,
`cnn.cfg`), so `train.score` scores it exactly as it scores the float model.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from sceneclf.data.melset import MelSet, batches
from sceneclf.errors import ConfigError
from sceneclf.model import PRECISIONS
from sceneclf.model.cnn import SceneClassifier, SceneCNN

INT8_ENGINE = "x86"  # fbgemm's successor: per-channel int8 weights, the PyTorch default on x86 CPUs
CALIBRATION_WINDOWS = 256  # training windows the int8 observers see: enough for stable ranges, seconds of CPU


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


@functools.cache
def half_conv_supported() -> bool:
    """Whether this CPU build runs convolutions on fp16 tensors."""
    try:
        x = torch.ones(1, 1, 3, 3, dtype=torch.float16)
        nn.functional.conv2d(x, x)
        return True
    except RuntimeError:
        return False


class DeployedClassifier(nn.Module):
    """The float front end and a CNN at `precision`; already folded, so `fused` returns itself."""

    def __init__(self, frontend: nn.Module, cnn: nn.Module, precision: str):
        super().__init__()
        self.frontend = frontend
        self.cnn = cnn
        self.precision = precision

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.frontend(wave))

    def forward_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.frontend.from_mel(mel))

    def fused(self) -> DeployedClassifier:
        return self

    def __reduce__(self):
        # PyTorch's quantized modules do not survive pickling whole; their state dict does.
        return _rebuild, (self.frontend, self.cnn.cfg, self.precision, self.cnn.state_dict())


def _rebuild(frontend: nn.Module, cfg, precision: str, state: dict) -> DeployedClassifier:
    """A pickled DeployedClassifier: the same structure at `precision`, then its stored state."""
    shell = SceneClassifier(frontend.cfg, cfg)
    if precision == "int8":  # observers left uncalibrated: the stored state brings every scale
        cnn = _quantize_int8(shell, None)
    else:
        cnn = to_precision(shell, precision).cnn
    cnn.load_state_dict(state)
    return DeployedClassifier(frontend, cnn, precision)


class HalfCNN(nn.Module):
    """A folded SceneCNN run in fp16; float in, float out."""

    def __init__(self, cnn: SceneCNN):
        super().__init__()
        self.cfg = cnn.cfg
        self.inner = cnn.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()).float()


class Int8CNN(nn.Module):
    """A folded SceneCNN rearranged for eager quantization: quant stub, conv + ReLU (+ max-pool:
    it commutes with the ReLU), average pooling, head, dequant stub."""

    def __init__(self, cnn: SceneCNN):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.cfg = cnn.cfg
        self.quant = QuantStub()
        self.blocks = nn.Sequential(*(
            nn.Sequential(block[0], nn.ReLU(), *(m for m in block if isinstance(m, nn.MaxPool2d)))
            for block in cnn.blocks))
        # The quantized kernels have adaptive pooling; the custom channels-last mean only speeds up training.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = cnn.head
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x.contiguous(memory_format=torch.channels_last))
        return self.dequant(self.head(self.pool(self.blocks(x)).flatten(1)))


def calibration_batches(train: MelSet, frames: int, windows: int = CALIBRATION_WINDOWS,
                        batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Centre windows of up to `windows` training clips spread evenly over the set (mel power,
    (B, n_mels, frames)): what the int8 observers are calibrated on."""
    n = len(train)
    picks = sorted({round(i * n / windows) for i in range(min(n, windows))}) if n else []
    subset = MelSet([train.mels[i] for i in picks], train.labels[picks])
    for x, _ in batches(subset, batch_size, frames, train=False):
        yield x


def to_precision(model: SceneClassifier, precision: str, calibration: Iterable[torch.Tensor] = ()) -> nn.Module:
    """An inference copy of `model` at `precision` (fp32, fp16, int8); `model` is left as it is.
    int8 needs `calibration`: mel batches from training clips (`calibration_batches`)."""
    check_precision(precision)
    base = model.fused()
    if precision == "fp32":
        return base
    if precision == "fp16":
        if half_conv_supported():
            return DeployedClassifier(base.frontend, HalfCNN(base.cnn), precision)
        with torch.no_grad():
            for p in base.cnn.parameters():
                p.copy_(p.half().float())
        return DeployedClassifier(base.frontend, base.cnn, precision)
    return DeployedClassifier(base.frontend, _quantize_int8(base, calibration), precision)


@torch.no_grad()
def _quantize_int8(base: SceneClassifier, calibration: Iterable[torch.Tensor] | None) -> nn.Module:
    """`base`'s CNN fused, calibrated and converted; with `calibration` None the observers stay
    empty, for a state dict to be loaded into."""
    from torch.ao import quantization as tq

    torch.backends.quantized.engine = INT8_ENGINE
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        cnn = Int8CNN(copy.deepcopy(base.cnn)).eval()
        cnn.qconfig = tq.get_default_qconfig(INT8_ENGINE)
        tq.fuse_modules(cnn, [[f"blocks.{i}.0", f"blocks.{i}.1"] for i in range(len(cnn.blocks))], inplace=True)
        tq.prepare(cnn, inplace=True)
        seen = 0
        with torch.inference_mode(False):
            for mel in calibration or ():
                cnn(base.frontend.from_mel(mel))
                seen += len(mel)
        if seen == 0 and calibration is not None:
            raise ConfigError("int8: no training windows to calibrate the quantized model on")
        return tq.convert(cnn, inplace=True)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the CNN's parameters as `model` stores them (a SceneClassifier or what
    `to_precision` returns): int8 weights 1 byte each with their biases at 32 bits, as PyTorch's
    quantized kernels keep them; fp16 and fp32 tensors at 2 and 4 bytes. The front end holds no
    parameters (its normalisation statistics are fitted, not trained)."""
    from torch.ao.nn import quantized as nnq

    total = 0
    for m in model.cnn.modules():
        if isinstance(m, (nnq.Conv2d, nnq.Linear)):
            tensors = [m.weight(), m.bias()]
        else:
            tensors = list(m.parameters(recurse=False))
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
    if getattr(model, "precision", None) == "fp16" and not half_conv_supported():
        total //= 2  # weights rounded to fp16, held in fp32 only to compute
    return total
