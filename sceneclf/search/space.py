"""Search spaces: TOML files under `search/` turned into configs in one place.

A space file has three tables:

    [budget]                      # optional: max_params (default 128000), max_kb, precision
                                  # (fp32, fp16, int8), max_macs_per_second, max_macs (per clip)
    [train]                       # optional fixed settings: epochs, early_stop, ema_epochs
    [params.NAME]                 # one per tuned parameter
    type = "float" | "int" | "categorical"
    low, high, log, step          # float and int
    choices = [...]               # categorical

`sample(trial, space, n_classes)` asks the trial for every parameter and returns the configs; it
works with a real trial and with `optuna.trial.FixedTrial` alike.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sceneclf.errors import ConfigError
from sceneclf.model import MAX_BLOCKS
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import Budget
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import TrainConfig

#: Every parameter a space may tune, and what it sets.
KNOWN_PARAMS = {
    "lr": "Adam learning rate",
    "weight_decay": "Adam weight decay",
    "batch_size": "mini-batch size",
    "noise": "training noise (noise-to-signal RMS ratio, at most)",
    "dropout": "dropout before the head",
    "kernel_size": "convolution kernel size",
    "n_blocks": "number of conv blocks",
    "base_width": "channels of the first block",
    "growth": "width ratio between consecutive blocks",
    **{f"width_{i}": f"channels of block {i} (instead of base_width and growth)"
       for i in range(1, MAX_BLOCKS + 1)},
    "mixstyle_p": "Freq-MixStyle: probability per batch",
    "mixstyle_alpha": "Freq-MixStyle: Beta(alpha, alpha) mixing weights",
    "mixup_alpha": "mixup: Beta(alpha, alpha) mixing weights (0: off)",
    "freq_masks": "SpecAugment: frequency masks per clip",
    "freq_width": "SpecAugment: widest frequency mask (mel bands)",
    "time_masks": "SpecAugment: time masks per clip",
    "time_width": "SpecAugment: widest time mask (frames)",
    "time_shift": "largest circular time shift (frames)",
    "response_p": "device response: probability per clip of a random frequency response",
    "response_db": "device response: largest gain of its tilt and of each peak (dB)",
}
AUGMENT_PARAMS = {"mixstyle_p": float, "mixstyle_alpha": float, "mixup_alpha": float, "freq_masks": int,
                  "freq_width": int, "time_masks": int, "time_width": int, "time_shift": int,
                  "response_p": float, "response_db": float}
KNOWN_TRAIN = {"epochs", "early_stop", "plateau_patience", "plateau_factor", "ema_epochs"}
KNOWN_BUDGET = {"max_params", "max_macs", "max_kb", "max_macs_per_second", "precision"}
TYPES = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
         "categorical": {"choices"}}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    params: dict[str, Param]
    budget: Budget = Budget()
    train: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the file's text, stored with the study

    @property
    def epochs(self) -> int:
        return int(self.train.get("epochs", TrainConfig.epochs))


@dataclass(frozen=True)
class TrialConfigs:
    features: FeatureConfig
    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig = AugmentConfig()

    def flat(self) -> dict[str, Any]:
        """Flat parameters for MLflow (widths as "16,32,64")."""
        return {
            "lr": self.train.lr, "weight_decay": self.train.weight_decay,
            "batch_size": self.train.batch_size, "epochs": self.train.epochs,
            "noise": self.features.noise, "dropout": self.model.dropout,
            "kernel_size": self.model.kernel_size, "n_blocks": len(self.model.widths),
            "widths": ",".join(map(str, self.model.widths)),
            "n_mels": self.features.n_mels, "hop_length": self.features.hop_length,
            **{f"augment.{k}": v for k, v in asdict(self.augment).items()},
        }


def packaged_spaces() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("sceneclf.spaces").iterdir()
                  if p.name.endswith(".toml"))


def load_space(spec: str | Path = "default") -> SearchSpace:
    """A space from a file path, or by name from the packaged spaces (`default`,
    `dcase-low-complexity`)."""
    path = Path(spec)
    if path.is_file():
        text, name = path.read_text(encoding="utf-8"), str(path)
    else:
        stem = path.name.removesuffix(".toml")
        if stem not in packaged_spaces():
            raise ConfigError(f"--space {spec}: no such file, and not a packaged space "
                              f"({', '.join(packaged_spaces())})")
        text, name = resources.files("sceneclf.spaces").joinpath(f"{stem}.toml").read_text("utf-8"), stem
    return parse_space(text, name)


def parse_space(text: str, name: str = "<space>") -> SearchSpace:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML ({exc})") from None
    for key in doc:
        if key not in ("params", "train", "budget"):
            raise ConfigError(f"{name}: unknown table [{key}] (use [params.*], [train], [budget])")
    raw = doc.get("params")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{name}: no [params.*] tables: a space tunes at least one parameter")
    params = {k: _parse_param(name, k, v) for k, v in raw.items()}
    if "base_width" not in params and not any(k.startswith("width_") for k in params):
        raise ConfigError(f"{name}: set params.base_width (with growth) or params.width_1.. to tune widths")
    train = doc.get("train", {})
    for key in train:
        if key not in KNOWN_TRAIN:
            raise ConfigError(f"{name}: unknown key train.{key} (known: {', '.join(sorted(KNOWN_TRAIN))})")
    budget_doc = doc.get("budget", {})
    for key in budget_doc:
        if key not in KNOWN_BUDGET:
            raise ConfigError(f"{name}: unknown key budget.{key} (known: {', '.join(sorted(KNOWN_BUDGET))})")
    budget = Budget(max_params=int(budget_doc.get("max_params", Budget.max_params)),
                    max_macs=int(budget_doc["max_macs"]) if "max_macs" in budget_doc else None,
                    max_kb=float(budget_doc["max_kb"]) if "max_kb" in budget_doc else None,
                    max_macs_per_second=(float(budget_doc["max_macs_per_second"])
                                         if "max_macs_per_second" in budget_doc else None),
                    precision=str(budget_doc.get("precision", Budget.precision)))
    return SearchSpace(name, params, budget, dict(train), text)


def _parse_param(file: str, key: str, spec: Any) -> Param:
    where = f"{file}: params.{key}"
    if key not in KNOWN_PARAMS:
        raise ConfigError(f"{where}: unknown parameter (known: {', '.join(KNOWN_PARAMS)})")
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise ConfigError(f"{where}: needs type = \"float\", \"int\" or \"categorical\"")
    kind = spec["type"]
    extra = set(spec) - TYPES[kind] - {"type"}
    if extra:
        raise ConfigError(f"{where}: unknown key {sorted(extra)[0]} for type {kind}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return Param(key, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: low and high must be numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"{where}: low {low} must not exceed high {high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: int bounds must be whole numbers")
    step = spec.get("step")
    if step is not None and (log or float(step) <= 0):
        raise ConfigError(f"{where}: step must be positive and cannot go with log")
    return Param(key, kind, low, high, log, float(step) if step is not None else None)


def sample(trial, space: SearchSpace, n_classes: int, seed: int = 0,
           defaults: TrialConfigs | None = None) -> TrialConfigs:
    """Ask `trial` for each parameter of `space`; what the space does not tune comes from
    `defaults` (the library defaults when None)."""
    d = defaults or TrialConfigs(FeatureConfig(), ModelConfig(n_classes=n_classes), TrainConfig(), AugmentConfig())
    p = space.params
    v = {name: param.suggest(trial) for name, param in p.items() if not name.startswith("width_")}
    n_blocks = int(v.get("n_blocks", len(d.model.widths)))
    if not 1 <= n_blocks <= MAX_BLOCKS:
        raise ConfigError(f"{space.name}: n_blocks {n_blocks} outside 1..{MAX_BLOCKS}")
    if "base_width" in v:
        growth = float(v.get("growth", 2.0))
        widths = tuple(max(1, round(v["base_width"] * growth ** i)) for i in range(n_blocks))
    else:
        widths = tuple(
            int(p[f"width_{i}"].suggest(trial)) if f"width_{i}" in p
            else d.model.widths[min(i, len(d.model.widths)) - 1]
            for i in range(1, n_blocks + 1)
        )
    features = FeatureConfig(**{**_fields(d.features), "noise": float(v.get("noise", d.features.noise))})
    model = ModelConfig(n_classes=n_classes, widths=widths,
                        kernel_size=int(v.get("kernel_size", d.model.kernel_size)),
                        dropout=float(v.get("dropout", d.model.dropout)))
    train = TrainConfig(**{
        **_fields(d.train),
        "lr": float(v.get("lr", d.train.lr)),
        "weight_decay": float(v.get("weight_decay", d.train.weight_decay)),
        "batch_size": int(v.get("batch_size", d.train.batch_size)),
        "seed": seed,
        **space.train,
    })
    augment = AugmentConfig(**{**_fields(d.augment),
                               **{k: cast(v[k]) for k, cast in AUGMENT_PARAMS.items() if k in v}})
    return TrialConfigs(features, model, train, augment)


def _fields(obj) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
