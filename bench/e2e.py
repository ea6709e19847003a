"""6. End to end: `sceneclf search --trials 50` on the default data, as a user types it (issue 3
and issue 7.6): fresh storage and MLflow store in an empty working folder, MLflow on, progress bar
on (to a log file), the data cache warm (`$SCENECLF_CACHE` set to the suite's cache).

Run twice, one after the other: as typed (`--jobs auto`: a single-threaded worker per core), and
with `--jobs 1` (one process, its threads over the cores). Core use: CPU seconds of the whole
process tree over wall x usable cores.

Peak memory: the sum of RSS over the command's process tree (all workers), sampled every 0.2 s
(the goal is judged on this, the larger figure); the same sum of PSS, which counts pages the
processes share (torch's libraries, some 300 MiB per process) once; and the kernel's peak RSS of
the largest single process (`/usr/bin/time -f %M`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from bench.common import PYTHON, Context, SearchRun, Section, Watched, fmt_s, folder_study

SPACE = Path(__file__).resolve().parent.parent / "search" / "default.toml"


def one(ctx: Context, name: str, trials: int, *extra: str) -> SearchRun:
    cwd = ctx.tmp / f"e2e-{len(extra)}"
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SCENECLF_CACHE": str(ctx.cache_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [PYTHON, "-m", "sceneclf", "search", "--trials", str(trials), *extra]
    ctx.say(f"  sceneclf search --trials {trials} in {cwd} ({name})")
    m = Watched(cmd, cwd / "log.txt", cwd=cwd, env=env).wait()
    if m.returncode != 0:
        raise RuntimeError(f"search exited with {m.returncode}:\n{m.log.read_text()[-2000:]}")
    study = folder_study(cwd)
    return SearchRun(name, m, study.get_trials(deepcopy=False))


def run(ctx: Context) -> Section:
    import torch

    from sceneclf.data.pool import usable_cores

    trials = 12 if ctx.quick else 50
    sec = Section(f"6. End to end: `sceneclf search --trials {trials}`")
    runs = [one(ctx, f"search --trials {trials}", trials),
            one(ctx, f"search --trials {trials} --jobs 1", trials, "--jobs", "1")]
    limit = trials * tomllib.loads(SPACE.read_text())["train"]["epochs"]
    cores = usable_cores()
    sec.add(f"Command: `sceneclf search --trials {trials}` (defaults: the default space, TPE, its pruner, "
            f"`--jobs auto`, MLflow under ./mlruns, study in ./studies/sceneclf.db; {cores} usable cores, "
            f"torch's default {torch.get_num_threads()} threads), in a fresh folder each time.", "")
    rows = [
        ["wall time"] + [fmt_s(r.measured.wall) for r in runs],
        ["peak memory, whole process tree (sampled)"] + [f"{r.measured.peak_tree_mib:.0f} MiB" for r in runs],
        ["the same as PSS (pages shared between processes counted once)"]
        + [f"{r.measured.peak_tree_pss_mib:.0f} MiB" for r in runs],
        ["peak memory, largest single process (kernel, GNU time)"] + [f"{r.measured.max_single_mib:.0f} MiB" for r in runs],
        ["best validation accuracy"] + [f"{r.best:.3f}" for r in runs],
        ["trials: completed / pruned / over budget"] + [f"{r.complete} / {r.pruned} / {r.over_budget}" for r in runs],
        ["epochs trained / (trials x epoch limit)"] + [f"{r.epochs} / {limit} = {r.epochs / limit:.0%}" for r in runs],
        ["mean wall per finished trial"] + [fmt_s(r.measured.wall / max(1, len(r.finished))) for r in runs],
        ["CPU seconds, whole process tree"] + [f"{r.measured.cpu:.0f} s" for r in runs],
        ["core use (CPU / wall x cores)"] + [f"{r.measured.cpu / (r.measured.wall * cores):.0%}" for r in runs],
    ]
    sec.table(["figure", *[f"`{r.label}`" for r in runs]], rows)
    ship = runs[0]
    sec.add(f"`--jobs auto` / `--jobs 1`, wall time: {ship.measured.wall / runs[1].measured.wall:.2f}.", "")
    judged = not ctx.quick
    for r in runs:
        sec.goal(f"6 e2e: wall time of `sceneclf {r.label}`", fmt_s(r.measured.wall),
                 "< 10 min (50 trials, 2 cores)", (r.measured.wall < 600) if judged else None)
        sec.goal(f"6 e2e: peak memory (process tree) of `sceneclf {r.label}`",
                 f"{r.measured.peak_tree_mib:.0f} MiB", "< 3 GB", r.measured.peak_tree_mib < 3000)
    use = ship.measured.cpu / (ship.measured.wall * cores)
    sec.goal("6 e2e: core use of `sceneclf search` as typed (--jobs auto)", f"{use:.0%}", ">= 90 %",
             use >= 0.9 if judged else None)
    sec.goal("6 e2e (as typed): best validation accuracy", f"{ship.best:.3f}", "report", None)
    sec.goal("6 e2e (as typed): pruned trials; epochs trained / trials x limit",
             f"{ship.pruned}; {ship.epochs / limit:.0%}", "report", None)
    return sec
