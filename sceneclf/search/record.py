"""What a study stores about itself (`StudyRecord`), the names of the attributes sceneclf sets
on studies and trials, and how finished trials are read and ranked."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sceneclf.data.prepare import DataConfig
from sceneclf.errors import ConfigError
from sceneclf.model.budget import Budget

RECORD_VERSION = 1
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyAttr:
    """Keys of the study user attributes sceneclf sets."""

    RECORD = "sceneclf"
    TARGET_TRIALS = "target_trials"
    PARENT_RUN = "mlflow_parent_run_id"
    REFERENCE = "reference"  # the bag-of-frames reference's accuracies on the study's splits


class TrialAttr:
    """Keys of the trial user attributes sceneclf sets."""

    N_PARAMS = "n_params"
    MACS = "macs"
    KB = "kb"  # parameter memory at the budget's precision
    MACS_PER_SECOND = "macs_per_second"
    WIDTHS = "widths"
    WORKER = "worker"
    RUN_ID = "mlflow_run_id"
    OVER_BUDGET = "over_budget"
    REASON = "reason"
    BEST_EPOCH = "best_epoch"
    BEST_TRAIN_LOSS = "best_epoch_train_loss"  # mean training loss of the best epoch: retrain-best's target
    EPOCHS_RUN = "epochs_run"
    VAL_LOSS = "val_loss"
    CONFIG = "config"
    RETRY_OF = "retry_of"
    RESUMED_FROM_EPOCH = "resumed_from_epoch"  # a retry's first epoch was this + 1 (0: from scratch)
    FLOAT_ACCURACY = "float_val_accuracy"  # before conversion to the budget's precision
    PRECISION_DROP = "precision_drop"  # float accuracy minus the accuracy at the precision


@dataclass(frozen=True)
class StudyRecord:
    """The settings a study was started with; a resumed search and every worker run them."""

    space_name: str
    space_text: str
    budget: Budget
    epochs: int
    data: DataConfig
    fingerprint: str
    sampler: str
    pruner: str
    objectives: tuple[str, ...] = ("accuracy",)  # `OBJECTIVES` keys; records written before it hold accuracy only
    version: int = RECORD_VERSION

    def to_attr(self) -> dict[str, Any]:
        """JSON-able, as stored in `study.user_attrs["sceneclf"]`."""
        return asdict(self)

    @classmethod
    def from_attr(cls, raw: dict[str, Any], study_name: str) -> StudyRecord:
        version = raw.get("version", 1)  # records written before the field existed are version 1
        if version != RECORD_VERSION:
            raise ConfigError(f"study {study_name!r}: stored by another sceneclf (record version {version}, "
                              f"this one reads {RECORD_VERSION}); use the sceneclf version that made it")
        try:
            return cls(**{**raw, "version": version, "budget": Budget(**raw["budget"]),
                          "data": DataConfig(**raw["data"]),
                          "objectives": tuple(raw.get("objectives", cls.objectives))})
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"study {study_name!r}: its stored settings are unreadable ({exc})") from None

    @classmethod
    def load(cls, study: optuna.Study) -> StudyRecord | None:
        """The study's record; None for a study sceneclf did not start."""
        raw = study.user_attrs.get(StudyAttr.RECORD)
        return None if raw is None else cls.from_attr(raw, study.study_name)

    @classmethod
    def require(cls, study: optuna.Study) -> StudyRecord:
        record = cls.load(study)
        if record is None:
            raise ConfigError(f"study {study.study_name!r} was not made by sceneclf search (no settings stored)")
        return record

    def flat(self) -> dict[str, Any]:
        """Flat MLflow params of the study's parent run."""
        out = {"space": self.space_name, "epochs": self.epochs, "fingerprint": self.fingerprint,
               "sampler": self.sampler, "pruner": self.pruner, "objectives": ",".join(self.objectives)}
        out.update({f"budget.{k}": v for k, v in asdict(self.budget).items()})
        out.update({f"data.{k}": v for k, v in asdict(self.data).items()})
        return out


#: What a study may optimize: the name Optuna labels it with and its direction.
OBJECTIVES = {"accuracy": ("val_accuracy", "maximize"), "kb": ("kb", "minimize"),
              "macs": ("macs_per_second", "minimize")}


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial within budget, or None; in a multi-objective study the most
    accurate trial of the Pareto front (the smaller on a tie)."""
    if is_multi_objective(study):
        front = study.best_trials
        return max(front, key=lambda t: (t.values[0], -t.values[1])) if front else None
    try:
        return study.best_trial
    except ValueError:
        return None


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trial_value(t: FrozenTrial) -> float:
    """The trial's value (its accuracy, first in a multi-objective study too), or its last
    reported one (pruned), or NaN."""
    if t.values:
        return t.values[0]
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return math.nan


def trial_state(t: FrozenTrial) -> str:
    """COMPLETE, PRUNED, OVER_BUDGET, FAIL, RUNNING or WAITING."""
    if t.user_attrs.get(TrialAttr.OVER_BUDGET):
        return "OVER_BUDGET"
    return t.state.name


def top_trials(study: optuna.Study, n: int | None = None) -> list[FrozenTrial]:
    """Finished trials, best first: complete before pruned, then by (last reported) value."""
    trials = [t for t in study.trials if t.state in FINISHED]

    def key(t: FrozenTrial) -> tuple[bool, float]:
        v = trial_value(t)
        return trial_state(t) == "COMPLETE", -1.0 if math.isnan(v) else v

    trials.sort(key=key, reverse=True)
    return trials[:n]
