"""A real `sceneclf search` process killed with SIGKILL at four moments, then run again.

One study is killed four times in a row, each time at a different moment, and the same command
is run again after each kill:

1. while the mel store is written (fresh cache folder; a clip half appended),
2. while MLflow stores the study's new best checkpoint (half copied into the artifact store),
   just after the first trial was recorded,
3. in the middle of an epoch of the next trial,
4. while that trial's retry writes its checkpoint (the file half written), after both epochs
   (and their training states) were written.

The moment is made exact by a `sitecustomize` hook on the child's PYTHONPATH: at the chosen
call it writes the first half of the file, drops a marker file and sleeps; the test sees the
marker and kills the process with SIGKILL. The command itself is the ordinary
`python -m sceneclf search ...`.

After each kill and restart: every trial that had finished is still there with its value; a trial
killed while running is FAIL (reason "worker died") and its parameters are queued and run again;
its MLflow run is closed as FAILED; the best checkpoint on disk and the one MLflow points at load
and belong to the study's best trial; the storage opens; no cache entry is corrupt.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow_store import mlflow_template  # noqa: F401  (fixture)
from optuna.trial import TrialState

from sceneclf.data.store import MelStore
from sceneclf.model.checkpoint import load_checkpoint
from sceneclf.model.frontend import FeatureConfig

HOOK = r'''
import os, time
_spec = os.environ.get("CRASH_AT")
if _spec:
    _phase, _, _n = _spec.partition(":")
    _n = int(_n or 1)
    _calls = [0]

    def _due():
        _calls[0] += 1
        return _calls[0] == _n

    def _half(data, f):
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())

    def _pause():
        with open(os.environ["CRASH_MARK"], "w") as m:
            m.write(_phase)
        time.sleep(600)

    if _phase == "cache":
        import sceneclf.data.store as _store
        _real_write = _store.write_block

        def _write_block(f, data):
            if _due():
                _half(bytes(data), f)
                _pause()
            return _real_write(f, data)
        _store.write_block = _write_block
    elif _phase == "epoch":
        import sceneclf.train as _train
        _real_batches = _train.batches

        def _batches(data, batch_size, frames, train, generator=None):
            it = _real_batches(data, batch_size, frames, train, generator)
            if not train or not _due():
                yield from it
                return
            yield next(it)
            _pause()  # the optimizer has taken the epoch's first step
            yield from it
        _train.batches = _batches
    elif _phase == "stall":  # the heartbeats stop and training waits, until the test says go
        import optuna.storages._rdb.storage as _rdb
        import sceneclf.train as _train
        _real_beat, _real_batches, _silent = _rdb.RDBStorage.record_heartbeat, _train.batches, [False]

        def _beat(self, trial_id):
            if not _silent[0]:
                _real_beat(self, trial_id)
        _rdb.RDBStorage.record_heartbeat = _beat

        def _batches(data, batch_size, frames, train, generator=None):
            if train and _due():
                _silent[0] = True
                with open(os.environ["CRASH_MARK"], "w") as m:
                    m.write(_phase)
                while not os.path.exists(os.environ["CRASH_MARK"] + ".go"):
                    time.sleep(0.05)
                _silent[0] = False
            yield from _real_batches(data, batch_size, frames, train, generator)
        _train.batches = _batches
    elif _phase == "checkpoint":
        import io
        import torch
        _real_tsave = torch.save

        def _tsave(obj, f, *a, **k):
            if hasattr(f, "write") and _due():
                buf = io.BytesIO()
                _real_tsave(obj, buf, *a, **k)
                _half(buf.getvalue(), f)
                _pause()
            return _real_tsave(obj, f, *a, **k)
        torch.save = _tsave
    elif _phase == "mlflow":
        from pathlib import Path
        from urllib.parse import unquote, urlparse
        from mlflow.tracking import MlflowClient
        _real_log = MlflowClient.log_artifact

        def _log_artifact(self, run_id, local_path, artifact_path=None):
            if str(artifact_path or "").startswith("best/") and _due():
                root = Path(unquote(urlparse(self.get_run(run_id).info.artifact_uri).path))
                dest = root / (artifact_path or "") / Path(local_path).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as f:
                    _half(Path(local_path).read_bytes(), f)
                _pause()
            return _real_log(self, run_id, local_path, artifact_path)
        MlflowClient.log_artifact = _log_artifact
'''

SPACE = """
[train]
epochs = 2
early_stop = 5

[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true

[params.n_blocks]
type = "int"
low = 1
high = 2

[params.base_width]
type = "int"
low = 4
high = 8
step = 4
"""

TIMEOUT = 150  # seconds for one process, on a busy machine


@pytest.fixture
def crash_env(tmp_path, tiny_data, mlflow_template):
    (tmp_path / "mlruns").mkdir()
    shutil.copy(mlflow_template, tmp_path / "mlruns" / "mlflow.db")  # migrated: saves seconds
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    (tmp_path / "space.toml").write_text(SPACE)
    env = {**os.environ, "PYTHONPATH": str(hook), "OMP_NUM_THREADS": "1",
           "SCENECLF_CACHE": str(tmp_path / "cache"), "CRASH_MARK": str(tmp_path / "marker")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SCENECLF_STORAGE", None)
    cmd = [sys.executable, "-m", "sceneclf", "search", "--data", str(tiny_data), "--study", "crash",
           "--storage", f"sqlite:///{tmp_path}/studies/crash.db",
           "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db",
           "--space", str(tmp_path / "space.toml"), "--epochs", "2", "--trials", "2",
           "--no-progress", "--device", "cpu", "--seed", "0"]
    return {"cmd": cmd, "env": env, "dir": tmp_path}


def run(ctx, crash_at: str | None) -> str:
    """Run the command; with `crash_at`, SIGKILL it at that moment. Returns its output."""
    marker, log = ctx["dir"] / "marker", ctx["dir"] / "out.log"
    marker.unlink(missing_ok=True)
    env = dict(ctx["env"])
    if crash_at:
        env["CRASH_AT"] = crash_at
    with open(log, "wb") as out:
        proc = subprocess.Popen(ctx["cmd"], cwd=ctx["dir"], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        try:
            while crash_at and not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(f"exited with {proc.returncode} before reaching {crash_at}:\n"
                                f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{crash_at} not reached within {TIMEOUT} s")
                time.sleep(0.05)
            if crash_at:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    if crash_at:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 0, text[-3000:]
    return text


def load(ctx) -> optuna.Study:
    return optuna.load_study(study_name="crash", storage=f"sqlite:///{ctx['dir']}/studies/crash.db")


def finished_values(study: optuna.Study) -> dict[int, float]:
    return {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}


def check_cache(ctx) -> None:
    """Every cache entry where a reader looks is whole: each *.npy, and each mel store's index
    with the data it points at."""
    for f in (ctx["dir"] / "cache").rglob("*.npy"):
        np.load(f, allow_pickle=False)
    for index in (ctx["dir"] / "cache").rglob("index.json"):
        store = MelStore(index.parent, FeatureConfig().n_mels).load()
        assert not store.rebuilt and len(store) > 0
        assert all(np.isfinite(store.mel(k).numpy()).all() for k in store.clips)


def torn_store(ctx) -> bool:
    """A mel store was killed mid-append: data past what its index (if any yet) commits."""
    for data in (ctx["dir"] / "cache").rglob("mels.f32"):
        index = data.parent / "index.json"
        committed = json.loads(index.read_text())["length"] * 4 if index.exists() else 0
        if data.stat().st_size > committed:
            return True
    return False


def check_best(ctx, study: optuna.Study) -> None:
    """The best checkpoint on disk and the one the MLflow study run points at both load, and
    belong to the study's best trial."""
    best = study.best_trial
    ckpt = load_checkpoint(ctx["dir"] / "studies" / "checkpoints" / "crash" / "best.pt")
    assert ckpt.metrics["val_accuracy"] == pytest.approx(best.value)
    client = MlflowClient(f"sqlite:///{ctx['dir']}/mlruns/mlflow.db")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["best_trial"] == str(best.number)
    local = client.download_artifacts(parent.info.run_id, parent.data.tags["best_checkpoint"],
                                      str(ctx["dir"]))
    assert load_checkpoint(local).metrics["val_accuracy"] == pytest.approx(best.value)


def check_recovered(ctx, study: optuna.Study, killed: int) -> int:
    """The killed trial is FAIL with a reason, its MLflow run FAILED, and a later trial has its
    parameters (queued as a retry). Returns the retry's number."""
    t = study.trials[killed]
    assert t.state == TrialState.FAIL, t
    assert "worker died" in t.user_attrs["reason"]
    client = MlflowClient(f"sqlite:///{ctx['dir']}/mlruns/mlflow.db")
    run = client.get_run(t.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["state"] == "FAIL"
    retries = [r for r in study.trials if r.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == t.params
    return retries[0].number


def running(study: optuna.Study) -> list[int]:
    return [t.number for t in study.trials if t.state == TrialState.RUNNING]


def test_sigkill_at_four_moments_then_resume(crash_env):
    ctx = crash_env
    # 1. Killed while the mel store is written (the 40th clip half appended): no study yet.
    run(ctx, "cache:40")
    check_cache(ctx)
    assert torn_store(ctx), "the hook should have left a half-appended store"
    assert not (ctx["dir"] / "studies" / "crash.db").exists() or not load(ctx).trials

    # 2. Run again; killed while MLflow stores trial 0's checkpoint as the study's best, after
    #    Optuna recorded trial 0.
    run(ctx, "mlflow:1")
    check_cache(ctx)
    study = load(ctx)
    done = finished_values(study)
    assert list(done) == [0] and not running(study)
    aside = ctx["dir"] / "studies" / "checkpoints" / "crash"
    assert (aside / "trial-0000.pt").is_file() and not (aside / "best.pt").exists()

    # 3. Run again: trial 0's checkpoint becomes the best (disk and MLflow); killed in the middle
    #    of trial 1's first epoch.
    run(ctx, "epoch:1")
    study = load(ctx)
    assert finished_values(study) == done and running(study) == [1]
    check_best(ctx, study)

    # 4. Run again: trial 1 is failed and queued again; killed while the retry's checkpoint is written
    #    (the third torch.save: the training states after epochs 1 and 2 come first).
    run(ctx, "checkpoint:3")
    study = load(ctx)
    assert finished_values(study) == done
    retry = check_recovered(ctx, study, 1)
    assert running(study) == [retry]
    assert list((ctx["dir"] / "studies" / "checkpoints" / "crash").glob(".*.tmp"))  # half written, aside
    check_best(ctx, study)

    # 5. Run again, to the end.
    out = run(ctx, None)
    assert "recovered trial(s)" in out
    study = load(ctx)
    retry = check_recovered(ctx, study, retry)
    final = study.trials[retry]
    assert final.state == TrialState.COMPLETE and final.params == study.trials[1].params
    assert final.user_attrs["resumed_from_epoch"] == 2  # its training state held both epochs
    values = finished_values(study)
    assert {k: values[k] for k in done} == done and len(values) == len(done) + 2
    assert not running(study) and not [t for t in study.trials if t.state == TrialState.WAITING]
    client = MlflowClient(f"sqlite:///{ctx['dir']}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("crash")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    assert len([r for r in runs if r.data.tags.get("sceneclf.role") == "trial"]) == len(study.trials)
    check_best(ctx, study)
    check_cache(ctx)
    assert not list((ctx["dir"] / "studies" / "checkpoints" / "crash").glob("trial-*.pt"))  # all settled


def test_restart_settles_checkpoints_left_aside(tmp_path):
    """What `promote_pending` does with the trial checkpoints a killed process left: the best
    recorded trial's becomes best.pt, a finished trial's others are deleted, a running trial's
    (another worker's) is left alone."""
    from sceneclf.data.audio import AudioConfig
    from sceneclf.model.checkpoint import Checkpoint, save_checkpoint
    from sceneclf.model.cnn import ModelConfig, SceneClassifier
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.search.recovery import pending_path, promote_pending

    def tiny() -> Checkpoint:
        cfg = ModelConfig(n_classes=2, widths=(4,))
        return Checkpoint(SceneClassifier(FeatureConfig(), cfg), AudioConfig(), FeatureConfig(), cfg, ("a", "b"))

    study = optuna.create_study(direction="maximize")
    values = [0.2, 0.5, None, 0.3]  # trial 2 failed
    for v in values:
        t = study.ask()
        study.tell(t, v, state=TrialState.FAIL if v is None else TrialState.COMPLETE)
    study.ask()  # trial 4: running elsewhere
    for n in range(5):
        ckpt = tiny()
        ckpt.metrics["val_accuracy"] = values[n] if n < 4 and values[n] is not None else 0.0
        save_checkpoint(pending_path(tmp_path, n), ckpt)
    promote_pending(study, tmp_path, None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "trial-0004.pt"]
    assert load_checkpoint(tmp_path / "best.pt").metrics["val_accuracy"] == pytest.approx(0.5)


def test_trial_of_a_dead_machine_is_failed_by_its_heartbeat_and_retried(tmp_path, tiny_data, monkeypatch,
                                                                         mlflow_template):
    """A trial left RUNNING by another machine (so no local process check can tell) stops
    sending heartbeats: the next search fails it after the grace period, runs its parameters
    again, and closes its MLflow run."""
    from click.testing import CliRunner

    import sceneclf.search.storage as search_mod
    from sceneclf.cli import cli
    from sceneclf.search.space import load_space, sample
    from sceneclf.tracking.tracker import MlflowTracker

    monkeypatch.setattr(search_mod, "HEARTBEAT_SECONDS", 1)  # grace period 3 s
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    shutil.copy(mlflow_template, tmp_path / "mlruns" / "mlflow.db")
    (tmp_path / "space.toml").write_text(SPACE)
    storage, tracking = f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    args = ["search", "--data", str(tiny_data), "--study", "hb", "--storage", storage, "--tracking-uri",
            tracking, "--space", "space.toml", "--epochs", "1", "--trials", "1", "--no-progress",
            "--device", "cpu"]
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0

    study = optuna.load_study(study_name="hb", storage=search_mod.open_storage(storage))
    with pytest.warns(UserWarning, match="Heartbeat of storage"):  # a trial begun outside optimize, on purpose
        trial = study.ask()
    sample(trial, load_space("space.toml"), 15)
    trial.set_user_attr("worker", "another-machine:4242")
    tracker = MlflowTracker(tracking, "hb")
    run_id = tracker.start_trial(study.user_attrs["mlflow_parent_run_id"], "hb", trial.number, {}, {})
    trial.set_user_attr("mlflow_run_id", run_id)
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(4)  # the other machine is gone: no heartbeat for longer than the grace period

    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="hb", storage=storage)
    stale = study.trials[trial.number]
    assert stale.state == TrialState.FAIL
    [retry] = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert retry.params == stale.params and retry.state == TrialState.COMPLETE
    assert tracker.client.get_run(run_id).info.status == "FAILED"


def test_a_live_worker_whose_trial_was_failed_by_a_heartbeat_check_goes_on(crash_env, monkeypatch):
    """A search whose heartbeats stop (stalled) for longer than the grace period has its running
    trial failed by another process's heartbeat check, which queues the retry; going on, the
    search finds its trial finished, leaves it failed, takes the retry and finishes the study."""
    import sceneclf.search.storage as search_mod

    ctx, marker = crash_env, crash_env["dir"] / "marker"
    env = {**ctx["env"], "CRASH_AT": "stall:2", "SCENECLF_HEARTBEAT": "1"}  # epoch 2 of trial 0; grace 3 s
    with open(ctx["dir"] / "out.log", "wb") as out:
        proc = subprocess.Popen(ctx["cmd"], cwd=ctx["dir"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), (ctx["dir"] / "out.log").read_text()[-3000:]
        time.sleep(4)  # no heartbeat for longer than the grace period
        monkeypatch.setattr(search_mod, "HEARTBEAT_SECONDS", 1)  # the checker's grace period is the search's
        storage = ctx["cmd"][ctx["cmd"].index("--storage") + 1]
        checker = optuna.load_study(study_name="crash", storage=search_mod.open_storage(storage))
        optuna.storages.fail_stale_trials(checker)  # as another worker does before each trial
        assert checker.trials[0].state == TrialState.FAIL and checker.trials[0].intermediate_values
        (ctx["dir"] / "marker.go").touch()
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = (ctx["dir"] / "out.log").read_text()
    assert rc == 0, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    assert "trial 0 was failed by another process while this one ran it" in said, said[-3000:]
    study = load(ctx)
    [retry] = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert study.trials[0].state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == study.trials[0].params
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2
    client = MlflowClient(f"sqlite:///{ctx['dir']}/mlruns/mlflow.db")
    assert client.get_run(study.trials[0].user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert sorted(p.name for p in (ctx["dir"] / "studies" / "checkpoints" / "crash").glob("trial-*")) == []
