"""`sceneclf search`: open (or resume) a study, run trials, track them, report.

The study stores its own settings (data, space, budget, epochs, data fingerprint) as user
attributes, so a resumed search or a worker on another machine runs the same search, and a
different space or different data under the same study name is refused.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import TrialState

from sceneclf.atomic import sweep_stale
from sceneclf.data.prepare import DataConfig, PreparedData
from sceneclf.echo import Echo
from sceneclf.errors import ConfigError, first_line
from sceneclf.report.figures import figure_html, study_figures
from sceneclf.search import DEFAULT_PRUNER, DEFAULT_STORAGE
from sceneclf.search.front import front_rows
from sceneclf.search.objective import Objective
from sceneclf.search.record import (
    OBJECTIVES,
    StudyAttr,
    StudyRecord,
    TrialAttr,
    best_feasible,
    count_finished,
    is_multi_objective,
    top_trials,
    trial_state,
    trial_value,
)
from sceneclf.search.recovery import close_failed_runs, promote_pending, recover_dead_trials
from sceneclf.search.resume import sweep_states
from sceneclf.search.space import SearchSpace, parse_space
from sceneclf.search.storage import make_pruner, make_sampler, open_storage
from sceneclf.search.turns import Stop, SurplusTrial, TrialTakenOver, committed, guarded
from sceneclf.tracking.tracker import Tracker, open_tracker

WAIT_SECONDS = 2.0  # how often a worker whose target is committed checks on the others' trials


@dataclass(frozen=True)
class SearchSettings:
    study: str = "sceneclf"
    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = None  # None: no MLflow
    sampler: str = "tpe"
    pruner: str = DEFAULT_PRUNER
    epochs: int | None = None  # None: the space's [train] epochs
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: Path = Path("studies/checkpoints")
    data: DataConfig = field(default_factory=DataConfig)
    objectives: tuple[str, ...] = ("accuracy",)  # `record.OBJECTIVES` keys, accuracy first


def study_record(settings: SearchSettings, space: SearchSpace, fingerprint: str) -> StudyRecord:
    return StudyRecord(space_name=space.name, space_text=space.text, budget=space.budget,
                       epochs=settings.epochs or space.epochs, data=settings.data, fingerprint=fingerprint,
                       sampler=settings.sampler, pruner=settings.pruner, objectives=settings.objectives)


def open_study(settings: SearchSettings, sampler_seed: int, epochs: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(settings.storage)
    try:
        names, directions = zip(*(OBJECTIVES[o] for o in settings.objectives))
        study = optuna.create_study(
            study_name=settings.study, storage=storage, directions=list(directions), load_if_exists=True,
            sampler=make_sampler(settings.sampler, sampler_seed), pruner=make_pruner(settings.pruner, epochs))
        if study.metric_names is None:  # optuna-dashboard and optuna.visualization label the axis with it
            study.set_metric_names(list(names))
        return study
    except ConfigError:
        raise
    except Exception as exc:
        reason = first_line(exc)
        raise ConfigError(f"--storage {settings.storage}: cannot open study {settings.study!r} ({reason})") from None


def check_record(study: optuna.Study, record: StudyRecord) -> None:
    """Refuse to mix searches: same study name, other space or other data."""
    old = StudyRecord.load(study)
    if old is None:
        study.set_user_attr(StudyAttr.RECORD, record.to_attr())
        return
    if old.objectives != record.objectives:
        raise ConfigError(f"--study {study.study_name}: exists with objectives {','.join(old.objectives)}; "
                          f"use another --study name or --objectives {','.join(old.objectives)}")
    if old.space_text != record.space_text or old.budget != record.budget:
        raise ConfigError(f"--study {study.study_name}: exists with a different search space or budget "
                          f"({old.space_name}); use another --study name or the same --space")
    if old.fingerprint != record.fingerprint:
        raise ConfigError(f"--study {study.study_name}: exists with different data (fingerprint "
                          f"{old.fingerprint} here {record.fingerprint}); use the same --data")


class Worker(Protocol):
    """A `--jobs` worker process: a `subprocess.Popen`, or one forked (`sceneclf.cli.zygote`)."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


@dataclass
class SearchOutcome:
    study: optuna.Study
    best: optuna.trial.FrozenTrial | None
    best_checkpoint: Path | None
    parent_run_id: str | None
    stopped_because: str | None = None
    figures: dict = field(default_factory=dict)
    experiment_id: str | None = None


def run_search(settings: SearchSettings, space: SearchSpace, data: PreparedData, n_trials: int,
               timeout: float | None, echo: Echo, progress: bool = True, jobs: int = 1,
               start_worker: Callable[[int], Worker] | None = None,
               reference: dict[str, float] | None = None) -> SearchOutcome:
    """Open or resume the study, then run trials until `n_trials` more have finished or been
    pruned: in this process, plus `jobs - 1` worker processes (`start_worker(index)` starts one
    that joins the study) sharing the storage and the trial count. `reference` (the bag-of-frames model's
    accuracies on the same splits) is stored with the study and logged on its parent run."""
    record = study_record(settings, space, data.fingerprint)
    probe = open_study(settings, settings.seed, record.epochs)
    # A resumed study must not replay the sampler's first draws: seed by the study's length.
    study = open_study(settings, settings.seed + len(probe.trials), record.epochs) if probe.trials else probe
    check_record(study, record)
    target = count_finished(study) + n_trials
    study.set_user_attr(StudyAttr.TARGET_TRIALS, target)  # workers that join stop there too
    tracker = open_tracker(settings.tracking_uri, settings.study)
    parent = tracker.parent_run(settings.study, {**record.flat(), "storage": settings.storage},
                                study.user_attrs.get(StudyAttr.PARENT_RUN))
    if parent is not None:
        study.set_user_attr(StudyAttr.PARENT_RUN, parent)
    if reference is not None:
        study.set_user_attr(StudyAttr.REFERENCE, reference)
        tracker.log_metrics(parent, reference)
    recovered = recover_dead_trials(study, tracker)
    if recovered:
        echo(f"recovered trial(s) {recovered} left running by a dead process: failed, queued again")
    workers = [start_worker(i) for i in range(1, jobs)] if start_worker else []
    status = "FINISHED"
    try:
        outcome = work(study, settings, space, data, tracker, parent, target, timeout, echo, progress)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _reap(workers, interrupt=status == "KILLED")
        close_failed_runs(study, tracker)  # trials the heartbeat check failed during this search
        figures = study_figures(study, space.budget.max_params)
        if parent is not None:
            tracker.log_figures(parent, {k: figure_html(f, offline=True) for k, f in figures.items()})
            if is_multi_objective(study):
                tracker.log_table(parent, front_rows(study), "pareto_front.json")
            tracker.end_parent(parent, status)
    outcome.figures = figures
    outcome.experiment_id = tracker.experiment_id
    return outcome


def work(study: optuna.Study, settings: SearchSettings, space: SearchSpace, data: PreparedData,
         tracker: Tracker, parent: str | None, target: int, timeout: float | None, echo: Echo,
         progress: bool) -> SearchOutcome:
    """Run trials in this process until the study has `target` finished or pruned trials."""
    objective = Objective(data, space, space.budget, settings.study, tracker, parent,
                          settings.checkpoint_dir / settings.study, seed=settings.seed,
                          device=settings.device, epochs=StudyRecord.require(study).epochs,
                          objectives=StudyRecord.require(study).objectives)
    # Trial checkpoints a killed process left aside: the best one becomes best.pt, others go.
    promote_pending(study, objective.checkpoint_dir, tracker, parent)
    sweep_stale(objective.checkpoint_dir)
    sweep_states(study, objective.checkpoint_dir)  # training states no retry will resume
    stop = Stop(target)
    callbacks = [objective.promote, stop]
    bar = _progress_bar(study, target) if progress else None
    if bar is not None:
        callbacks.append(bar.callback)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while count_finished(study) < target and not stop.reason:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            if committed(study) < target or study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                try:
                    study.optimize(guarded(objective, study, target), n_trials=None, timeout=left,
                                   callbacks=callbacks, catch=(Exception,), gc_after_trial=False)
                except SurplusTrial:
                    continue  # the others' trials make the target: the loop waits for them
                except TrialTakenOver as taken:
                    echo(f"trial {taken.number} was failed by another process while this one ran it "
                         "(its heartbeats came late); its retry is queued")
                    _settle_taken(study, taken.number, objective.checkpoint_dir, tracker, parent)
            else:  # other workers' trials may yet fail: wait and see whether the target is met
                time.sleep(WAIT_SECONDS)
                recover_dead_trials(study, tracker)  # a dead local worker's trial goes back to the queue
                optuna.storages.fail_stale_trials(study)  # and a dead machine's, by its heartbeat
    except KeyboardInterrupt:
        echo("\ninterrupted: the running trial is marked failed and its run closed; "
             "run the same command again to go on")
        raise
    finally:
        if bar is not None:
            bar.close()
    best = best_feasible(study)
    ckpt = objective.best_path if best is not None and objective.best_path.exists() else None
    return SearchOutcome(study, best, ckpt, parent, stop.reason)


def _settle_taken(study: optuna.Study, number: int, checkpoint_dir: Path, tracker: Tracker,
                  parent: str | None) -> None:
    """A trial taken over: its checkpoint left aside goes, its MLflow run is closed as failed."""
    promote_pending(study, checkpoint_dir, tracker, parent, [number])
    if run_id := study.get_trials(deepcopy=False)[number].user_attrs.get(TrialAttr.RUN_ID):
        try:
            tracker.end_trial(run_id, "FAIL", "failed by another process's heartbeat check")
        except Exception as exc:  # the process that failed it closes it too, maybe at this moment
            logging.getLogger("sceneclf").warning("trial %d: run not closed (%s)", number, first_line(exc))


def join_study(settings: SearchSettings, prepare_data: Callable[[DataConfig], PreparedData],
               n_trials: int | None, timeout: float | None, echo: Echo, progress: bool = False,
               data: DataConfig | None = None) -> SearchOutcome:
    """A worker: join an existing study from its stored settings (space, budget, epochs,
    sampler, pruner, data), refuse when the local data differ, and run trials until the
    study's target (or `n_trials` more)."""
    storage = open_storage(settings.storage)
    try:
        record = StudyRecord.load(optuna.load_study(study_name=settings.study, storage=storage))
    except KeyError:
        record = None
    if record is None:
        raise ConfigError(f"--study {settings.study}: no sceneclf study of that name in {settings.storage}; "
                          "start it with `sceneclf search` first")
    space = parse_space(record.space_text, record.space_name)
    settings = replace(settings, sampler=record.sampler, pruner=record.pruner, epochs=record.epochs,
                       objectives=record.objectives)
    prepared = prepare_data(data or record.data)
    if prepared.fingerprint != record.fingerprint:
        raise ConfigError(f"--study {settings.study}: this machine's data differ from the study's "
                          f"(fingerprint {prepared.fingerprint}, study {record.fingerprint}); "
                          "point --data at the same data set")
    probe = open_study(settings, settings.seed, record.epochs)
    study = open_study(settings, settings.seed + 7919 * os.getpid() + len(probe.trials), record.epochs)
    if n_trials:
        target = count_finished(study) + n_trials
        echo(f"--trials {n_trials}: runs trials until study {settings.study!r} has {target} finished")
    else:
        target = int(study.user_attrs.get(StudyAttr.TARGET_TRIALS, 0))
    tracker = open_tracker(settings.tracking_uri, settings.study)
    parent = study.user_attrs.get(StudyAttr.PARENT_RUN)
    if parent is None:
        parent = tracker.parent_run(settings.study, record.flat())
        if parent is not None:
            study.set_user_attr(StudyAttr.PARENT_RUN, parent)
    recover_dead_trials(study, tracker)  # a restarted worker's own dead trial is retried at once
    return work(study, settings, space, prepared, tracker, parent, target, timeout, echo, progress)


def _reap(workers: list[Worker], interrupt: bool) -> None:
    """Wait for the worker processes; on Ctrl-C pass it on so they close their trials too."""
    for w in workers:
        if interrupt and w.poll() is None:
            w.send_signal(signal.SIGINT)
    for w in workers:
        try:
            w.wait(timeout=None if not interrupt else 60)
        except subprocess.TimeoutExpired:
            w.kill()


class _progress_bar:
    """Finished trials of the whole study (all workers) against the target; best so far."""

    def __init__(self, study: optuna.Study, target: int):
        from tqdm.auto import tqdm

        self.start = count_finished(study)
        self.bar = tqdm(total=target - self.start, desc="trials", unit="trial", dynamic_ncols=True)

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.bar.n = min(self.bar.total, count_finished(study) - self.start)
        self.bar.refresh()
        best = best_feasible(study)
        if best is not None:
            self.bar.set_postfix_str(f"best {trial_value(best):.3f} (trial {best.number})")

    def close(self) -> None:
        self.bar.close()


def top_trials_table(study: optuna.Study, n: int = 10) -> str:
    """Top trials by validation accuracy (last reported value for pruned ones), with their cost."""
    head = (f"{'trial':>5} {'val_acc':>7} {'params':>8} {'kB':>7} {'MACs':>11} {'lr':>9} {'widths':<16} "
            f"{'noise':>5}  state")
    lines = [head, "-" * len(head)]
    for t in top_trials(study, n):
        attrs = t.user_attrs
        lines.append(
            f"{t.number:>5} {trial_value(t):>7.3f} {attrs.get(TrialAttr.N_PARAMS, 0):>8,} "
            f"{attrs.get(TrialAttr.KB, float('nan')):>7.1f} "
            f"{attrs.get(TrialAttr.MACS, 0):>11,} {t.params.get('lr', float('nan')):>9.2e} "
            f"{','.join(map(str, attrs.get(TrialAttr.WIDTHS, []))):<16} "
            f"{t.params.get('noise', float('nan')):>5.2f}  {trial_state(t).lower()}")
    return "\n".join(lines)


def mlflow_ui_command(tracking_uri: str, experiment_id: str | None = None) -> str:
    from sceneclf.tracking.stores import experiment_url

    if tracking_uri.startswith(("http://", "https://")):
        return f"open {experiment_url(tracking_uri, experiment_id or '0')}"
    return (f"sceneclf ui --tracking-uri {tracking_uri}   (or: mlflow ui --backend-store-uri "
            f"{tracking_uri}, then open {experiment_url('http://127.0.0.1:5000', experiment_id or '0')})")

