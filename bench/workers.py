"""5. Workers: trial throughput of `--jobs 1` against `--jobs 2` at equal total threads (issue 5).

Trials of equal cost, so that throughput measures the workers and not the sampler's luck: a space
with the default model widths fixed, only the learning rate tuned, a fixed number of epochs (no
pruning, no early stop). `--jobs 1` uses torch's default threads (all cores); `--jobs 2` splits
them (one each on 2 cores). `--jobs 1` with one thread is the reference for one worker's speed;
`OMP_WAIT_POLICY=ACTIVE` (OpenMP threads spin while they wait: the default before sceneclf set
PASSIVE in 030e353) shows what that setting is worth. The runs follow each other (not at once):
this figure is a time.
"""

from __future__ import annotations

from bench.common import (
    Context,
    Section,
    finish_search,
    fmt_s,
    one_thread_env,
    start_search,
)

SPACE = """# bench/workers.py: equal-cost trials
[budget]
max_params = 128000
[train]
epochs = {epochs}
early_stop = 100
[params.lr]
type = "float"
low = 1e-3
high = 3e-3
log = true
[params.noise]
type = "categorical"
choices = [0.1]
[params.width_1]
type = "categorical"
choices = [16]
[params.width_2]
type = "categorical"
choices = [32]
[params.width_3]
type = "categorical"
choices = [64]
"""


def run(ctx: Context) -> Section:
    import os

    sec = Section("5. Workers: `--jobs 1` against `--jobs 2` at equal total threads")
    trials, epochs = (6, 3) if ctx.quick else (10, 4)
    space = ctx.tmp / "workers-space.toml"
    space.write_text(SPACE.format(epochs=epochs))
    cores = os.cpu_count() or 1
    common = ["--space", str(space), "--pruner", "none", "--sampler", "random", "--seed", "0"]
    runs = []
    for label, jobs, env in ((f"--jobs 1 ({cores} threads)", 1, None),
                             (f"--jobs 2 ({max(1, cores // 2)} thread each)", 2, None),
                             ("--jobs 1 (1 thread; reference)", 1, one_thread_env()),
                             (f"--jobs 1 ({cores} threads, OMP_WAIT_POLICY=ACTIVE as before 030e353)", 1,
                              {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})):
        ctx.say(f"  {label}: {trials} trials of {epochs} epochs")
        runs.append(finish_search(start_search(ctx, label, f"workers-{jobs}-{len(runs)}", trials,
                                               *common, "--jobs", str(jobs), env=env)))
    base = runs[0]
    rows = []
    for r in runs:
        rows.append([f"`{r.label}`", len(r.finished), fmt_s(r.measured.wall),
                     f"{len(r.finished) / r.measured.wall * 3600:.0f}", f"{r.trials_per_hour():.0f}",
                     f"{r.trials_per_hour() / base.trials_per_hour():.2f}x"])
    sec.add(f"{trials} trials of {epochs} epochs each (default widths, noise 0.1, lr tuned), "
            "`--pruner none`, no MLflow. Trials/h (trials) counts from the first trial's start to the "
            "last one's end; trials/h (wall) includes start-up and data loading.", "")
    sec.table(["command", "trials", "wall", "trials/h (wall)", "trials/h (trials)", "vs --jobs 1"], rows)
    speedup = runs[1].trials_per_hour() / base.trials_per_hour()
    sec.goal("5 workers: trials/h, --jobs 2 / --jobs 1 at equal threads", f"{speedup:.2f}x",
             "> 1 (measure; issue 5)", speedup > 1)
    return sec
