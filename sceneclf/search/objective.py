"""The objective: one call per trial.

Every trial: sample configs from the space, count parameters and MACs (no model built), record
the budget as Optuna constraints (`trial.set_constraint`, which TPE and GP learn from), then train
with the shared `fit`, reporting validation accuracy each epoch for pruning. Tracking hangs on
the `Tracker` passed in; checkpoints are written atomically before they are logged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import PreparedData
from sceneclf.errors import first_line
from sceneclf.model.budget import Budget, Cost, count_params, summarize
from sceneclf.model.checkpoint import Checkpoint, save_checkpoint
from sceneclf.model.quantize import calibration_batches, to_precision
from sceneclf.search.record import TrialAttr
from sceneclf.search.recovery import pending_path, promote_pending, worker_id
from sceneclf.search.resume import discard_state, open_state
from sceneclf.search.space import SearchSpace, TrialConfigs, sample
from sceneclf.tracking.tracker import Tracker
from sceneclf.train import NonFiniteLossError, score, train_model, train_precision


def set_constraints(trial: optuna.Trial, violations: dict[str, float]) -> None:
    """Optuna constraints (<= 0: feasible); a retry already holds its failed trial's, for the
    same parameters, and Optuna warns on setting them again."""
    stored = trial.storage.get_trial_system_attrs(trial._trial_id)
    for key, value in violations.items():
        if f"constraints:{key}" not in stored:
            trial.set_constraint(key, value)


@dataclass
class Objective:
    """Holds the data, loaded once per search; called once per trial."""

    data: PreparedData
    space: SearchSpace
    budget: Budget
    study_name: str
    tracker: Tracker
    parent_run_id: str | None
    checkpoint_dir: Path
    seed: int = 0
    device: str = "cpu"
    epochs: int | None = None
    objectives: tuple[str, ...] = ("accuracy",)  # more than one: (accuracy, kb or macs), unpruned

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:  # a crash, out of memory, disk full, Ctrl-C: say why, close the run
            if isinstance(exc, KeyboardInterrupt):
                reason = "interrupted"
            elif str(exc).strip():
                reason = f"{type(exc).__name__}: {first_line(exc, 500)}"
            else:
                reason = type(exc).__name__
            try:
                trial.set_user_attr(TrialAttr.REASON, reason[:500])
                self.tracker.end_trial(trial.user_attrs.get(TrialAttr.RUN_ID), "FAIL", reason)
            except Exception:
                pass  # the store itself is failing: Optuna still marks the trial failed
            raise

    def _run(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(TrialAttr.WORKER, worker_id())  # first: a trial no process claims is a dead one's
        cfgs = sample(trial, self.space, len(self.data.classes), seed=self.seed + trial.number)
        if self.epochs is not None:
            cfgs = replace(cfgs, train=replace(cfgs.train, epochs=self.epochs))
        summary = summarize(cfgs.model, (cfgs.features.n_mels, self.data.frames))
        cost = Cost(count_params(cfgs.model), summary.macs, cfgs.features.seconds(self.data.frames),
                    self.budget.precision)
        violations = self.budget.violations(cost)
        set_constraints(trial, violations)
        sizes = {TrialAttr.N_PARAMS: cost.n_params, TrialAttr.MACS: cost.macs, TrialAttr.KB: cost.kb,
                 TrialAttr.MACS_PER_SECOND: cost.macs_per_second}
        for key, value in sizes.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr(TrialAttr.WIDTHS, list(cfgs.model.widths))
        run_id = self._start_run(trial, cfgs, sizes)
        if max(violations.values()) > 0:
            reason = "over budget: " + ", ".join(
                f"{_amount(name, value)} (max {_amount(name, limit)})"
                for name, (value, limit) in self.budget.limits(cost).items())
            trial.set_user_attr(TrialAttr.OVER_BUDGET, True)
            trial.set_user_attr(TrialAttr.REASON, reason)
            self.tracker.end_trial(run_id, "OVER_BUDGET", reason)
            raise optuna.TrialPruned(reason)
        self.tracker.log_text(run_id, summary.format(), "model_summary.txt")

        inherited = set(trial.storage.get_trial(trial._trial_id).intermediate_values)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            self.tracker.log_metrics(run_id, metrics, step=epoch)
            if len(self.objectives) > 1:
                return  # Optuna can neither take reports nor prune in a multi-objective study
            if epoch not in inherited:  # a retry redoes at most the epoch its dead trial reported unsaved
                trial.report(metrics["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        store = open_state(trial, self.checkpoint_dir, cfgs.flat(), self.data.fingerprint, self.tracker, run_id)
        try:
            model, result = train_model(cfgs.features, cfgs.model, cfgs.train, self.budget,
                                        self.data.splits["train"], self.data.splits["val"],
                                        self.data.frames, on_epoch=on_epoch, device=self.device,
                                        augment=cfgs.augment, store=store)
        except optuna.TrialPruned as exc:
            self.tracker.end_trial(run_id, "PRUNED", str(exc))
            raise
        except NonFiniteLossError as exc:
            trial.set_user_attr(TrialAttr.REASON, str(exc))
            self.tracker.end_trial(run_id, "PRUNED", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        value = self._deploy_accuracy(trial, run_id, model.cpu(), result)
        trial.set_user_attr(TrialAttr.BEST_EPOCH, result.best_epoch)
        trial.set_user_attr(TrialAttr.BEST_TRAIN_LOSS, result.history[result.best_epoch - 1]["train_loss"])
        trial.set_user_attr(TrialAttr.EPOCHS_RUN, result.epochs_run)
        trial.set_user_attr(TrialAttr.VAL_LOSS, result.best_val_loss)
        self._finish(trial, run_id, cfgs, model.cpu(), result)
        if len(self.objectives) > 1:
            return tuple(value if name == "accuracy" else {"kb": cost.kb, "macs": cost.macs_per_second}[name]
                         for name in self.objectives)
        return value

    def _deploy_accuracy(self, trial: optuna.Trial, run_id: str | None, model, result) -> float:
        """The trial's value: whole-clip validation accuracy of its best state converted to the
        budget's precision (the float accuracy at fp32); the float accuracy and the drop beside it."""
        precision = self.budget.precision
        if precision == "fp32":
            return result.best_val_accuracy
        train, val, frames = self.data.splits["train"], self.data.splits["val"], self.data.frames
        accuracy, _, _ = score(to_precision(model, precision, calibration_batches(train, frames)), val, frames)
        drop = result.best_val_accuracy - accuracy
        trial.set_user_attr(TrialAttr.FLOAT_ACCURACY, result.best_val_accuracy)
        trial.set_user_attr(TrialAttr.PRECISION_DROP, drop)
        self.tracker.log_metrics(run_id, {f"val_accuracy_{precision}": accuracy, TrialAttr.PRECISION_DROP: drop,
                                          TrialAttr.FLOAT_ACCURACY: result.best_val_accuracy},
                                 step=result.epochs_run)
        return accuracy

    def _start_run(self, trial: optuna.Trial, cfgs: TrialConfigs, sizes: dict[str, float]) -> str | None:
        run_id = self.tracker.start_trial(self.parent_run_id, self.study_name, trial.number,
                                          {**cfgs.flat(), "precision": self.budget.precision,
                                           "train_precision": train_precision(self.device)}, sizes)
        if run_id is not None:
            trial.set_user_attr(TrialAttr.RUN_ID, run_id)
        return run_id

    def _finish(self, trial: optuna.Trial, run_id: str | None, cfgs: TrialConfigs, model, result) -> None:
        """Checkpoint the trial (kept aside until Optuna has recorded it: see `promote`), log it."""
        metrics = {"val_accuracy": result.best_val_accuracy, "val_loss": result.best_val_loss,
                   "best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
        _, _, logits = score(model, self.data.splits["val"], self.data.frames)
        if (devices := self.data.devices("val", logits)) is not None:  # what the choice saw of unheard devices
            metrics.update(devices.metrics("val_"))
        ckpt = Checkpoint(model, AudioConfig(), cfgs.features, cfgs.model, self.data.classes,
                          train={**asdict(cfgs.train), "augment": asdict(cfgs.augment)}, metrics=metrics)
        path = save_checkpoint(pending_path(self.checkpoint_dir, trial.number), ckpt)
        trial.set_user_attr(TrialAttr.CONFIG, cfgs.flat())
        self.tracker.log_metrics(run_id, {f"final_{k}": v for k, v in metrics.items()}, step=result.epochs_run)
        self.tracker.log_checkpoint(run_id, path)
        self.tracker.end_trial(run_id, "COMPLETE")

    def promote(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback, once Optuna has recorded the trial: its checkpoint becomes the
        study's best if the trial is the best, else it is dropped; its training state goes."""
        promote_pending(study, self.checkpoint_dir, self.tracker, self.parent_run_id, [trial.number])
        discard_state(study, trial.number, self.checkpoint_dir)

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / "best.pt"


def _amount(name: str, value: float) -> str:
    """A budget quantity with its unit, as the over-budget reason says it."""
    return {"params": f"{value:,.0f} parameters", "kb": f"{value:,.1f} kB", "macs": f"{value:,.0f} MACs",
            "macs_per_second": f"{value:,.0f} MACs/s"}[name]
