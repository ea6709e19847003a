"""What a model costs, from its config alone: parameters, MACs (`torch.utils.flop_counter` on
the meta device: no memory, no compute) and a per-layer summary; the budget they are held to.
A configuration over budget costs nothing to refuse."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sceneclf.errors import BudgetError, ConfigError
from sceneclf.model import PRECISIONS
from sceneclf.model.cnn import ModelConfig, SceneClassifier, SceneCNN
from sceneclf.model.frontend import FeatureConfig

PRECISION_BYTES = dict(zip(PRECISIONS, (4, 2, 1)))


@dataclass(frozen=True)
class Cost:
    """What one model costs: parameters, MACs of one forward pass over `seconds` of audio, and the
    precision it ships in (DCASE counts 1 kB as 1000 bytes)."""

    n_params: int
    macs: int
    seconds: float
    precision: str = "fp32"

    @property
    def kb(self) -> float:
        return self.n_params * PRECISION_BYTES[self.precision] / 1000

    @property
    def macs_per_second(self) -> float:
        return self.macs / self.seconds


@dataclass(frozen=True)
class Budget:
    """Limits a model must fit, each optional but `max_params`: parameters, parameter memory in kB
    at `precision`, MACs per second of audio, and (older spaces) MACs per clip."""

    max_params: int = 128_000
    max_macs: int | None = None  # per clip, forward pass
    max_kb: float | None = None
    max_macs_per_second: float | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_BYTES:
            raise ConfigError(f"precision {self.precision!r}: use one of {', '.join(PRECISION_BYTES)}")
        for name in ("max_params", "max_macs", "max_kb", "max_macs_per_second"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"budget {name} {value}: must be positive")

    def limits(self, cost: Cost) -> dict[str, tuple[float, float]]:
        """(value, limit) of every limit set, by constraint name."""
        out = {"params": (cost.n_params, self.max_params)}
        if self.max_kb is not None:
            out["kb"] = (cost.kb, self.max_kb)
        if self.max_macs_per_second is not None:
            out["macs_per_second"] = (cost.macs_per_second, self.max_macs_per_second)
        if self.max_macs is not None:
            out["macs"] = (cost.macs, self.max_macs)
        return out

    def violations(self, cost: Cost) -> dict[str, float]:
        """Optuna-style constraint values by name: <= 0 is feasible."""
        return {name: float(value - limit) for name, (value, limit) in self.limits(cost).items()}

    def over(self, cost: Cost) -> list[str]:
        """One phrase per limit `cost` exceeds, with both numbers."""
        phrases = {
            "params": lambda v, lim: f"{v:,} parameters, over the budget of {lim:,} (--max-params)",
            "kb": lambda v, lim: (f"{v:,.1f} kB of parameters at {self.precision}, over the budget of "
                                  f"{lim:,g} kB (--max-kb)"),
            "macs_per_second": lambda v, lim: (f"{v:,.0f} MACs per second of audio, over the limit of "
                                               f"{lim:,.0f} (--max-macs-per-second)"),
            "macs": lambda v, lim: f"{v:,} MACs per clip, over the limit of {lim:,}",
        }
        return [phrases[name](value, limit) for name, (value, limit) in self.limits(cost).items() if value > limit]

    def check(self, cost: Cost) -> None:
        over = self.over(cost)
        if over:
            raise BudgetError(f"model has {'; '.join(over)}")

    def needs_macs(self) -> bool:
        return self.max_macs is not None or self.max_macs_per_second is not None


def count_params(cfg: ModelConfig) -> int:
    """Trainable parameters of SceneCNN(cfg), from the config alone."""
    total, cin, k = 0, cfg.in_channels, cfg.kernel_size
    for w in cfg.widths:
        total += cin * w * k * k + 2 * w  # conv (no bias) + BatchNorm scale and shift
        cin = w
    return total + cin * cfg.n_classes + cfg.n_classes


def count_macs(cfg: ModelConfig, input_shape: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass for one (n_mels, frames) input."""
    return summarize(cfg, input_shape).macs


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


def model_cost(features: FeatureConfig, model: ModelConfig, frames: int, precision: str = "fp32",
               count: bool = True) -> Cost:
    """The cost of SceneCNN(model) on `frames` frames of `features`; MACs only when `count`."""
    macs = count_macs(model, (features.n_mels, frames)) if count else 0
    return Cost(count_params(model), macs, features.seconds(frames), precision)


def build(features: FeatureConfig, model: ModelConfig, budget: Budget, frames: int) -> SceneClassifier:
    """Check the budget from the configs alone, then build."""
    budget.check(model_cost(features, model, frames, budget.precision, count=budget.needs_macs()))
    return SceneClassifier(features, model)
