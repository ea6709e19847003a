"""The search's stop rule and retried trials' constraints, without a model: Optuna studies whose
objective fails on purpose."""

import logging

import optuna
import pytest

from sceneclf.search.turns import SURPLUS_REASON, Stop, SurplusTrial, guarded


def failing(reasons):
    def objective(trial):
        reason = reasons[trial.number % len(reasons)]
        trial.set_user_attr("reason", reason)
        raise RuntimeError(reason)
    return objective


def run(objective, stop, n_trials=60):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=n_trials, callbacks=[stop], catch=(Exception,))
    return study


def test_stops_when_recent_trials_fail_the_same_way():
    stop = Stop(target=100)
    study = run(failing(["RuntimeError: boom"]), stop)
    assert len(study.trials) == 5
    assert stop.reason == "the last 5 trials failed (RuntimeError: boom)"


def test_goes_on_while_failures_differ_until_many_fail():
    stop = Stop(target=100)
    study = run(failing(["RuntimeError: a", "OutOfMemoryError: b"]), stop)
    assert len(study.trials) == 20 and stop.reason.startswith("the last 20 trials failed")


def test_finished_trials_reach_the_target():
    stop = Stop(target=3)
    study = run(lambda trial: trial.number / 10, stop)
    assert len(study.trials) == 3 and stop.reason is None


def test_surplus_trials_at_the_end_are_no_failure_of_the_search():
    # Five workers that each drew one trial too many must stop quietly, not "the last 5 failed".
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: 1.0, n_trials=3)
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                                  user_attrs={"reason": SURPLUS_REASON}))
    stop = Stop(target=3)
    study.optimize(failing([SURPLUS_REASON]), n_trials=5, callbacks=[stop], catch=(Exception,))
    assert len(study.trials) == 9 and stop.reason is None


def test_a_surplus_trial_is_failed_with_its_reason_and_leaves_optimize_without_optunas_warning(caplog):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: 1.0, n_trials=2)
    ran = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.enable_propagation()  # Optuna's warnings reach caplog
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(SurplusTrial):
            study.optimize(guarded(lambda trial: ran.append(trial.number) or 1.0, study, target=2), n_trials=1,
                           catch=(Exception,))
    finally:
        optuna.logging.disable_propagation()
    surplus = study.trials[2]
    assert ran == [] and surplus.state == optuna.trial.TrialState.FAIL
    assert surplus.user_attrs == {"reason": SURPLUS_REASON}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("optuna")] == []


def test_a_retried_trial_keeps_its_constraints_without_a_warning():
    import warnings

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from sceneclf.search.objective import set_constraints

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    first = study.ask()
    set_constraints(first, {"params": -10.0})
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, study.trials[0])  # queued as for a dead worker
    retry = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        set_constraints(retry, {"params": -10.0})
    assert study.trials[1].system_attrs["constraints:params"] == -10.0
