"""3. Pruning: the default pruner against `--pruner none`, same seed, sampler and data.

Each pair of searches runs at once, one thread each (the figures are epochs and accuracies, not
times), once per seed; the goal is judged on the mean over seeds, since one search's best accuracy
moves by a clip or two (0.7 point each on the 150-clip validation split) with any change upstream.
Epochs trained = the epochs each trial reported (a pruned trial stops at its last report; an
over-budget trial trains none).

The epochs goal is judged on the pooled ratio, every pruned search's epochs over every unpruned
search's (the compute the pruner saves over the seeds); the mean of the per-seed ratios is shown
beside it. One seed's ratio ranges from a quarter to four fifths, because a pruned search that
finds a better trial early trains it to the limit, so eight seeds are run.

The best validation accuracy is a maximum over every epoch of every completed trial (150 clips,
a clip is 0.7 point), so a search that completes more trials gets more draws at a lucky epoch.
The test accuracy of the checkpoint each search hands back (`best.pt`, on the 150 held-out test
clips) is given beside it: what a user of either search would get.
"""

from __future__ import annotations

from statistics import mean

from bench.common import Context, Section, fmt_s, run_pair
from sceneclf.data.prepare import DataConfig
from sceneclf.search import DEFAULT_PRUNER
from sceneclf.tasks.evaluate import evaluate_model, load_model


def test_accuracy(ctx: Context, study: str) -> float:
    """The test accuracy of the best checkpoint a bench search left in its folder."""
    best = ctx.tmp / study / "studies" / "checkpoints" / study / "best.pt"
    return evaluate_model(load_model(str(best)), DataConfig(), "test", ctx.cache_dir).accuracy


def run(ctx: Context) -> Section:
    sec = Section(f"3. Pruning: the default pruner ({DEFAULT_PRUNER}) against no pruning")
    trials = 12 if ctx.quick else 30
    seeds = ctx.seeds or ((0,) if ctx.quick else tuple(range(8)))
    epochs_limit = 8 if ctx.quick else 20
    rows, ratios, gaps, test_gaps, epochs = [], [], [], [], [0, 0]
    for seed in seeds:
        extra = ["--seed", str(seed), "--sampler", "tpe"] + (["--epochs", "8"] if ctx.quick else [])
        ctx.say(f"  seed {seed}: {trials} trials each, {DEFAULT_PRUNER} and none, in parallel")
        pruned, none = run_pair(ctx, (DEFAULT_PRUNER, f"prune-{DEFAULT_PRUNER}-{seed}", trials, *extra,
                                      "--pruner", DEFAULT_PRUNER),
                                ("none", f"prune-none-{seed}", trials, *extra, "--pruner", "none"))
        tests = [test_accuracy(ctx, f"prune-{name}-{seed}") for name in (DEFAULT_PRUNER, "none")]
        for r, test in zip((pruned, none), tests):
            rows.append([str(seed), f"`--pruner {r.label}`", len(r.finished), r.complete, r.pruned,
                         r.over_budget, f"{r.epochs} / {trials * epochs_limit}", f"{r.best:.3f}",
                         f"{test:.3f}", fmt_s(r.measured.wall)])
        ratios.append(pruned.epochs / none.epochs if none.epochs else float("nan"))
        epochs = [epochs[0] + pruned.epochs, epochs[1] + none.epochs]
        gaps.append(none.best - pruned.best)
        test_gaps.append(tests[1] - tests[0])
        rows.append([str(seed), f"**{DEFAULT_PRUNER} / none**", "", "", "", "", f"**{ratios[-1]:.2f}**",
                     f"**{-gaps[-1] + 0.0:+.3f}**", f"**{-test_gaps[-1] + 0.0:+.3f}**",
                     f"{pruned.measured.wall / none.measured.wall:.2f}"])
    pooled = epochs[0] / epochs[1] if epochs[1] else float("nan")
    gap, test_gap = mean(gaps), mean(test_gaps)
    if len(seeds) > 1:
        rows.append(["all", f"**{DEFAULT_PRUNER} / none, pooled**", "", "", "", "",
                     f"**{epochs[0]} / {epochs[1]} = {pooled:.3f}**", "", "", ""])
        rows.append(["mean", f"**{DEFAULT_PRUNER} / none**", "", "", "", "", f"**{mean(ratios):.3f}**",
                     f"**{-gap + 0.0:+.3f}**", f"**{-test_gap + 0.0:+.3f}**", ""])
    sec.add(f"`sceneclf search --trials {trials} --seed S --sampler tpe --pruner {DEFAULT_PRUNER}|none` "
            f"on the default data and space, seeds {', '.join(map(str, seeds))}, epoch limit {epochs_limit} "
            "(the space's early stopping applies to both).", "")
    sec.table(["seed", "search", "trials", "completed", "pruned", "over budget",
               "epochs trained / trials x limit", "best val accuracy", "its test accuracy",
               "wall (1 thread each, run together)"],
              rows)
    sec.goal(f"3 pruning: epochs trained, {DEFAULT_PRUNER} / none (pooled over seeds; mean of the per-seed "
             f"ratios {mean(ratios):.3f})", f"{pooled:.3f}", "<= 0.5", pooled <= 0.5)
    sec.goal(f"3 pruning: best accuracy, none - {DEFAULT_PRUNER} (mean over seeds)", f"{gap * 100:+.1f} points",
             "<= 1 point", gap <= 0.01)
    sec.goal(f"3 pruning: test accuracy of the model handed back, none - {DEFAULT_PRUNER} (mean over seeds)",
             f"{test_gap * 100:+.1f} points", "report", None)
    return sec
