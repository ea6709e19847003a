"""13. Profile: how busy a search keeps the cores, and where one worker's time goes.

Core use: `sceneclf search --trials 16 --seed 0` (default space and pruner, MLflow in the folder)
with `--jobs 1` and with `--jobs auto`, each in a fresh folder: wall time, and the CPU seconds of
the whole process tree (user + system, from `getrusage(RUSAGE_CHILDREN)`) over wall x cores.

Where time goes: the same `--jobs 1` search of 8 trials under cProfile, its self time grouped by
the library the function belongs to (torch's operators, ours, Optuna and SQLAlchemy, MLflow,
plotly, scikit-learn, imports), and the cumulative time of the training loop's parts.
"""

from __future__ import annotations

import os
import pstats
import resource
from pathlib import Path

from bench.common import PYTHON, Context, Section, Watched, fmt_s
from sceneclf.data.pool import usable_cores

GOAL = 0.90  # share of the cores' time a search keeps busy

# (group, test on a pstats key (file, line, name)); the first that matches takes the self time
GROUPS = [
    ("torch operators (C++)", lambda f, n: f == "~" and ("torch" in n or "method 'run_backward'" in n)),
    ("imports", lambda f, n: "importlib" in f or "<frozen" in f),
    ("torch (Python)", lambda f, n: "/torch/" in f),
    ("sceneclf", lambda f, n: "/sceneclf/" in f),
    ("Optuna + SQLAlchemy (storage)", lambda f, n: "/optuna/" in f or "/sqlalchemy/" in f or "sqlite3" in n),
    ("MLflow", lambda f, n: "/mlflow/" in f or "/alembic/" in f),
    ("plotly (figures)", lambda f, n: "/plotly/" in f or "/_plotly_utils/" in f),
    ("scikit-learn (reference)", lambda f, n: "/sklearn/" in f or "/scipy/" in f),
    ("numpy", lambda f, n: "/numpy/" in f or (f == "~" and "numpy" in n)),
    ("sleeping and waiting", lambda f, n: f == "~" and any(w in n for w in ("sleep", "acquire", "select", "poll"))),
]
# functions whose cumulative time tells the training loop's parts
PARTS = [("sceneclf/train.py", "fit", "training loop (fit), all of it"),
         ("sceneclf/train.py", "score", "scoring (validation each epoch, deploy precision)"),
         ("torch/_tensor.py", "backward", "backward passes"),
         ("torch/optim/optimizer.py", "wrapper", "optimizer steps"),
         ("sceneclf/search/objective.py", "on_epoch", "per-epoch reports (Optuna, MLflow, state)"),
         ("sceneclf/tracking/tracker.py", "log_metrics", "MLflow metric logging"),
         ("sceneclf/report/figures.py", "study_figures", "study figures (plotly)"),
         ("sceneclf/tasks/reference.py", "fit_reference", "bag-of-frames reference"),
         ("sceneclf/data/prepare.py", "prepare", "data preparation (cached)")]


def search(ctx: Context, cwd: Path, trials: int, *args: str, profile: Path | None = None) -> tuple[float, float]:
    """(wall, CPU seconds of the process tree) of one search in `cwd`."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SCENECLF_CACHE": str(ctx.cache_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SCENECLF_JOBS", None)
    head = [PYTHON, "-m", "cProfile", "-o", str(profile)] if profile else [PYTHON]
    cmd = [*head, "-m", "sceneclf", "search", "--trials", str(trials), "--seed", "0", "--no-progress", *args]
    ctx.say(f"  {' '.join(cmd[1:])} in {cwd}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = Watched(cmd, cwd / "search.log", cwd=cwd, env=env).wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if m.returncode != 0:
        raise RuntimeError(f"search exited with {m.returncode}:\n{m.log.read_text()[-2000:]}")
    return m.wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def self_time_by_group(stats: pstats.Stats) -> dict[str, float]:
    out = {name: 0.0 for name, _ in GROUPS} | {"other": 0.0}
    for (file, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        group = next((g for g, test in GROUPS if test(file, name)), "other")
        out[group] += tottime
    return out


def cumulative(stats: pstats.Stats, file_end: str, name: str) -> float:
    return sum(ct for (file, _l, n), (_cc, _nc, _tt, ct, _c) in stats.stats.items()  # type: ignore[attr-defined]
               if n == name and file.endswith(file_end))


def run(ctx: Context) -> Section:
    trials = 6 if ctx.quick else 16
    cores = usable_cores()
    sec = Section("13. Profile: core use of a search, and where one worker's time goes")
    rows, use = [], {}
    for jobs in ("1", "auto"):
        wall, cpu = search(ctx, ctx.tmp / f"profile-jobs-{jobs}", trials, "--jobs", jobs)
        use[jobs] = cpu / (wall * cores)
        rows.append([f"`--jobs {jobs}`", fmt_s(wall), f"{cpu:.0f} s", f"{use[jobs]:.0%}"])
    sec.add(f"`sceneclf search --trials {trials} --seed 0` (default space and pruner), fresh folders, "
            f"{cores} usable cores; core use = CPU seconds of the process tree / (wall x cores):", "")
    sec.table(["command", "wall", "CPU (user + system)", "core use"], rows)

    n = max(4, trials // 2)
    prof = ctx.tmp / "profile-cprofile" / "search.prof"
    wall, _ = search(ctx, prof.parent, n, "--jobs", "1", profile=prof)
    stats = pstats.Stats(str(prof))
    total = stats.total_tt  # type: ignore[attr-defined]
    groups = self_time_by_group(stats)
    sec.add("", f"`python -m cProfile -m sceneclf search --trials {n} --seed 0 --jobs 1`: {fmt_s(wall)} wall, "
            f"{total:.0f} s profiled (cProfile's own cost included). Self time by library:", "")
    sec.table(["library", "self time", "share"],
              [[g, f"{t:.1f} s", f"{t / total:.0%}"] for g, t in sorted(groups.items(), key=lambda kv: -kv[1])])
    sec.add("", "Cumulative time of the parts of a search (they nest: fit holds scoring, backward passes, "
            "optimizer steps and the per-epoch reports):", "")
    sec.table(["part", "cumulative", "share"],
              [[label, f"{(t := cumulative(stats, f, name)):.1f} s", f"{t / total:.0%}"] for f, name, label in PARTS])
    sec.goal("13 profile: core use, `--jobs auto`", f"{use['auto']:.0%}", f">= {GOAL:.0%}",
             use["auto"] >= GOAL if not ctx.quick else None)
    sec.goal("13 profile: core use, `--jobs 1`", f"{use['1']:.0%}", "report", None)
    return sec
