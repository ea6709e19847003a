"""What a model costs, from its config alone: parameters, MACs (`torch.utils.flop_counter` on
the meta device: no memory, no compute) and a per-layer summary; the budget they are held to.
A configuration over budget costs nothing to refuse."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sceneclf.errors import BudgetError
from sceneclf.model.cnn import ModelConfig, SceneClassifier, SceneCNN
from sceneclf.model.frontend import FeatureConfig


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


def build(features: FeatureConfig, model: ModelConfig, budget: Budget, frames: int) -> SceneClassifier:
    """Check the budget from the configs alone, then build."""
    n_params = count_params(model)
    macs = count_macs(model, (features.n_mels, frames)) if budget.max_macs is not None else None
    budget.check(n_params, macs)
    return SceneClassifier(features, model)
