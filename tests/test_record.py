"""What a study stores about itself: `StudyRecord` round-trips through Optuna's user attributes."""

import optuna
import pytest

from sceneclf.data.prepare import DataConfig
from sceneclf.errors import ConfigError
from sceneclf.model.budget import Budget
from sceneclf.search.record import RECORD_VERSION, StudyAttr, StudyRecord, top_trials, trial_value

RECORD = StudyRecord(space_name="default", space_text="[params.lr]\n", budget=Budget(max_params=5000),
                     epochs=7, data=DataConfig(data="/d", layout="csv"), fingerprint="f00d",
                     sampler="tpe", pruner="median")


def test_record_round_trips_through_a_real_storage(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr(StudyAttr.RECORD, RECORD.to_attr())
    again = StudyRecord.load(optuna.load_study(study_name="s", storage=storage))
    assert again == RECORD
    assert again.version == RECORD_VERSION


def test_record_without_version_is_version_one():
    raw = RECORD.to_attr()
    del raw["version"]
    assert StudyRecord.from_attr(raw, "s") == RECORD


def test_unknown_record_version_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^study 's': stored by another sceneclf \(record version 99, "
                                          r"this one reads 1\)"):
        StudyRecord.from_attr({**RECORD.to_attr(), "version": 99}, "s")


def test_flat_params_name_every_setting():
    flat = RECORD.flat()
    assert flat["budget.max_params"] == 5000 and flat["data.layout"] == "csv" and flat["epochs"] == 7


def test_top_trials_puts_complete_before_pruned_then_by_value():
    study = optuna.create_study(direction="maximize")
    for value, state in ((0.5, "complete"), (0.9, "pruned"), (0.7, "complete"), (None, "pruned")):
        t = study.ask()
        if state == "complete":
            study.tell(t, value)
        else:
            if value is not None:
                t.report(value, 1)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    assert [t.number for t in top_trials(study)] == [2, 0, 1, 3]
    assert [round(trial_value(t), 2) for t in top_trials(study, 3)] == [0.7, 0.5, 0.9]


def test_a_search_names_its_objective(tmp_path):
    from sceneclf.search.study import SearchSettings, open_study

    settings = SearchSettings(study="named", storage=f"sqlite:///{tmp_path}/s.db")
    open_study(settings, 0, 2)
    assert optuna.load_study(study_name="named", storage=settings.storage).metric_names == ["val_accuracy"]
