"""Mid-trial resume: a training cut after an epoch goes on from its saved state exactly as if it
had never stopped; states that do not fit are refused in one line; retry chains find their state."""

import logging

import optuna
import pytest
import torch
from mlflow_store import mlflow_template  # noqa: F401  (fixture)
from optuna.trial import TrialState

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import Budget
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.search.resume import TrainingState, chain_root, state_path, sweep_states
from sceneclf.train import TrainConfig, train_model

CONFIGS = {"lr": 3e-3, "widths": "8,16"}
AUGMENT = AugmentConfig(mixstyle_p=0.5, mixup_alpha=0.2, freq_masks=1, time_masks=1, time_shift=4)


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    return prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(),
                   tmp_path_factory.mktemp("cache"))


class Cut(Exception):
    pass


def train(prepared, store, epochs_seen, stop_at=None, ema_epochs=0.0):
    def on_epoch(epoch, metrics):
        epochs_seen.append(epoch)
        if epoch == stop_at:
            raise Cut  # as a kill after the epoch's reports, before its state is written

    cfg = TrainConfig(lr=3e-3, batch_size=16, epochs=5, early_stop=5, seed=3, ema_epochs=ema_epochs)
    return train_model(FeatureConfig(noise=0.05), ModelConfig(widths=(8, 16)), cfg, Budget(),
                       prepared.splits["train"], prepared.splits["val"], prepared.frames, on_epoch=on_epoch,
                       augment=AUGMENT, store=store)


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("ema_epochs", [0.0, 1.0])  # with a moving average of the weights, it goes on too
def test_a_cut_training_goes_on_exactly_where_it_stopped(prepared, tmp_path, ema_epochs):
    torch.set_num_threads(1)
    seen_whole: list[int] = []
    whole_model, whole = train(prepared, TrainingState(tmp_path / "a.state", 0, CONFIGS, "fp"), seen_whole,
                               ema_epochs=ema_epochs)

    path = tmp_path / "b.state"
    seen_cut: list[int] = []
    with pytest.raises(Cut):
        train(prepared, TrainingState(path, 0, CONFIGS, "fp"), seen_cut, stop_at=4, ema_epochs=ema_epochs)
    store = TrainingState(path, 1, CONFIGS, "fp")
    assert store.read()["epoch"] == 3
    seen_resumed: list[int] = []
    model, resumed = train(prepared, store, seen_resumed, ema_epochs=ema_epochs)

    assert seen_whole == [1, 2, 3, 4, 5] and seen_cut == [1, 2, 3, 4] and seen_resumed == [4, 5]
    assert without_seconds(resumed.history) == without_seconds(whole.history)
    assert (resumed.best_epoch, resumed.best_val_accuracy) == (whole.best_epoch, whole.best_val_accuracy)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), whole_model.state_dict().values()))


def test_a_state_saved_at_most_every_n_seconds(prepared, tmp_path):
    store = TrainingState(tmp_path / "c.state", 0, CONFIGS, "fp", every_s=3600)
    train(prepared, store, [])
    assert TrainingState(tmp_path / "c.state", 0, CONFIGS, "fp").read()["epoch"] == 1  # the first only


@pytest.mark.parametrize(("change", "reason"), [
    ("torn", "unreadable"),
    ("version", "written by another sceneclf"),
    ("fingerprint", "other data (fingerprint fp, study other)"),
    ("configs", "another trial configuration"),
])
def test_a_state_that_does_not_fit_is_refused_in_one_line(prepared, tmp_path, caplog, change, reason):
    path = tmp_path / "trial-0002.state"
    with pytest.raises(Cut):
        train(prepared, TrainingState(path, 2, CONFIGS, "fp"), [], stop_at=2)
    if change == "torn":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif change == "version":
        raw = torch.load(path, weights_only=True)
        torch.save({**raw, "version": 99}, path)
    store = TrainingState(path, 5, {**CONFIGS, "lr": 1e-2} if change == "configs" else CONFIGS,
                          "other" if change == "fingerprint" else "fp")
    with caplog.at_level(logging.WARNING, logger="sceneclf"):
        assert store.read() is None
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("trial 5: training state trial-0002.state refused: ") and reason in line
    assert line.endswith("; training from scratch") and "\n" not in line
    assert not path.exists()
    seen: list[int] = []
    train(prepared, store, seen)
    assert seen == [1, 2, 3, 4, 5]


def test_retry_chains_share_one_state_and_the_sweep_keeps_live_ones(tmp_path):
    study = optuna.create_study()
    dist = optuna.distributions.FloatDistribution(0, 1)

    def add(state, user=None, system=None):
        study.add_trial(optuna.trial.create_trial(state=state, params={"x": 0.5}, distributions={"x": dist},
                                                  value=0.0 if state == TrialState.COMPLETE else None,
                                                  user_attrs=user or {}, system_attrs=system or {}))

    add(TrialState.FAIL)  # 0: died; retried on restart
    add(TrialState.FAIL, {"retry_of": 0})  # 1: died on another machine; retried by heartbeat, which
    add(TrialState.RUNNING, {"retry_of": 0}, {"failed_trial": 1, "retry_history": [1]})  # 2 copies attrs
    add(TrialState.COMPLETE)  # 3
    add(TrialState.FAIL)  # 4: retries ran out
    trials = study.get_trials()
    assert [chain_root(trials, n) for n in range(5)] == [0, 0, 0, 3, 4]
    for n in (0, 3, 4):
        state_path(tmp_path, n).write_bytes(b"x")
    assert sweep_states(study, tmp_path) == [3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["trial-0000.state"]


def test_a_retry_on_another_machine_takes_the_state_from_the_dead_run(prepared, tmp_path, tracking_server):
    """Where MLflow is a tracking server, every state write also goes to the trial's run; a retry
    whose disk has no state (another machine) takes it from there, and its own run continues the
    dead run's learning curve."""
    from sceneclf.search.resume import open_state
    from sceneclf.tracking.tracker import MlflowTracker

    tracker = MlflowTracker(tracking_server, "resume")
    parent = tracker.parent_run("resume", {})
    dead_run = tracker.start_trial(parent, "resume", 0, {}, {})
    study = optuna.create_study(direction="maximize")
    dead = study.ask()
    dead.set_user_attr("mlflow_run_id", dead_run)
    here = TrainingState(state_path(tmp_path / "machine-a", 0), 0, CONFIGS, "fp",
                         mirror=lambda path: tracker.log_state(dead_run, path), mirror_spacing=0)

    def log(epoch):
        tracker.log_metrics(dead_run, {"val_accuracy": epoch / 10}, step=epoch)

    with pytest.raises(Cut):
        train(prepared, here, LoggedEpochs(log), stop_at=3)
    study.tell(dead, state=TrialState.FAIL)

    retry = study.ask()
    retry.set_user_attr("retry_of", 0)
    run = tracker.start_trial(parent, "resume", 1, {}, {})
    store = open_state(retry, tmp_path / "machine-b", CONFIGS, "fp", tracker, run)
    assert retry.user_attrs["resumed_from_epoch"] == 2
    seen: list[int] = []
    train(prepared, store, seen)
    assert seen == [3, 4, 5]
    continued = tracker.client.get_run(run)
    assert continued.data.tags["resumed_from_run"] == dead_run
    assert [m.step for m in tracker.client.get_metric_history(run, "val_accuracy")] == [1, 2]


class LoggedEpochs(list):
    """The epochs seen, each also logged by `log(epoch)`."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def append(self, epoch):
        super().append(epoch)
        self.log(epoch)


def test_a_run_whose_trial_died_before_recording_it_is_closed(tmp_path, mlflow_template):  # noqa: F811
    """A worker killed between creating its trial's MLflow run and recording the run's id on the
    trial leaves a run no trial names: it is closed once its trial is failed."""
    import shutil

    from sceneclf.search.recovery import close_failed_runs
    from sceneclf.tracking.tracker import MlflowTracker

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "orphans")
    parent = tracker.parent_run("orphans", {})
    study = optuna.create_study()
    dead, alive = study.ask(), study.ask()
    orphan = tracker.start_trial(parent, "orphans", dead.number, {}, {})
    running = tracker.start_trial(parent, "orphans", alive.number, {}, {})
    study.tell(dead, state=TrialState.FAIL)
    close_failed_runs(study, tracker)
    assert tracker.client.get_run(orphan).info.status == "FAILED"
    assert tracker.client.get_run(running).info.status == "RUNNING"


def test_a_retry_continues_the_curve_of_the_attempt_that_trained(prepared, tmp_path, mlflow_template):  # noqa: F811
    """Trial 0 trains 3 epochs and dies; its retry 1 dies before it trains (its run holds no
    curve); retry 2 resumes from trial 0's state and continues trial 0's run, not 1's."""
    import shutil

    from sceneclf.search.resume import open_state
    from sceneclf.tracking.tracker import MlflowTracker

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "chain")
    parent = tracker.parent_run("chain", {})
    study = optuna.create_study(direction="maximize")
    runs = []
    for number, retry_of in ((0, None), (1, 0), (2, 1)):
        trial = study.ask()
        runs.append(tracker.start_trial(parent, "chain", number, {}, {}))
        trial.set_user_attr("mlflow_run_id", runs[-1])
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        if number == 0:
            store = open_state(trial, tmp_path, CONFIGS, "fp", tracker, runs[-1])
            with pytest.raises(Cut):
                train(prepared, store, LoggedEpochs(lambda e: tracker.log_metrics(runs[0], {"val_accuracy": e / 10},
                                                                                   step=e)), stop_at=3)
        if number < 2:
            study.tell(trial, state=TrialState.FAIL)
    store = open_state(trial, tmp_path, CONFIGS, "fp", tracker, runs[2])
    assert study.trials[2].user_attrs["resumed_from_epoch"] == 2 and store.writer == 0
    assert tracker.client.get_run(runs[2]).data.tags["resumed_from_run"] == runs[0]
    assert [m.step for m in tracker.client.get_metric_history(runs[2], "val_accuracy")] == [1, 2]


def test_a_retry_that_starts_over_keeps_the_reports_it_inherited(prepared, tmp_path, mlflow_template):  # noqa: F811
    """A retry inherits its dead trial's reports (Optuna's retry callback copies them); where it finds
    no state and trains from epoch 1, it reports only the epochs after them, so Optuna never warns
    that a step was already reported."""
    import shutil
    import warnings

    from conftest import TINY_SPACE

    from sceneclf.search.objective import Objective
    from sceneclf.search.space import load_space
    from sceneclf.tracking.tracker import MlflowTracker

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    space = load_space(str(tmp_path / "tiny.toml"))
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "inherit")
    objective = Objective(prepared, space, space.budget, "inherit", tracker, tracker.parent_run("inherit", {}),
                          tmp_path / "ck", epochs=3)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    dead = study.trials[0]
    state_path(tmp_path / "ck", 0).unlink()  # its state was on a machine that is gone
    inherited = {1: 0.5, 2: 0.25}  # reports no new training reproduces exactly
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=dead.params, distributions=dead.distributions,
        user_attrs={"retry_of": 0}, intermediate_values=inherited))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=1)
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] == 0
    assert {e: retry.intermediate_values[e] for e in (1, 2)} == inherited and 3 in retry.intermediate_values
    assert [str(w.message) for w in caught if "already reported" in str(w.message)] == []


def test_a_retry_of_a_trial_killed_before_its_run_began_says_it_starts_over(tmp_path, mlflow_template):  # noqa: F811
    import shutil

    from sceneclf.search.resume import open_state
    from sceneclf.tracking.tracker import MlflowTracker

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "early")
    parent = tracker.parent_run("early", {})
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), state=TrialState.FAIL)  # killed before it recorded a run
    retry = study.ask()
    retry.set_user_attr("retry_of", 0)
    run = tracker.start_trial(parent, "early", 1, {}, {})
    open_state(retry, tmp_path, CONFIGS, "fp", tracker, run)
    tags = tracker.client.get_run(run).data.tags
    assert (retry.user_attrs["resumed_from_epoch"], tags["resumed_from_epoch"]) == (0, "0")
    assert "resumed_from_run" not in tags


def test_a_heartbeat_retry_carries_retry_of_not_the_dead_attempts_attributes(tmp_path):
    """Optuna's retry callback copies every user attribute; ours keeps the parameters and reports
    but not the dead attempt's run, worker or resume point, which belong to that attempt."""
    import time
    import warnings

    from sceneclf.search.storage import RetryStaleTrial

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=1, grace_period=1,
                                         heartbeat_stale_trial_callback=RetryStaleTrial(
                                             max_retry=2, inherit_intermediate_values=True))
    study = optuna.create_study(storage=storage, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # heartbeats outside `optimize`: this test beats by hand
        dead = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    for key, value in {"mlflow_run_id": "r0", "worker": "host:1", "resumed_from_epoch": 2}.items():
        dead.set_user_attr(key, value)
    dead.report(0.5, 1)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.trials
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.user_attrs == {"retry_of": 0}
    assert (retry.params, retry.intermediate_values, retry.system_attrs["retry_history"]) == (dead.params, {1: 0.5}, [0])


def test_a_trial_whose_process_died_before_claiming_it_is_queued_again(tmp_path, monkeypatch):
    """Killed between taking a trial and its first heartbeat, a process leaves a RUNNING trial that
    Optuna's heartbeat check never fails: one older than the grace period and claimed by no worker
    is failed and queued again; a fresh unclaimed one is left to its process."""
    import time

    from sceneclf.search import recovery, storage
    from sceneclf.tracking.tracker import NullTracker

    monkeypatch.setattr(storage, "HEARTBEAT_SECONDS", 1 / 3)  # grace period 1 s
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2)
    taken = study.ask({"lr": lr})
    taken.report(0.5, 1)
    time.sleep(1.5)
    fresh = study.ask({"lr": lr})
    assert recovery.recover_dead_trials(study, NullTracker()) == [0]
    dead, alive, retry = study.trials
    assert (dead.state, dead.user_attrs["reason"]) == (TrialState.FAIL, "worker died before it recorded itself on the trial")
    assert (alive.number, alive.state) == (fresh.number, TrialState.RUNNING)
    assert (retry.state, retry.params, retry.user_attrs, retry.intermediate_values) == (
        TrialState.WAITING, dead.params, {"retry_of": 0}, {1: 0.5})
