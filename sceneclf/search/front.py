"""The accuracy-size front of a multi-objective study (`--objectives accuracy,kb` or
`accuracy,macs`): its trials (`study.best_trials`, feasible and non-dominated), smallest first,
as rows and as the table the search prints."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from sceneclf.search.record import StudyRecord, TrialAttr

SIZE_COLUMNS = {"kb": "kb", "macs": "macs_per_second"}  # the second objective's column in the rows


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front, smallest (second objective) first; empty for a single-objective study."""
    if len(study.directions) < 2:
        return []
    return sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0], t.number))


def front_rows(study: optuna.Study) -> list[dict]:
    """One row per front trial: number, accuracy, parameters, kB, MACs per second, widths, the
    float accuracy where the study scores at another precision."""
    rows = []
    for t in front_trials(study):
        attrs = t.user_attrs
        row = {"trial": t.number, "val_accuracy": t.values[0], "n_params": attrs.get(TrialAttr.N_PARAMS),
               "kb": attrs.get(TrialAttr.KB), "macs_per_second": attrs.get(TrialAttr.MACS_PER_SECOND),
               "widths": ",".join(map(str, attrs.get(TrialAttr.WIDTHS, [])))}
        if TrialAttr.FLOAT_ACCURACY in attrs:
            row["float_val_accuracy"] = attrs[TrialAttr.FLOAT_ACCURACY]
        rows.append(row)
    return rows


def front_table(study: optuna.Study) -> str:
    """The front as the search summary prints it."""
    record = StudyRecord.load(study)
    precision = record.budget.precision if record else "fp32"
    rows = front_rows(study)
    head = f"{'trial':>5} {'val_acc':>7} {'params':>8} {'kB':>8} {'MACs/s':>13}  widths"
    lines = [f"Pareto front ({len(rows)} trial(s); accuracy at {precision}, kB at {precision}):", head,
             "-" * len(head)]
    for r in rows:
        lines.append(f"{r['trial']:>5} {r['val_accuracy']:>7.3f} {r['n_params'] or 0:>8,} {r['kb'] or 0:>8.1f} "
                     f"{r['macs_per_second'] or 0:>13,.0f}  {r['widths']}")
    if not rows:
        lines.append("(no complete trial within the budget yet)")
    return "\n".join(lines)
