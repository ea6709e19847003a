"""The Optuna side of the search: storage, sampler, pruner, the objective, and resume.

Every trial: sample configs from the space, count parameters and MACs (no model built), record
the budget as Optuna constraints (`trial.set_constraint`, which TPE and GP learn from), then train
with the shared `fit`, reporting validation accuracy each epoch for pruning. Tracking (MLflow)
hangs on a `Tracker` passed in; checkpoints are written atomically before they are logged.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import PreparedData
from sceneclf.errors import ConfigError, first_line
from sceneclf.model.budget import Budget, count_macs, count_params, summarize
from sceneclf.model.checkpoint import Checkpoint, save_checkpoint
from sceneclf.space import SearchSpace, TrialConfigs, sample
from sceneclf.train import NonFiniteLossError, train_model

DEFAULT_STORAGE = "sqlite:///studies/sceneclf.db"
HEARTBEAT_SECONDS = int(os.environ.get("SCENECLF_HEARTBEAT", "10"))
SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "percentile", "asha", "hyperband", "none")
# The default pruner, chosen by bench/run.py --only pruning (bench/RESULTS.md): with the early
# stopping every trial has anyway, MedianPruner(n_startup_trials=5, n_warmup_steps=3) saved few
# epochs; from the fifth trial and the second epoch on, it trained 0.42 of the epochs over eight
# seeds, for 0.6 points of best validation accuracy and 1.8 of test accuracy on average (starting
# after 3 trials pruned harder but lost the best trial in one seed of two).
DEFAULT_PRUNER = "median"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite:///, postgresql://, ...) with heartbeats and retry of stale trials, or a
    path to a journal file (`*.log`, `*.journal`)."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))  # replays the file: garbage fails here
        except Exception as exc:
            reason = first_line(exc)
            raise ConfigError(f"--storage {url}: cannot open the journal file ({reason})") from None
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # Concurrent workers wait for the write lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 120}}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=3 * HEARTBEAT_SECONDS,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as exc:
        reason = first_line(exc)
        raise ConfigError(f"--storage {url}: cannot open ({reason})") from None


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"--sampler {name}: use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Every pruner compares a trial's validation accuracy at an epoch with what earlier trials
    reached at the same epoch."""
    if name == "median":  # the best so far below the median of 3 or more earlier trials at this epoch
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1, n_min_trials=3)
    if name == "percentile":  # the same, against the top quarter
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=1, n_min_trials=3)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name}: use one of {', '.join(PRUNERS)}")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def best_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed trial within budget, or None."""
    try:
        return study.best_trial
    except ValueError:
        return None


@dataclass
class Objective:
    """Holds the data, loaded once per search; called once per trial."""

    data: PreparedData
    space: SearchSpace
    budget: Budget
    study_name: str
    tracker: Any  # sceneclf.tracking.Tracker or None
    parent_run_id: str | None
    checkpoint_dir: Path
    seed: int = 0
    device: str = "cpu"
    epochs: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
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
                trial.set_user_attr("reason", reason[:500])
                self._end_run(trial.user_attrs.get("mlflow_run_id"), "FAIL", reason)
            except Exception:
                pass  # the store itself is failing: Optuna still marks the trial failed
            raise

    def _run(self, trial: optuna.Trial) -> float:
        cfgs = sample(trial, self.space, len(self.data.classes), seed=self.seed + trial.number)
        if self.epochs is not None:
            cfgs = TrialConfigs(cfgs.features, cfgs.model,
                                type(cfgs.train)(**{**asdict(cfgs.train), "epochs": self.epochs}))
        input_shape = (cfgs.features.n_mels, self.data.frames)
        n_params, macs = count_params(cfgs.model), count_macs(cfgs.model, input_shape)
        violations = self.budget.violations(n_params, macs)
        for key, value in zip(("params", "macs"), violations):
            trial.set_constraint(key, value)
        trial.set_user_attr("n_params", n_params)
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("widths", list(cfgs.model.widths))
        trial.set_user_attr("worker", worker_id())
        run_id = self._start_run(trial, cfgs, n_params, macs)
        if max(violations) > 0:
            reason = (f"over budget: {n_params:,} parameters (max {self.budget.max_params:,})"
                      + (f", {macs:,} MACs (max {self.budget.max_macs:,})" if self.budget.max_macs else ""))
            trial.set_user_attr("over_budget", True)
            trial.set_user_attr("reason", reason)
            self._end_run(run_id, "OVER_BUDGET", reason)
            raise optuna.TrialPruned(reason)
        if self.tracker:
            self.tracker.log_text(run_id, summarize(cfgs.model, input_shape).format(), "model_summary.txt")

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if self.tracker:
                self.tracker.log_metrics(run_id, metrics, step=epoch)
            trial.report(metrics["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            model, result = train_model(cfgs.features, cfgs.model, cfgs.train, self.budget,
                                        self.data.splits["train"], self.data.splits["val"],
                                        self.data.frames, on_epoch=on_epoch, device=self.device)
        except optuna.TrialPruned as exc:
            self._end_run(run_id, "PRUNED", str(exc))
            raise
        except NonFiniteLossError as exc:
            trial.set_user_attr("reason", str(exc))
            self._end_run(run_id, "PRUNED", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        value = result.best_val_accuracy
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("val_loss", result.best_val_loss)
        self._finish(trial, run_id, cfgs, model.cpu(), result)
        return value

    def _start_run(self, trial: optuna.Trial, cfgs: TrialConfigs, n_params: int, macs: int) -> str | None:
        if not self.tracker:
            return None
        run_id = self.tracker.start_trial(self.parent_run_id, self.study_name, trial.number,
                                          cfgs.flat(), {"n_params": n_params, "macs": macs})
        trial.set_user_attr("mlflow_run_id", run_id)
        return run_id

    def _end_run(self, run_id: str | None, state: str, reason: str | None = None) -> None:
        if self.tracker and run_id:
            self.tracker.end_trial(run_id, state, reason)

    def _finish(self, trial: optuna.Trial, run_id: str | None, cfgs: TrialConfigs, model, result) -> None:
        """Checkpoint the trial (kept aside until Optuna has recorded it: see `promote`), log it."""
        metrics = {"val_accuracy": result.best_val_accuracy, "val_loss": result.best_val_loss,
                   "best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
        ckpt = Checkpoint(model, AudioConfig(), cfgs.features, cfgs.model, self.data.classes,
                          train=asdict(cfgs.train), metrics=metrics)
        path = save_checkpoint(pending_path(self.checkpoint_dir, trial.number), ckpt)
        trial.set_user_attr("config", cfgs.flat())
        if self.tracker and run_id:
            self.tracker.log_metrics(run_id, {f"final_{k}": v for k, v in metrics.items()},
                                     step=result.epochs_run)
            self.tracker.log_checkpoint(run_id, path)
            self.tracker.end_trial(run_id, "COMPLETE")

    def promote(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback, once Optuna has recorded the trial: its checkpoint becomes the
        study's best if the trial is the best, else it is dropped."""
        promote_pending(study, self.checkpoint_dir, self.tracker, self.parent_run_id, [trial.number])

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / "best.pt"


def pending_path(checkpoint_dir: Path, number: int) -> Path:
    return checkpoint_dir / f"trial-{number:04d}.pt"


def promote_pending(study: optuna.Study, checkpoint_dir: Path, tracker: Any, parent_run_id: str | None,
                    numbers: list[int] | None = None) -> None:
    """Settle trial checkpoints left aside (`numbers`, or all found): the best trial's becomes
    best.pt (and the MLflow study run's best, logged first), a finished trial's other ones are
    deleted, running trials' are left alone. So best.pt only ever holds the best recorded trial,
    and a kill at any moment leaves what a restart settles (it calls this with no numbers)."""
    if numbers is None:
        numbers = sorted(int(p.stem[6:]) for p in checkpoint_dir.glob("trial-*.pt") if p.stem[6:].isdigit())
    best, trials = best_feasible(study), study.get_trials(deepcopy=False)
    for number in numbers:
        path = pending_path(checkpoint_dir, number)
        if not path.exists():
            continue
        t = trials[number] if number < len(trials) else None
        if t is None or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue  # another worker's trial, not recorded yet
        if best is None or best.number != number:
            path.unlink(missing_ok=True)
            continue
        run_id = t.user_attrs.get("mlflow_run_id")
        if tracker and parent_run_id and run_id:
            try:
                tracker.set_best(parent_run_id, number, run_id, path, t.user_attrs.get("config", t.params),
                                 {"val_accuracy": t.value})
            except Exception as exc:  # the store is failing: best.pt on disk is still right
                logging.getLogger("sceneclf").warning("trial %d: best checkpoint not logged to MLflow (%s)",
                                                      number, first_line(exc))
        try:
            os.replace(path, checkpoint_dir / "best.pt")
        except FileNotFoundError:
            pass  # promoted by another worker meanwhile


def recover_dead_trials(study: optuna.Study, tracker: Any) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer exists: fail them now
    (rather than after the heartbeat grace period), queue their parameters again, close their
    MLflow runs. Returns the numbers of the trials recovered."""
    host = socket.gethostname()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:  # the reason first: a finished trial takes no more attributes
            study._storage.set_trial_user_attr(t._trial_id, "reason", "worker died (recovered on restart)")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # failed meanwhile by another process's heartbeat check, which retries it
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        if tracker and t.user_attrs.get("mlflow_run_id"):
            tracker.close_if_running(t.user_attrs["mlflow_run_id"], "FAIL", "worker died")
        recovered.append(t.number)
    close_failed_runs(study, tracker)
    return recovered


def close_failed_runs(study: optuna.Study, tracker: Any) -> None:
    """Close the MLflow runs of failed trials still marked running: trials failed by the
    heartbeat check (their machine or process died) rather than by their own process."""
    if not tracker:
        return
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("mlflow_run_id"):
            tracker.close_if_running(t.user_attrs["mlflow_run_id"], "FAIL", "worker died")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trial_value(t: optuna.trial.FrozenTrial) -> float:
    """The trial's value, or its last reported one (pruned), or NaN."""
    if t.value is not None:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return math.nan
