"""Which trials a worker runs: the study's target counted over all workers, the stop rule, a
trial asked for when the others already make the target (surplus), and a trial another process
failed while this one ran it (taken over)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from sceneclf.search.record import FINISHED, TrialAttr


class Stop:
    """Stop starting trials when finished, pruned and running trials reach `target` (failed ones
    are not counted), or when the last `streak` trials all failed the same way (same exception
    type: something is wrong beyond one trial), or the last `4 * streak` failed in any way.
    Surplus trials (`guarded`) are not failures of the search and are left out of both streaks."""

    def __init__(self, target: int, streak: int = 5):
        self.target = target
        self.streak = streak
        self.reason: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = [t for t in study.get_trials(deepcopy=False) if not _surplus(t)]
        for n, same_way in ((self.streak, True), (4 * self.streak, False)):
            recent = trials[-n:]
            if len(recent) < n or any(t.state != TrialState.FAIL for t in recent):
                continue
            reasons = sorted({str(t.user_attrs.get(TrialAttr.REASON, "unknown")) for t in recent})
            if same_way and len({r.split(":")[0] for r in reasons}) > 1:
                continue
            self.reason = f"the last {n} trials failed ({'; '.join(reasons)[:300]})"
            study.stop()
            return
        if committed(study) >= self.target:  # the running trials of other workers will fill it
            study.stop()


def committed(study: optuna.Study) -> int:
    """Trials finished or pruned, plus those queued or running now: in any worker where heartbeats
    tell a dead machine's trial, else only on this machine (whose dead processes' trials are
    recovered)."""
    return len(_committed_trials(study))


def _committed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))
    if not is_heartbeat_enabled(study._storage):
        host = socket.gethostname()
        trials = [t for t in trials if t.state != TrialState.RUNNING
                  or str(t.user_attrs.get(TrialAttr.WORKER, "")).rpartition(":")[0] == host]
    return trials


def _queued(t: optuna.trial.FrozenTrial) -> bool:
    """A retry or an enqueued trial, rather than one the sampler made up."""
    return "fixed_params" in t.system_attrs or "failed_trial" in t.system_attrs or TrialAttr.RETRY_OF in t.user_attrs


class SurplusTrial(BaseException):
    """Two workers asked for a trial at once and one of them was not needed: it is told FAIL
    here and leaves Optuna's optimize without the warning and traceback Optuna logs for a
    failed trial (a BaseException passes its objective wrapper untold)."""


SURPLUS_REASON = "not needed: the study's other trials reach its target"


def _surplus(t: optuna.trial.FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and t.user_attrs.get(TrialAttr.REASON) == SURPLUS_REASON


class TrialTakenOver(BaseException):
    """This process's trial was finished meanwhile by another process's heartbeat check (this one
    was stalled past the grace period). A BaseException, so it leaves Optuna's optimize untold:
    telling a finished trial fails, and would end the worker."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number = number


def guarded(objective: Callable[[optuna.Trial], object], study: optuna.Study, target: int):
    """`objective`, except that a trial the sampler made up fails at once when the others already
    make the target (queued trials count first, then made-up ones by number): a worker may take
    a new trial while another takes the last retry; and a trial another process finished
    meanwhile raises `TrialTakenOver`."""
    def run(trial: optuna.Trial):
        trials = _committed_trials(study)
        mine = study._storage.get_trial(trial._trial_id)
        if not _queued(mine) and sum(t.number != trial.number and (_queued(t) or t.number < trial.number)
                                     for t in trials) >= target:
            trial.set_user_attr(TrialAttr.REASON, SURPLUS_REASON)
            study.tell(trial, state=TrialState.FAIL)
            raise SurplusTrial(SURPLUS_REASON)
        try:
            value = objective(trial)
        except Exception:
            if _taken(study, trial):
                raise TrialTakenOver(trial.number) from None
            raise
        if _taken(study, trial):
            raise TrialTakenOver(trial.number)
        return value
    return run


def _taken(study: optuna.Study, trial: optuna.Trial) -> bool:
    return study._storage.get_trial(trial._trial_id).state.is_finished()
