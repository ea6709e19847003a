"""4. Sampler: best validation accuracy after 20 trials, TPE against random, 3 seeds.

Each seed's TPE and random searches run at once, one thread each (the figure is an accuracy).
Both use the default pruner; "after 20 trials" counts finished trials as the search does
(completed, pruned and over-budget ones).
"""

from __future__ import annotations

from bench.common import Context, Section, run_pair
from sceneclf.search import DEFAULT_PRUNER

SEEDS = (0, 1, 2)
TRIALS = 20


def run(ctx: Context) -> Section:
    sec = Section(f"4. Sampler: TPE against random, best validation accuracy after {TRIALS} trials")
    extra = ["--epochs", "6"] if ctx.quick else []
    rows, tpe, rnd = [], [], []
    for seed in SEEDS:
        ctx.say(f"  seed {seed}: tpe and random in parallel")
        a, b = run_pair(ctx, ("tpe", f"sampler-tpe-{seed}", TRIALS, "--sampler", "tpe", "--seed", str(seed), *extra),
                        ("random", f"sampler-random-{seed}", TRIALS, "--sampler", "random", "--seed", str(seed), *extra))
        tpe.append(a.best_after(TRIALS))
        rnd.append(b.best_after(TRIALS))
        rows.append([seed, f"{tpe[-1]:.3f}", f"{rnd[-1]:.3f}", f"{tpe[-1] - rnd[-1]:+.3f}",
                     f"{a.over_budget} / {b.over_budget}", f"{a.pruned} / {b.pruned}",
                     f"{a.epochs} / {b.epochs}"])
    mean_tpe, mean_rnd = sum(tpe) / len(tpe), sum(rnd) / len(rnd)
    rows.append(["**mean**", f"**{mean_tpe:.3f}**", f"**{mean_rnd:.3f}**", f"**{mean_tpe - mean_rnd:+.3f}**",
                 "", "", ""])
    sec.add(f"`sceneclf search --trials {TRIALS} --sampler tpe|random --seed S {' '.join(extra)}` "
            f"(default space, default pruner: {DEFAULT_PRUNER}).", "")
    sec.table(["seed", "TPE best", "random best", "TPE - random", "over budget (TPE / random)",
               "pruned (TPE / random)", "epochs (TPE / random)"], rows)
    sec.goal(f"4 sampler: mean best accuracy after {TRIALS} trials, TPE - random",
             f"{(mean_tpe - mean_rnd) * 100:+.1f} points", "> 0", mean_tpe > mean_rnd)
    return sec
