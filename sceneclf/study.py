"""`sceneclf search`: open (or resume) a study, run trials, track them, report.

The study stores its own settings (data, space, budget, epochs, data fingerprint) as user
attributes, so a resumed search or a worker on another machine runs the same search, and a
different space or different data under the same study name is refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sceneclf.errors import ConfigError
from sceneclf.model import Budget
from sceneclf.prepare import DataConfig, PreparedData
from sceneclf.report import figure_html, study_figures, trial_state
from sceneclf.search import (FINISHED, Objective, best_feasible, count_finished, make_pruner,
                             make_sampler, open_storage, recover_dead_trials, trial_value)
from sceneclf.space import SearchSpace

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SearchSettings:
    study: str = "sceneclf"
    storage: str = "sqlite:///studies/sceneclf.db"
    tracking_uri: str | None = None  # None: no MLflow
    sampler: str = "tpe"
    pruner: str = "median"
    epochs: int | None = None  # None: the space's [train] epochs
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: Path = Path("studies/checkpoints")
    data: DataConfig = field(default_factory=DataConfig)


def study_record(settings: SearchSettings, space: SearchSpace, budget: Budget, fingerprint: str) -> dict:
    """What a study stores about itself (JSON-able)."""
    return {"space_name": space.name, "space_text": space.text, "budget": asdict(budget),
            "epochs": settings.epochs or space.epochs, "data": asdict(settings.data),
            "fingerprint": fingerprint, "sampler": settings.sampler, "pruner": settings.pruner}


def open_study(settings: SearchSettings, sampler_seed: int, epochs: int) -> optuna.Study:
    storage = open_storage(settings.storage)
    try:
        return optuna.create_study(
            study_name=settings.study, storage=storage, direction="maximize", load_if_exists=True,
            sampler=make_sampler(settings.sampler, sampler_seed), pruner=make_pruner(settings.pruner, epochs))
    except ConfigError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {settings.storage}: cannot open study {settings.study!r} ({reason})") from None


def check_record(study: optuna.Study, record: dict) -> None:
    """Refuse to mix searches: same study name, other space or other data."""
    old = study.user_attrs.get("sceneclf")
    if old is None:
        study.set_user_attr("sceneclf", record)
        return
    if old["space_text"] != record["space_text"] or old["budget"] != record["budget"]:
        raise ConfigError(f"--study {study.study_name}: exists with a different search space or budget "
                          f"({old['space_name']}); use another --study name or the same --space")
    if old["fingerprint"] != record["fingerprint"]:
        raise ConfigError(f"--study {study.study_name}: exists with different data (fingerprint "
                          f"{old['fingerprint']} here {record['fingerprint']}); use the same --data")


class Stop(optuna.study.MaxTrialsCallback):
    """Stop when `target` trials are finished or pruned (failed ones are retried, not counted),
    or when the last `streak` trials all failed (something is wrong beyond one trial)."""

    def __init__(self, target: int, streak: int = 5):
        super().__init__(target, states=FINISHED)
        self.streak = streak
        self.reason: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        recent = study.get_trials(deepcopy=False)[-self.streak:]
        if len(recent) == self.streak and all(t.state == TrialState.FAIL for t in recent):
            reasons = {t.user_attrs.get("reason", "unknown") for t in recent}
            self.reason = f"the last {self.streak} trials failed ({'; '.join(sorted(reasons))[:300]})"
            study.stop()
            return
        super().__call__(study, trial)


@dataclass
class SearchOutcome:
    study: optuna.Study
    best: optuna.trial.FrozenTrial | None
    best_checkpoint: Path | None
    parent_run_id: str | None
    stopped_because: str | None = None
    figures: dict = field(default_factory=dict)


def run_search(settings: SearchSettings, space: SearchSpace, data: PreparedData, n_trials: int,
               timeout: float | None, echo: Echo, progress: bool = True) -> SearchOutcome:
    budget = space.budget
    epochs = settings.epochs or space.epochs
    record = study_record(settings, space, budget, data.fingerprint)
    probe = open_study(settings, settings.seed, epochs)
    # A resumed study must not replay the sampler's first draws: seed by the study's length.
    study = open_study(settings, settings.seed + len(probe.trials), epochs) if probe.trials else probe
    check_record(study, record)
    tracker = _tracker(settings)
    parent = None
    if tracker:
        parent = tracker.parent_run(settings.study, {**_flat(record), "storage": settings.storage},
                                    study.user_attrs.get("mlflow_parent_run_id"))
        study.set_user_attr("mlflow_parent_run_id", parent)
    recovered = recover_dead_trials(study, tracker)
    if recovered:
        echo(f"recovered trial(s) {recovered} left running by a dead process: failed, queued again")
    objective = Objective(data, space, budget, settings.study, tracker, parent,
                          settings.checkpoint_dir / settings.study, seed=settings.seed,
                          device=settings.device, epochs=epochs)
    stop = Stop(count_finished(study) + n_trials)
    callbacks = [stop]
    bar = _progress_bar(n_trials) if progress else None
    if bar is not None:
        callbacks.append(bar.callback)
    status = "FINISHED"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=None, timeout=timeout, callbacks=callbacks,
                       catch=(Exception,), gc_after_trial=False)
    except KeyboardInterrupt:
        status = "KILLED"
        echo("\ninterrupted: the running trial is marked failed and its run closed; "
             "run the same command again to go on")
    finally:
        if bar is not None:
            bar.close()
        figures = study_figures(study, budget.max_params)
        if tracker and parent:
            tracker.log_figures(parent, {k: figure_html(f, offline=True) for k, f in figures.items()})
            tracker.end_parent(parent, status)
    best = best_feasible(study)
    ckpt = objective.best_path if best is not None and objective.best_path.exists() else None
    return SearchOutcome(study, best, ckpt, parent, stop.reason, figures)


def _tracker(settings: SearchSettings):
    if settings.tracking_uri is None:
        return None
    from sceneclf.tracking import Tracker

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return Tracker(settings.tracking_uri, settings.study)


def _flat(record: dict) -> dict:
    out = {"space": record["space_name"], "epochs": record["epochs"], "fingerprint": record["fingerprint"],
           "sampler": record["sampler"], "pruner": record["pruner"]}
    out.update({f"budget.{k}": v for k, v in record["budget"].items()})
    out.update({f"data.{k}": v for k, v in record["data"].items()})
    return out


class _progress_bar:
    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True)

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state in FINISHED:
            self.bar.update(1)
        best = best_feasible(study)
        if best is not None:
            self.bar.set_postfix_str(f"best {best.value:.3f} (trial {best.number})")

    def close(self) -> None:
        self.bar.close()


def top_trials_table(study: optuna.Study, n: int = 10) -> str:
    """Top trials by validation accuracy (last reported value for pruned ones)."""
    trials = [t for t in study.trials if t.state in FINISHED]
    trials.sort(key=lambda t: (trial_state(t) == "COMPLETE", _or(trial_value(t), -1.0)), reverse=True)
    head = f"{'trial':>5} {'val_acc':>7} {'params':>8} {'MACs':>11} {'lr':>9} {'widths':<16} {'noise':>5}  state"
    lines = [head, "-" * len(head)]
    for t in trials[:n]:
        v = trial_value(t)
        lines.append(
            f"{t.number:>5} {v:>7.3f} {t.user_attrs.get('n_params', 0):>8,} {t.user_attrs.get('macs', 0):>11,} "
            f"{t.params.get('lr', float('nan')):>9.2e} {','.join(map(str, t.user_attrs.get('widths', []))):<16} "
            f"{t.params.get('noise', float('nan')):>5.2f}  {trial_state(t).lower()}")
    return "\n".join(lines)


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000   (or: sceneclf ui)"

