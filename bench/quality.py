"""8. Quality: what a search finds against the bag-of-frames reference, and what the augmentation
dimensions buy.

For each seed, in fresh folders: `sceneclf search --trials 50 --seed S` then `sceneclf
retrain-best` with the default space, and again with the default space less its augmentation
dimensions; and the poor configuration `sceneclf train --widths 4,8 --lr 1e-4 --epochs 20`. Read from the
stores: the reference's test accuracy (stored with the study), the best trial's validation
accuracy, the median completed trial's, and the retrained model's test accuracy, overall and on
the test devices that neither train nor val holds ("unheard devices": s4-s6 on the default data).
Run on the default data and, for the first seed only, on a second data set made by
`bench/second_data.py` (not with `BENCH_SECOND_DATA=0`; alone with `BENCH_DEFAULT_DATA=0`).
For the first seed on the default data, also `sceneclf search --sampler random --pruner none` of
`BENCH_UNPRUNED_TRIALS` trials (default 20; 0 skips it): the median of configurations drawn from
the space and trained to the end, which no pruner chose.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path

import optuna

from bench.common import PYTHON, Context, Section, Watched, fmt_s, folder_study
from sceneclf.search.space import AUGMENT_PARAMS

SEEDS = (0, 1, 2)
AUGMENT = tuple(AUGMENT_PARAMS)
SPACES = Path(__file__).resolve().parent.parent / "search"
SPACE = SPACES / "default.toml"
POOR = ("--widths", "4,8", "--lr", "1e-4", "--epochs", "20")
UNPRUNED_TRIALS = int(os.environ.get("BENCH_UNPRUNED_TRIALS", "20"))


@dataclass
class Outcome:
    reference: float
    best_val: float
    median_val: float
    test: float
    wall: float
    unheard: float = float("nan")  # test accuracy on devices neither train nor val holds
    trial_test: float = float("nan")  # the best trial's own checkpoint (train split only) on test
    trial_unheard: float = float("nan")  # the same, on devices the train split never heard
    median_trained: float = float("nan")  # median trained trial, a pruned one at its best epoch so far
    epochs: str = ""  # retrain-best's epochs / the best trial's best epoch
    unpruned_median: float = float("nan")  # median of random configurations trained to the end (first seed)


def median_trained(study: optuna.Study) -> float:
    """Median best validation accuracy of the trials that trained at least one epoch, completed or
    pruned (a pruned trial at its best epoch before it was stopped): what the configurations the
    sampler tried reached, not only the ones the pruner let finish."""
    best = [t.value if t.state == optuna.trial.TrialState.COMPLETE else max(t.intermediate_values.values())
            for t in study.trials if t.intermediate_values]
    return statistics.median(best)


def sceneclf(ctx: Context, cwd: Path, *args: str) -> float:
    env = {**os.environ, "SCENECLF_CACHE": str(ctx.cache_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    ctx.say(f"  sceneclf {' '.join(args)} in {cwd}")
    m = Watched([PYTHON, "-m", "sceneclf", *args], cwd / f"{args[0]}.log", cwd=cwd, env=env).wait()
    if m.returncode != 0:
        raise RuntimeError(f"sceneclf {args[0]} exited with {m.returncode}:\n{m.log.read_text()[-2000:]}")
    return m.wall


def search(ctx: Context, cwd: Path, seed: int, trials: int, data: list[str], space: Path) -> Outcome:
    import torch

    cwd.mkdir(parents=True, exist_ok=True)
    wall = sceneclf(ctx, cwd, "search", "--trials", str(trials), "--seed", str(seed), "--space", str(space),
                    "--no-progress", *data)
    sceneclf(ctx, cwd, "retrain-best", "--seed", str(seed), "--out", "model.pt", *data)
    sceneclf(ctx, cwd, "evaluate", "studies/checkpoints/sceneclf/best.pt", "--json", *data)
    scored = json.loads(next(line for line in reversed((cwd / "evaluate.log").read_text().splitlines())
                             if line.startswith("{")))
    study = folder_study(cwd)
    done = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    metrics = torch.load(cwd / "model.pt", weights_only=True)["metrics"]
    return Outcome(study.user_attrs["reference"]["reference_test_accuracy"], study.best_value,
                   statistics.median(done), float(metrics["test_accuracy"]), wall,
                   float(metrics.get("test_accuracy_unheard_devices", float("nan"))),
                   float(scored["accuracy"]), float(scored.get("accuracy_unheard_devices", float("nan"))),
                   median_trained(study), f"{int(metrics['epochs'])} / {study.best_trial.user_attrs['best_epoch']}")


def unpruned(ctx: Context, cwd: Path, seed: int, trials: int, data: list[str]) -> tuple[float, int, float]:
    """(median validation accuracy, trials trained, wall) of `trials` configurations drawn at random
    from the default space and each trained to the end: the space as a whole, not what a pruner kept."""
    cwd.mkdir(parents=True, exist_ok=True)
    wall = sceneclf(ctx, cwd, "search", "--trials", str(trials), "--seed", str(seed), "--sampler", "random",
                    "--pruner", "none", "--space", str(SPACE), "--no-mlflow", "--no-progress", *data)
    study = folder_study(cwd)
    trained = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return statistics.median(trained), len(trained), wall


def poor(ctx: Context, cwd: Path, data: list[str]) -> float:
    import torch

    cwd.mkdir(parents=True, exist_ok=True)
    sceneclf(ctx, cwd, "train", *POOR, "--out", "poor.pt", *data)
    return float(torch.load(cwd / "poor.pt", weights_only=True)["metrics"]["test_accuracy"])


def without_augmentation(space: Path, out: Path) -> Path:
    """`space` less its augmentation tables, as a space file of its own."""
    text, kept, skip = space.read_text(), [], False
    for line in text.splitlines():
        if line.startswith("[params."):
            skip = line.strip()[len("[params."):-1] in AUGMENT
        kept.append("" if skip else line)
    out.write_text("\n".join(kept) + "\n")
    params = set(tomllib.loads(out.read_text())["params"])
    assert params == set(tomllib.loads(text)["params"]) - set(AUGMENT) and not params & set(AUGMENT)
    return out


def one_data_set(ctx: Context, sec: Section, name: str, data: list[str], seeds: tuple[int, ...],
                 trials: int) -> tuple[list[Outcome], list[Outcome]]:
    plain_space = without_augmentation(SPACE, ctx.tmp / "no-augmentation.toml")
    rows, trial_rows, full, plain = [], [], [], []
    for seed in seeds:
        work = ctx.tmp / f"quality-{name}-{seed}"
        a = search(ctx, work / "default", seed, trials, data, SPACE)
        b = search(ctx, work / "no-augmentation", seed, trials, data, plain_space)
        p = poor(ctx, work / "poor", data)
        full.append(a)
        plain.append(b)
        rows.append([seed, f"{a.reference:.3f}", f"{a.best_val:.3f}", f"{a.median_val:.3f}", f"{a.test:.3f}",
                     f"{a.unheard:.3f}", f"{b.best_val:.3f}", f"{b.test:.3f}", f"{b.unheard:.3f}", f"{p:.3f}",
                     fmt_s(a.wall), fmt_s(b.wall)])
        trial_rows.append([seed, f"{a.trial_test:.3f}", f"{a.trial_unheard:.3f}", f"{b.trial_test:.3f}",
                           f"{b.trial_unheard:.3f}", a.epochs, b.epochs])
    sec.add(f"**{name}**", "")
    sec.table(["seed", "reference test", "best val", "median val", "retrain-best test", "test, unheard devices",
               "no-aug best val", "no-aug test", "no-aug test, unheard devices", "poor config test", "search wall",
               "no-aug wall"], rows)
    sec.add("", "The best trial's own checkpoint, trained on the train split only (retrain-best also fits "
            "val, and hears its devices), on the test split:", "")
    sec.table(["seed", "best trial test", "best trial test, unheard devices", "no-aug best trial test",
               "no-aug best trial test, unheard devices", "retrain-best epochs / trial's best epoch",
               "no-aug: the same"], trial_rows)
    if UNPRUNED_TRIALS and not data:
        trials_random = 4 if ctx.quick else UNPRUNED_TRIALS
        median_val, n, wall = unpruned(ctx, ctx.tmp / f"quality-{name}-unpruned", seeds[0], trials_random, data)
        full[0].unpruned_median = median_val
        sec.add("", f"`sceneclf search --trials {trials_random} --seed {seeds[0]} --sampler random --pruner none`: "
                f"{n} configuration(s) within the budget trained to the end, median validation accuracy "
                f"{median_val:.3f} against the default search's best {full[0].best_val:.3f} ({fmt_s(wall)}).")
    return full, plain


def mean(xs) -> float:
    return sum(xs) / len(xs)


def run(ctx: Context) -> Section:
    from bench.second_data import write_second_data_set

    seeds = ctx.seeds or ((0,) if ctx.quick else SEEDS)
    trials = 12 if ctx.quick else 50
    sec = Section(f"8. Quality: `sceneclf search --trials {trials}` + `retrain-best` against the reference")
    sec.add(f"Seeds {', '.join(map(str, seeds))}; the default space, and the default space less its "
            f"augmentation parameters (no-aug); poor configuration `sceneclf train {' '.join(POOR)}`.", "")
    default, plain = [], []
    if os.environ.get("BENCH_DEFAULT_DATA", "1") != "0":  # 0: a run of the second data set alone
        default, plain = one_data_set(ctx, sec, "default data", [], seeds, trials)
    other, other_plain = [], []
    if os.environ.get("BENCH_SECOND_DATA", "1") != "0":  # 0: a run that only adds seeds of the default data
        second = write_second_data_set(ctx.cache_dir / "second-data")
        # the second data set checks that the gains carry over; one seed keeps the run near an hour
        other, other_plain = one_data_set(ctx, sec, "second data set (bench/second_data.py)",
                                          ["--data", str(second)], seeds[:1], trials)
    if not default:
        return _second_goals(sec, other, other_plain)
    judged = not ctx.quick
    gap = mean([o.test - o.reference for o in default])
    gain = mean([a.test - b.test for a, b in zip(default, plain)])
    sec.goal("8 quality: retrain-best test - reference test (default data, mean)", f"{gap * 100:+.1f} points",
             ">= +30 points", gap >= 0.30 if judged else None)
    sec.goal("8 quality: augmentation dimensions, test accuracy gained (default data, mean)",
             f"{gain * 100:+.1f} points", ">= +5 points", gain >= 0.05 if judged else None)
    trial_gain = mean([a.trial_test - b.trial_test for a, b in zip(default, plain)])
    sec.goal("8 quality: augmentation dimensions, best trial's checkpoint test accuracy gained (default data, mean)",
             f"{trial_gain * 100:+.1f} points", "report", None)
    sec.goal("8 quality: reference test accuracy (default data, mean)", f"{mean([o.reference for o in default]):.3f}",
             "<= 0.55", mean([o.reference for o in default]) <= 0.55 if judged else None)
    sec.goal("8 quality: retrain-best test accuracy (default data, mean)", f"{mean([o.test for o in default]):.3f}",
             ">= 0.85", mean([o.test for o in default]) >= 0.85 if judged else None)
    under = [o.best_val - o.median_val for o in default]
    sec.goal("8 quality: median completed trial under the best (validation, default data, mean)",
             f"{mean(under) * 100:.1f} points ({', '.join(f'{u * 100:.1f}' for u in under)})", ">= 15 points",
             mean(under) >= 0.15 if judged else None)
    trained = [o.best_val - o.median_trained for o in default]
    sec.goal("8 quality: median trained trial under the best, pruned ones at their best epoch (default data, mean)",
             f"{mean(trained) * 100:.1f} points ({', '.join(f'{u * 100:.1f}' for u in trained)})", "report", None)
    first = default[0]
    if not math.isnan(first.unpruned_median):
        sec.goal("8 quality: median random configuration trained to the end under the best (validation, "
                 "default data, first seed)", f"{(first.best_val - first.unpruned_median) * 100:.1f} points",
                 ">= 15 points (no pruner)", first.best_val - first.unpruned_median >= 0.15 if judged else None)
    sec.goal("8 quality: search wall time (default data, longest)", fmt_s(max(o.wall for o in default)),
             "< 10 min", max(o.wall for o in default) < 600 if judged else None)
    return _second_goals(sec, other, other_plain)


def _second_goals(sec: Section, other: list[Outcome], other_plain: list[Outcome]) -> Section:
    if not other:
        return sec
    other_gap = mean([o.test - o.reference for o in other])
    sec.goal("8 quality: retrain-best test - reference test (second data set, mean)",
             f"{other_gap * 100:+.1f} points", "report", None)
    sec.goal("8 quality: augmentation gain (second data set, mean)",
             f"{mean([a.test - b.test for a, b in zip(other, other_plain)]) * 100:+.1f} points", "report", None)
    return sec
