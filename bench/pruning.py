"""3. Pruning: the default pruner (median) against `--pruner none`, same seed, sampler and data.

Both searches run at once, one thread each (the figures are epochs and accuracies, not times).
Epochs trained = the epochs each trial reported (a pruned trial stops at its last report; an
over-budget trial trains none).
"""

from __future__ import annotations

from bench.common import Context, Section, fmt_s, run_pair


def run(ctx: Context) -> Section:
    sec = Section("3. Pruning: median pruner against no pruning")
    trials = 12 if ctx.quick else 30
    extra = ["--seed", "0", "--sampler", "tpe"] + (["--epochs", "8"] if ctx.quick else [])
    ctx.say(f"  {trials} trials each, median and none, in parallel")
    med, none = run_pair(ctx, ("median", "prune-median", trials, *extra, "--pruner", "median"),
                         ("none", "prune-none", trials, *extra, "--pruner", "none"))
    epochs_limit = 8 if ctx.quick else 20
    rows = []
    for r in (med, none):
        rows.append([f"`--pruner {r.label}`", len(r.finished), r.complete, r.pruned, r.over_budget,
                     f"{r.epochs} / {trials * epochs_limit}", f"{r.best:.3f}", fmt_s(r.measured.wall)])
    ratio = med.epochs / none.epochs if none.epochs else float("nan")
    gap = none.best - med.best
    rows.append(["**median / none**", "", "", "", "", f"**{ratio:.2f}**", f"**{-gap:+.3f}**",
                 f"{med.measured.wall / none.measured.wall:.2f}"])
    sec.add(f"`sceneclf search --trials {trials} {' '.join(extra)} --pruner median|none` on the default "
            f"data and space, epoch limit {epochs_limit} (the space's early stopping applies to both).", "")
    sec.table(["search", "trials", "completed", "pruned", "over budget", "epochs trained / trials x limit",
               "best val accuracy", "wall (1 thread each, run together)"], rows)
    sec.goal("3 pruning: epochs trained, median / none", f"{ratio:.2f}", "<= 0.5", ratio <= 0.5)
    sec.goal("3 pruning: best accuracy, none - median", f"{gap * 100:+.1f} points", "<= 1 point",
             gap <= 0.01)
    return sec
