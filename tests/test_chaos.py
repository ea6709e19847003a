"""Chaos: `sceneclf search --jobs 2` plus one `sceneclf worker` on a real PostgreSQL study and a
real MLflow tracking server; five times a random worker process is killed with SIGKILL at a
random moment of a trial (the second and fourth time once the trial has reported an epoch), and
started again at once.

The search's own process is left alone (killing and rerunning it is `test_crash.py`'s case): the
victims are its `--jobs` worker and the extra worker. A killed process's trial is failed and
queued again either by the restarted worker (the dead process was its own: local recovery) or
by the heartbeat check. A killed `--jobs` worker (forked by the search's zygote, so its command
line is the search's) is replaced by a `sceneclf worker` on the same study. Skipped only where
PostgreSQL is not installed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_distributed import PG_BIN, postgres  # noqa: F401  (fixture)

from sceneclf.model.checkpoint import load_checkpoint
from sceneclf.search.resume import attempts_back, predecessor

pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")

SPACE = """
[train]
epochs = 8
early_stop = 8

[params.lr]
type = "float"
low = 2e-3
high = 1e-2
log = true

[params.n_blocks]
type = "int"
low = 1
high = 2

[params.base_width]
type = "int"
low = 8
high = 16
step = 4
"""
TRIALS, KILLS, EPOCHS = 32, 5, 8  # enough trials that a slow restart never leaves no one to kill
DEADLINE = 400  # seconds for the whole search: far more than it takes, even on a busy 2-core machine


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def finished(study: optuna.Study) -> dict[int, float]:
    return {t.number: t.value for t in study.trials if t.state in FINISHED}


def pid_of(t: optuna.trial.FrozenTrial) -> int:
    return int(str(t.user_attrs.get("worker", ":0")).rpartition(":")[2])


def test_five_sigkills_of_workers_lose_nothing_and_resume(postgres, tracking_server, tiny_data, tmp_path):  # noqa: F811
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    (tmp_path / "space.toml").write_text(SPACE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCENECLF_HEARTBEAT": "2"}  # the session's cache
    env.pop("MLFLOW_TRACKING_URI", None)
    storage = optuna.storages.RDBStorage(postgres)  # one pool: a new one per poll used up the server's connections
    stores = ["--study", "chaos", "--storage", postgres, "--tracking-uri", tracking_server]

    def start(cmd: list[str]) -> subprocess.Popen:
        with open(tmp_path / "processes.log", "a") as log:
            return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)

    search = start([sys.executable, "-m", "sceneclf", "search", *stores, "--data", str(tiny_data),
                    "--space", "space.toml", "--trials", str(TRIALS), "--jobs", "2", "--pruner", "none",
                    "--no-progress", "--device", "cpu"])
    extra = [sys.executable, "-m", "sceneclf", "worker", *stores, "--threads", "1", "--seed", "7",
             "--no-progress", "--device", "cpu"]
    ours: dict[int, subprocess.Popen] = {}  # the workers this test started, by pid
    kills: list[dict] = []
    t0 = time.monotonic()
    deadline = t0 + DEADLINE
    try:
        while search.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name="chaos", storage=storage)
            except KeyError:
                continue
            if not ours and "sceneclf" in study.user_attrs:  # the study is set up: the extra worker joins
                w = start(extra)
                ours[w.pid] = w
            if len(kills) == KILLS:
                continue
            # Odd kills hit a trial that has reported an epoch, even ones any trial (its setup
            # outlasts its 8 short epochs, so most of those die before training).
            running = [t for t in study.trials if t.state == TrialState.RUNNING
                       and pid_of(t) not in (search.pid, 0, *(k["pid"] for k in kills))
                       and (len(kills) % 2 == 0 or t.intermediate_values)]
            if not running:
                continue
            victim = pid_of(rng.choice(running))
            time.sleep(rng.uniform(0.0, 1.0 if len(kills) % 2 == 0 else 0.5))
            try:
                cmd = Path(f"/proc/{victim}/cmdline").read_bytes().decode().split("\0")[:-1]
                if "search" in cmd:  # a --jobs worker: forked, with the search's command line
                    cmd = extra
                before = optuna.load_study(study_name="chaos", storage=storage).trials
                os.kill(victim, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                continue  # it ended meanwhile
            if victim in ours:
                ours.pop(victim).wait()  # not left a zombie: a restarted worker tells it is dead
            after = optuna.load_study(study_name="chaos", storage=storage).trials
            kept = {t.number: t.value for t in before if t.state in FINISHED}
            cut = [t.number for t in before if t.state == TrialState.RUNNING and pid_of(t) == victim
                   and after[t.number].state not in FINISHED]
            kills.append({"pid": victim, "trials": cut, "kept": kept, "at": round(time.monotonic() - t0, 1)})
            w = start(cmd)
            ours[w.pid] = w
            time.sleep(0.5)
        if (rc := search.wait(timeout=max(1.0, deadline - time.monotonic()))) != 0:
            pytest.fail(f"seed {seed}: the search exited {rc}\n{_tail(tmp_path)}", pytrace=False)
        for w in ours.values():
            if (rc := w.wait(timeout=60)) != 0:
                pytest.fail(f"seed {seed}: worker {w.pid} exited {rc}\n{_tail(tmp_path)}", pytrace=False)
    finally:
        for p in [search, *ours.values()]:
            if p.poll() is None:
                p.kill()
                p.wait()
        (tmp_path / "chaos.txt").write_text(f"{time.monotonic() - t0:.0f} s, seed {seed}\n{kills}\n")

    study = optuna.load_study(study_name="chaos", storage=storage)
    client = MlflowClient(tracking_server)
    runs = client.search_runs([client.get_experiment_by_name("chaos").experiment_id], max_results=1000)
    summary = (seed, kills, [(t.number, t.state.name, t.user_attrs.get("retry_of"),
                              t.system_attrs.get("retry_history"), t.user_attrs.get("resumed_from_epoch"),
                              sorted(t.intermediate_values)) for t in study.trials])
    print(f"chaos seed {seed}: {len(study.trials)} trials in {time.monotonic() - t0:.0f} s; kills "
          f"{[(k['at'], k['trials']) for k in kills]}")
    assert len(kills) == KILLS, summary
    done = finished(study)
    assert len(done) == TRIALS, summary  # exactly the trials asked for
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], summary
    assert not [r for r in runs if r.info.status == "RUNNING"], summary
    for kill in kills:
        assert {n: done.get(n) for n in kill["kept"]} == kill["kept"], summary  # nothing lost or changed
    retries = {pred: t for t in study.trials if (pred := predecessor(t)) is not None}
    by_run = {r.info.run_id: r for r in runs}
    print("killed trial: epochs reported, retry resumed after epoch, queued by", [
        (n, max(study.trials[n].intermediate_values, default=0), retries[n].user_attrs.get("resumed_from_epoch"),
         "heartbeat" if "failed_trial" in retries[n].system_attrs else "restart")
        for kill in kills for n in kill["trials"] if n in retries])
    for number in (n for kill in kills for n in kill["trials"]):
        dead = study.trials[number]
        retry = retries[number]  # every killed trial was queued again, with its parameters
        while not _continued(retry, by_run):  # killed itself before it began training
            assert not retry.intermediate_values.keys() - dead.intermediate_values.keys(), summary
            retry = retries[retry.number]
        assert retry.params == dead.params, summary
        reported = max(dead.intermediate_values, default=0)
        resumed = retry.user_attrs["resumed_from_epoch"]
        assert reported - 1 <= resumed <= reported, summary  # at most one epoch trained twice
        assert {e: retry.intermediate_values[e] for e in dead.intermediate_values if e <= resumed} == \
            {e: v for e, v in dead.intermediate_values.items() if e <= resumed}, summary
        run = by_run[retry.user_attrs["mlflow_run_id"]]
        assert run.data.tags["resumed_from_epoch"] == str(resumed), summary
        continued = run.data.tags.get("resumed_from_run")
        earlier = {study.trials[n].user_attrs.get("mlflow_run_id")
                   for n in attempts_back(study.trials, predecessor(retry))}
        assert continued is None or continued in earlier, summary
        if resumed > 0:  # the curve it continues is an earlier attempt's, through the epoch resumed after
            assert continued is not None, summary
            steps = {m.step for m in client.get_metric_history(continued, "val_accuracy")}
            assert set(range(1, resumed + 1)) <= steps, summary
        if retry.state == TrialState.COMPLETE:  # one learning curve: every epoch once or, redone, twice
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
            assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), summary
    said = (tmp_path / "processes.log").read_text()
    assert "Warning" not in said and "View run" not in said, _tail(tmp_path)  # what a user sees is ours
    best = study.best_trial
    ckpt = load_checkpoint(tmp_path / "studies" / "checkpoints" / "chaos" / "best.pt")
    assert ckpt.metrics["val_accuracy"] == pytest.approx(best.user_attrs.get("float_val_accuracy", best.value))
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["best_trial"] == str(best.number), summary
    left = sorted(p.name for p in (tmp_path / "studies" / "checkpoints" / "chaos").glob("trial-*"))
    assert left == [], summary  # every trial checkpoint settled, every training state removed


def _continued(retry: optuna.trial.FrozenTrial, by_run: dict) -> bool:
    """The retry got as far as its training: its run says from which epoch it resumed (the tag
    is written last, after the dead run's curve)."""
    run = by_run.get(retry.user_attrs.get("mlflow_run_id"))
    return "resumed_from_epoch" in retry.user_attrs and run is not None and "resumed_from_epoch" in run.data.tags


def _tail(root: Path) -> str:
    """Each traceback's last frame and exception, then the log's end (pytest.fail does not cut it)."""
    text = (root / "processes.log").read_text()
    ends = []
    for block in text.split("Traceback (most recent call last):")[1:]:
        lines = [ln for ln in block.splitlines() if ln.strip() and set(ln.strip()) != {"^"}]
        frames = [i for i, ln in enumerate(lines) if ln.lstrip().startswith('File "')]
        ends.append("\n".join(lines[frames[-1] if frames else 0:][:6]))
    return "\n--\n".join(["tracebacks:", *ends, "end of the log:", text[-2500:]])
