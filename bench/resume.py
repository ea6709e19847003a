"""11. Resume: a 20-trial search killed 5 times at random moments, against the same search unkilled.

Both searches train the same 20 configurations (drawn once from the default space by the random
sampler, seed 0, and queued in that order: a restarted process reseeds its sampler, so sampled
trials would differ), one thread each, side by side, `--pruner none`. The killed one gets SIGKILL
at a random moment of a trial's training (after its first reported epoch), 5 times, and is started
again each time as `sceneclf worker` on the study (same target): the dead trial's retry resumes
from its training state. Figures: epochs trained in all (a retry's epochs up to
`resumed_from_epoch` were trained by its dead trial, so they count once), the best trial and its
accuracy in each search.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

from bench.common import PYTHON, Context, Section, finished_trials, one_thread_env, search_command
from sceneclf.search.resume import chain_root

TRIALS, KILLS = 20, 5


def _queue(ctx: Context, storage: str, study: str) -> None:
    """The study with the 20 configurations queued (the same for both searches)."""
    import optuna

    from sceneclf.search.space import load_space, sample

    space = load_space("default")
    n_classes = len(ctx.data().classes)
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    target = optuna.create_study(study_name=study, storage=storage, direction="maximize")
    for _ in range(TRIALS):
        trial = draws.ask()
        sample(trial, space, n_classes)
        draws.tell(trial, 0.0)
        target.enqueue_trial(trial.params)


def _epochs(trials) -> int:
    """Epochs trained: each reported epoch once, less those a retry took over from its dead trial."""
    return sum(sum(1 for e in t.intermediate_values if e > t.user_attrs.get("resumed_from_epoch", 0))
               for t in trials)


def _run(ctx: Context, name: str, kills: int, rng: random.Random, extra: list[str]) -> dict:
    import optuna
    from optuna.trial import TrialState

    folder = ctx.tmp / f"resume-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    _queue(ctx, storage, name)
    cmd = search_command(ctx, name, folder / "optuna.db", TRIALS, "--jobs", "1", "--pruner", "none", *extra)
    worker = [PYTHON, "-m", "sceneclf", "worker", "--study", name, "--storage", storage, "--no-mlflow",
              "--no-progress", "--threads", "1", "--cache-dir", str(ctx.cache_dir)]
    log = folder / "log.txt"
    start = time.perf_counter()
    killed: list[int] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=folder, env=one_thread_env(), stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(0.3)
            if len(killed) >= kills:
                continue
            study = optuna.load_study(study_name=name, storage=storage)
            if not [t for t in study.trials if t.state == TrialState.RUNNING and t.intermediate_values
                    and t.user_attrs.get("worker", "").endswith(f":{proc.pid}")]:
                continue  # not training yet (a dead process's trial is not this one's)
            time.sleep(rng.uniform(0.0, 2.0))  # a random moment of its training (epochs take seconds)
            if proc.poll() is not None:
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed.append(round(time.perf_counter() - start))
            ctx.say(f"  {name}: killed at {killed[-1]} s; started again as a worker")
            proc = subprocess.Popen(worker, cwd=folder, env=one_thread_env(), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"resume-{name}: exited with {proc.returncode}\n{log.read_text()[-2000:]}")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    retries = [t for t in trials if "resumed_from_epoch" in t.user_attrs]
    return {"wall": time.perf_counter() - start, "kills": killed, "epochs": _epochs(trials),
            "finished": len(finished_trials(trials)),
            "best": best, "queued_as": chain_root(trials, best.number),
            "resumed": [t.user_attrs["resumed_from_epoch"] for t in retries]}


def run(ctx: Context) -> Section:
    sec = Section(f"11. Resume: a {TRIALS}-trial search killed {KILLS} times against the same search unkilled")
    extra = ["--epochs", "4" if ctx.quick else "12"]
    ctx.say("  both searches side by side, one thread each")
    ctx.data()  # prepared once, before the two threads ask for it
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(2) as pool:
        calm = pool.submit(_run, ctx, "calm", 0, random.Random(0), extra)
        chaos = pool.submit(_run, ctx, "killed", KILLS, random.Random(1), extra)
        a, b = calm.result(), chaos.result()
    sec.add(f"The same {TRIALS} queued configurations of the default space, `sceneclf search --jobs 1 --pruner none "
            f"{' '.join(extra)}`, one thread each; the killed one restarted as `sceneclf worker` after each kill.", "")
    sec.table(["search", "kills (s after start)", "finished", "epochs trained", "retries resumed after epoch",
               "best trial (queued as)", "best val_accuracy", "wall"],
              [["unkilled", "-", a["finished"], a["epochs"], "-", f"{a['best'].number} ({a['queued_as']})",
                f"{a['best'].value:.3f}", f"{a['wall']:.0f} s"],
               ["killed", ", ".join(map(str, b["kills"])), b["finished"], b["epochs"],
                ", ".join(map(str, b["resumed"])), f"{b['best'].number} ({b['queued_as']})",
                f"{b['best'].value:.3f}", f"{b['wall']:.0f} s"]])
    extra_epochs = b["epochs"] - a["epochs"]
    sec.goal(f"11 resume: epochs trained again over {len(b['kills'])} kills", f"{extra_epochs:+d}", f"<= {KILLS}",
             None if ctx.quick else extra_epochs <= KILLS)
    same = a["queued_as"] == b["queued_as"] and a["best"].value == b["best"].value
    sec.goal("11 resume: the same queued configuration wins, at the same accuracy",
             f"{a['queued_as']}: {a['best'].value:.4f} / {b['queued_as']}: {b['best'].value:.4f}",
             "same", None if ctx.quick else same)
    return sec
