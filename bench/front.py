"""12. Front: what halving the parameter memory costs, on the DCASE low-complexity budget.

In a fresh folder: `sceneclf search --objectives accuracy,kb --space dcase-low-complexity --trials
50 --seed 0` (int8, at most 128 kB of parameters and 30M MACs per second of audio), then `sceneclf
retrain-best --max-kb 128` and `--max-kb 64`: the most accurate point of the Pareto front within
each size, trained again on train + val and scored on the test split at int8 (as it ships) and in
float. The front itself is read from the study (`search.front.front_rows`). `BENCH_FRONT_TRIALS`
sets the trial count: a multi-objective study cannot prune, so each trial runs to early stopping.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import Context, Section, fmt_s, folder_study
from bench.quality import sceneclf
from sceneclf.search.front import front_rows
from sceneclf.search.record import TrialAttr
from sceneclf.tasks.retrain import choose_trial

SIZES = (128, 64)  # kB at int8: the DCASE limit and half of it
GOAL = 3.0  # points of test accuracy the half-size point may lose


def retrained(ctx: Context, cwd: Path, kb: int) -> dict:
    import torch

    sceneclf(ctx, cwd, "retrain-best", "--max-kb", str(kb), "--seed", "0", "--out", f"model-{kb}.pt")
    return torch.load(cwd / f"model-{kb}.pt", weights_only=True)["metrics"]


def run(ctx: Context) -> Section:
    trials = 12 if ctx.quick else int(os.environ.get("BENCH_FRONT_TRIALS", 50))
    cwd = ctx.tmp / "front"
    cwd.mkdir(parents=True, exist_ok=True)
    sec = Section("12. Front: accuracy against parameter memory at int8 (DCASE low-complexity budget)")
    wall = sceneclf(ctx, cwd, "search", "--objectives", "accuracy,kb", "--space", "dcase-low-complexity",
                    "--trials", str(trials), "--seed", "0", "--no-progress")
    study = folder_study(cwd)
    states = [t.state.name for t in study.trials]
    sec.add(f"`sceneclf search --objectives accuracy,kb --space dcase-low-complexity --trials {trials} --seed 0` "
            f"on the default data: {fmt_s(wall)}; {states.count('COMPLETE')} trials complete, "
            f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed. The Pareto front "
            "(validation accuracy at int8 against kB at int8):", "")
    rows = sorted(front_rows(study), key=lambda r: r["kb"])
    sec.table(["trial", "val acc (int8)", "val acc (float)", "kB", "MACs/s", "widths"],
              [[r["trial"], f"{r['val_accuracy']:.3f}", f"{r.get('float_val_accuracy', float('nan')):.3f}",
                f"{r['kb']:.1f}", f"{r['macs_per_second'] / 1e6:.1f}M", r["widths"]] for r in rows])
    got = {}
    for kb in SIZES:
        trial = choose_trial(study, max_kb=kb)
        got[kb] = (trial, retrained(ctx, cwd, kb))
    sec.add("`sceneclf retrain-best --max-kb K`: the most accurate front point within K kB, trained again on "
            "train + val and scored on the 300 test clips.", "")
    sec.table(["--max-kb", "trial", "kB", "val acc (int8)", "test acc int8", "test acc float",
               "test acc float, unheard devices"],
              [[kb, t.number, f"{t.user_attrs[TrialAttr.KB]:.1f}", f"{t.values[0]:.3f}", f"{m['test_accuracy_int8']:.3f}",
                f"{m['test_accuracy']:.3f}", f"{m.get('test_accuracy_unheard_devices', float('nan')):.3f}"]
               for kb, (t, m) in got.items()])
    full, half = (got[kb][1]["test_accuracy_int8"] for kb in SIZES)
    loss = (full - half) * 100
    sec.goal(f"12 front: test accuracy at int8, {SIZES[1]} kB point against the {SIZES[0]} kB best (points lost)",
             f"{loss:+.1f}", f"<= {GOAL:g}", loss <= GOAL if not ctx.quick else None)
    sec.goal("12 front: points on the front", str(len(rows)), "report", None)
    return sec
