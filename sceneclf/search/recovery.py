"""After a crash: trial checkpoints left aside are settled, trials a dead process left running
are failed and queued again, and their MLflow runs are closed."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sceneclf.errors import first_line
from sceneclf.search.record import TrialAttr, best_feasible, trial_value
from sceneclf.search.storage import grace_seconds
from sceneclf.tracking.tracker import Tracker


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pending_path(checkpoint_dir: Path, number: int) -> Path:
    return checkpoint_dir / f"trial-{number:04d}.pt"


def promote_pending(study: optuna.Study, checkpoint_dir: Path, tracker: Tracker, parent_run_id: str | None,
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
        run_id = t.user_attrs.get(TrialAttr.RUN_ID)
        if parent_run_id and run_id:
            try:
                tracker.set_best(parent_run_id, number, run_id, path, t.user_attrs.get(TrialAttr.CONFIG, t.params),
                                 {"val_accuracy": trial_value(t)})
            except Exception as exc:  # the store is failing: best.pt on disk is still right
                logging.getLogger("sceneclf").warning("trial %d: best checkpoint not logged to MLflow (%s)",
                                                      number, first_line(exc))
        try:
            os.replace(path, checkpoint_dir / "best.pt")
        except FileNotFoundError:
            pass  # promoted by another worker meanwhile


def recover_dead_trials(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer exists, and trials whose
    process died before it recorded itself on them (Optuna's heartbeat check never fails a trial
    that has not beaten once): fail them now, queue them again with their parameters and reports
    (the retry resumes from their training state: `search.resume`), close their MLflow runs.
    Returns the numbers of the trials recovered."""
    host = socket.gethostname()
    now = datetime.now()  # Optuna stamps datetime_start with the local, naive time
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get(TrialAttr.WORKER, ""))
        name, _, pid = worker.rpartition(":")
        if not worker:
            if t.datetime_start is None or (now - t.datetime_start).total_seconds() < grace_seconds():
                continue  # a live process claims its trial within milliseconds: this one may yet
            reason = "worker died before it recorded itself on the trial"
        elif name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        else:
            reason = "worker died (recovered on restart)"
        try:  # the reason first: a finished trial takes no more attributes
            study._storage.set_trial_user_attr(t._trial_id, TrialAttr.REASON, reason)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # failed meanwhile by another process's heartbeat check, which retries it
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs={TrialAttr.RETRY_OF: t.number}, intermediate_values=t.intermediate_values))
        if t.user_attrs.get(TrialAttr.RUN_ID):
            tracker.close_if_running(t.user_attrs[TrialAttr.RUN_ID], "FAIL", "worker died")
        recovered.append(t.number)
    close_failed_runs(study, tracker)
    return recovered


def close_failed_runs(study: optuna.Study, tracker: Tracker) -> None:
    """Close the MLflow runs of failed trials still marked running: trials failed by the
    heartbeat check (their machine or process died) rather than by their own process, and those
    killed between creating their run and recording its id."""
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(TrialAttr.RUN_ID):
            tracker.close_if_running(t.user_attrs[TrialAttr.RUN_ID], "FAIL", "worker died")
    for run_id, number in tracker.running_trial_runs().items():
        if number < len(trials) and trials[number].state not in (TrialState.RUNNING, TrialState.WAITING):
            tracker.close_if_running(run_id, "FAIL", "worker died")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
