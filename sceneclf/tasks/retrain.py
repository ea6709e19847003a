"""`sceneclf retrain-best`: the best feasible trial, retrained on train + validation data,
evaluated on the held-out test split, logged and registered in MLflow as `sceneclf`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import optuna
from torch import nn

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, PreparedData
from sceneclf.echo import Echo
from sceneclf.errors import ConfigError
from sceneclf.model.budget import Budget
from sceneclf.model.checkpoint import Checkpoint
from sceneclf.model.quantize import calibration_batches, to_precision
from sceneclf.search.record import (
    StudyAttr,
    StudyRecord,
    TrialAttr,
    best_feasible,
    is_multi_objective,
    trial_value,
)
from sceneclf.search.space import TrialConfigs, parse_space, sample
from sceneclf.train import score, train_model

if TYPE_CHECKING:
    from sceneclf.tracking.models import LoadedModel

TRAINED_ON = ("train", "val")  # retrain-best fits both; evaluation counts their devices as heard
AVERAGE_EPOCHS = 2.0  # with no validation data to pick a state, the last state is a moving average's
LONGER = 3  # retrain-best's epoch limit in the trial's epochs: a seed's plateau can last that long
OWN_CHECKPOINT_METRIC = "trial_checkpoint_test_accuracy"


@dataclass
class BestTrial:
    trial: optuna.trial.FrozenTrial
    configs: TrialConfigs
    budget: Budget
    parent_run_id: str | None


def stored_data_config(study: optuna.Study) -> DataConfig:
    """The data settings the study was searched with."""
    return StudyRecord.require(study).data


def choose_trial(study: optuna.Study, number: int | None = None, max_kb: float | None = None) -> optuna.trial.FrozenTrial:
    """Trial `number`, or the most accurate complete trial within `max_kb` of parameter memory
    (at the study's precision; in a multi-objective study, of the Pareto front: the smaller on a
    tie), or the best feasible trial (`best_feasible`)."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and not t.user_attrs.get(TrialAttr.OVER_BUDGET)]
    if number is not None:
        chosen = [t for t in done if t.number == number]
        if not chosen:
            raise ConfigError(f"--trial {number}: not a complete trial within the budget of study "
                              f"{study.study_name!r} (those are: {', '.join(str(t.number) for t in done) or 'none'})")
        return chosen[0]
    if max_kb is not None:
        candidates = study.best_trials if is_multi_objective(study) else done
        fits = [t for t in candidates if t.user_attrs.get(TrialAttr.KB, math.inf) <= max_kb]
        if not fits:
            smallest = min((t.user_attrs.get(TrialAttr.KB, math.inf) for t in done), default=math.inf)
            raise ConfigError(f"--max-kb {max_kb:g}: no complete trial of study {study.study_name!r} fits "
                              f"(the smallest takes {smallest:,.1f} kB)")
        return max(fits, key=lambda t: (trial_value(t), -t.user_attrs[TrialAttr.KB]))
    best = best_feasible(study)
    if best is None:
        raise ConfigError(f"study {study.study_name!r} has no finished trial within the budget yet; "
                          "run `sceneclf search` first")
    return best


def best_trial_configs(study: optuna.Study, n_classes: int, seed: int = 0, number: int | None = None,
                       max_kb: float | None = None) -> BestTrial:
    """The chosen trial's configs (`choose_trial`), rebuilt from the space stored with the study."""
    best = choose_trial(study, number, max_kb)
    record = StudyRecord.require(study)
    space = parse_space(record.space_text, record.space_name)
    configs = sample(optuna.trial.FixedTrial(best.params), space, n_classes, seed=seed)
    return BestTrial(best, configs, record.budget, study.user_attrs.get(StudyAttr.PARENT_RUN))  # with the CLI overrides


def retrain(best: BestTrial, data: PreparedData, epochs: int | None, seed: int, device: str,
            echo: Echo) -> tuple[Checkpoint, list[dict[str, float]]]:
    """Train the best configs on train + val for at least the trial's best epoch count and until
    an epoch's mean training loss reaches the trial's at that epoch (`TrialAttr.BEST_TRAIN_LOSS`),
    within `LONGER` times the trial's epochs; or for `epochs` exactly. Keep the last state of the
    weights' moving average (over the trial's `ema_epochs`, else `AVERAGE_EPOCHS`), evaluate on test.

    The target is a loss as well as an epoch count because how long a configuration sits on a
    plateau before it learns the clips' patterns depends on its seed (after Goodfellow et al., Deep
    Learning, algorithm 7.3, which trains on all data until the early-stopping point's training
    loss is reached)."""
    cfgs = best.configs
    attrs = best.trial.user_attrs
    target = None if epochs else attrs.get(TrialAttr.BEST_TRAIN_LOSS)
    best_epoch = int(attrs.get(TrialAttr.BEST_EPOCH, cfgs.train.epochs))
    if epochs:
        n_epochs = epochs
    elif target is not None:
        n_epochs = LONGER * int(attrs.get(TrialAttr.EPOCHS_RUN, cfgs.train.epochs))
    else:  # a study searched before the target was stored: the trial's best epoch count
        n_epochs = best_epoch
    train_cfg = replace(cfgs.train, epochs=n_epochs, seed=seed, ema_epochs=cfgs.train.ema_epochs or AVERAGE_EPOCHS)
    model_cfg = cfgs.model
    combined = data.splits["train"] + data.splits["val"]  # TRAINED_ON
    if target is not None:
        echo(f"training for {best_epoch} epochs (the trial's best) or more, until train_loss <= {target:.4f} "
             f"(the trial's then), at most {n_epochs} epochs")

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        echo(f"epoch {epoch:3d}/{n_epochs}  train_loss {m['train_loss']:.4f}  lr {m['lr']:.2e}  {m['seconds']:.1f}s")

    model, result = train_model(cfgs.features, model_cfg, train_cfg, best.budget,
                                combined, data.splits["val"], data.frames, on_epoch=on_epoch,
                                device=device, keep_last=True, augment=cfgs.augment, until_train_loss=target,
                                min_epochs=best_epoch)
    final_loss = result.history[-1]["train_loss"]
    if target is not None and final_loss > target:
        echo(f"train_loss {final_loss:.4f} after {result.epochs_run} epochs is still above the trial's "
             f"{target:.4f}: this model may be worse than the trial's own")
    model.cpu()
    test_acc, test_loss, logits = score(model, data.splits["test"], data.frames)
    metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "epochs": result.epochs_run,
               "final_train_loss": final_loss, "search_val_accuracy": trial_value(best.trial)}
    if target is not None:
        metrics["target_train_loss"] = target
    if (devices := data.devices("test", logits, heard=TRAINED_ON)) is not None:
        metrics.update(devices.metrics("test_"))
    precision = best.budget.precision
    ckpt = Checkpoint(model, AudioConfig(), cfgs.features, model_cfg, data.classes,
                      train={**asdict(replace(train_cfg, epochs=result.epochs_run)), "augment": asdict(cfgs.augment),
                             "precision": precision, "trained_on": list(TRAINED_ON), "until_train_loss": target},
                      metrics=metrics)
    if precision != "fp32":
        deployed_acc, _, _ = score(deployed_model(ckpt, data), data.splits["test"], data.frames)
        metrics.update({f"test_accuracy_{precision}": deployed_acc, "precision_drop": test_acc - deployed_acc})
    return ckpt, result.history


def against_trial(own: LoadedModel | None, ckpt: Checkpoint, data: PreparedData, seed: int) -> list[str]:
    """Score the chosen trial's own checkpoint (trained on the training split alone; none: say
    nothing) on test, store it in `ckpt.metrics`, and say so when the retrained model ended below it."""
    if own is None:
        return []
    accuracy, _, _ = score(own.checkpoint.model, data.splits["test"], data.frames)
    ckpt.metrics[OWN_CHECKPOINT_METRIC] = accuracy
    lines = [f"the trial's own checkpoint (training split only): test_accuracy {accuracy:.3f}"]
    if accuracy > ckpt.metrics["test_accuracy"]:
        lines.append(f"the retrained model is below the trial's own checkpoint on test: trained on train + "
                     f"validation with --seed {seed}, it ended elsewhere than the trial; try another --seed, "
                     f"or use the trial's checkpoint, {own.source}")
    return lines


def deployed_model(ckpt: Checkpoint, data: PreparedData, precision: str | None = None) -> nn.Module:
    """The checkpoint's model at `precision` (default: the one it ships in, stored with it),
    int8 calibrated on the training split's clips: the same model wherever it is rebuilt."""
    precision = precision or ckpt.train.get("precision", "fp32")
    return to_precision(ckpt.model, precision, calibration_batches(data.splits["train"], data.frames))
