"""Replay the learning curves of `--pruner none` searches through candidate pruners.

    python bench/replay_pruners.py STORAGE_FILE:STUDY [STORAGE_FILE:STUDY ...]

Each recorded search is replayed in trial order into a fresh in-memory Optuna study per candidate:
every epoch's validation accuracy is reported and `should_prune()` asked, as the objective does.
Printed per search: epochs trained (and the fraction of the unpruned search's), the trial-seconds
they took (each epoch at its trial's mean epoch time) and the best accuracy kept (and its
difference). The sampler does not see the pruning here, so a real search
differs (TPE reacts to pruned trials); use it to shortlist settings for `bench/run.py --only
pruning`, not to replace it.
"""

from __future__ import annotations

import sys
import warnings

import optuna
from optuna.trial import TrialState

from sceneclf.search import DEFAULT_PRUNER
from sceneclf.search.storage import PATIENCE, TOP_THIRD, make_pruner

P = optuna.pruners
CANDIDATES = {
    "none": lambda: P.NopPruner(),
    "shipped (make_pruner default)": lambda: make_pruner(DEFAULT_PRUNER, 24),
    "median (--pruner median)": lambda: make_pruner("median", 24),
    "shipped, from epoch 3": lambda: P.PercentilePruner(TOP_THIRD, **{**PATIENCE, "n_warmup_steps": 3}),
    "shipped, from epoch 2": lambda: P.PercentilePruner(TOP_THIRD, **{**PATIENCE, "n_warmup_steps": 2}),
    "percentile 25": lambda: P.PercentilePruner(25, **PATIENCE),
    "percentile 40": lambda: P.PercentilePruner(40, **PATIENCE),
    "successive halving 4/3": lambda: P.SuccessiveHalvingPruner(min_resource=4, reduction_factor=3),
    "hyperband 2/3": lambda: P.HyperbandPruner(min_resource=2, max_resource=24, reduction_factor=3),
    "patient(median, 1)": lambda: P.PatientPruner(make_pruner("median", 24), patience=1),
}


Curve = tuple[list[float], float]  # per-epoch values, seconds per epoch


def curves(storage_file: str, study: str) -> list[Curve | None]:
    """Per trial: its per-epoch values and mean epoch time, or None for an over-budget trial (pruned
    untrained)."""
    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{storage_file}")
    out: list[Curve | None] = []
    for t in loaded.trials:
        if t.state == TrialState.COMPLETE:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() / len(t.intermediate_values)
            out.append(([t.intermediate_values[k] for k in sorted(t.intermediate_values)], seconds))
        elif t.state == TrialState.PRUNED and not t.intermediate_values:
            out.append(None)
    return out


def replay(recorded: list[Curve | None], pruner: optuna.pruners.BasePruner) -> tuple[int, float, float]:
    """(epochs, trial-seconds, best value) of the recorded trials replayed through `pruner`."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    epochs, seconds, best = 0, 0.0, 0.0
    for recorded_trial in recorded:
        trial = study.ask()
        if recorded_trial is None:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        curve, per_epoch = recorded_trial
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            epochs += 1
            seconds += per_epoch
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, max(curve))
            best = max(best, max(curve))
    return epochs, seconds, best


def main(args: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # PatientPruner
    data = [curves(*arg.rsplit(":", 1)) for arg in args]
    ref = [replay(c, P.NopPruner()) for c in data]
    for name, make in CANDIDATES.items():
        cells = []
        for recorded, (e0, s0, b0) in zip(data, ref):
            e, s, b = replay(recorded, make())
            cells.append(f"{e:4d} ({e / e0:.2f}) {s:5.0f} s ({s / s0:.2f}) {b:.3f} ({(b - b0) * 100:+.1f})")
        print(f"{name:26s}", " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
