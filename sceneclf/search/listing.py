"""`sceneclf studies`: the studies in an Optuna storage, trials by state, best value, when each
last ran."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import optuna

from sceneclf.search.record import StudyRecord, best_feasible, trial_state, trial_value
from sceneclf.search.storage import check_storage, open_storage

STATES = ("COMPLETE", "PRUNED", "OVER_BUDGET", "FAIL", "RUNNING", "WAITING")


@dataclass
class StudyRow:
    name: str
    counts: dict[str, int]
    best_value: float | None
    best_trial: int | None
    last_run: datetime | None
    space: str | None

    def to_dict(self) -> dict:
        return {"study": self.name, "trials": sum(self.counts.values()), "states": self.counts,
                "best_value": self.best_value, "best_trial": self.best_trial,
                "last_run": self.last_run.isoformat(timespec="seconds") if self.last_run else None,
                "space": self.space}


def list_studies(storage_url: str) -> list[StudyRow]:
    check_storage(storage_url)
    storage = open_storage(storage_url)
    rows = []
    for summary in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False),
                          key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {s: 0 for s in STATES}
        for t in trials:
            counts[trial_state(t)] = counts.get(trial_state(t), 0) + 1
        times = [d for t in trials for d in (t.datetime_complete, t.datetime_start) if d is not None]
        best = best_feasible(study)  # a multi-objective study's: its front's most accurate trial
        record = StudyRecord.load(study)
        rows.append(StudyRow(summary.study_name, counts, trial_value(best) if best else None,
                             best.number if best else None, max(times) if times else None,
                             record.space_name if record else None))
    return rows


def format_studies(rows: list[StudyRow], storage_url: str) -> str:
    if not rows:
        return f"no studies in {storage_url}"
    width = max(len("study"), *(len(r.name) for r in rows)) + 2
    head = (f"{'study':<{width}}{'trials':>7}{'complete':>10}{'pruned':>8}{'over_budget':>13}{'failed':>8}"
            f"{'running':>9}   {'best':<16}{'last run':<19}")
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r.counts
        best = f"{r.best_value:.4f} (#{r.best_trial})" if r.best_value is not None else "-"
        last = r.last_run.strftime("%Y-%m-%d %H:%M:%S") if r.last_run else "-"
        lines.append(f"{r.name:<{width}}{sum(c.values()):>7}{c['COMPLETE']:>10}{c['PRUNED']:>8}"
                     f"{c['OVER_BUDGET']:>13}{c['FAIL']:>8}{c['RUNNING'] + c['WAITING']:>9}   "
                     f"{best:<16}{last}")
    return "\n".join(line.rstrip() for line in lines)
