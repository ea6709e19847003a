"""The accuracy-size front: a real multi-objective search (`--objectives accuracy,kb`) on tiny
data, its front, retrain-best --max-kb on it, and the table and figure it leaves behind."""

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from optuna.study import StudyDirection
from optuna.trial import TrialState

from sceneclf.cli import cli
from sceneclf.errors import ConfigError
from sceneclf.search.front import front_trials
from sceneclf.search.record import StudyRecord, best_feasible, trial_value
from sceneclf.tasks.retrain import choose_trial


@pytest.fixture(scope="module")
def front_study(tiny_data, tmp_path_factory):
    """5 trials of 1 epoch over the tiny space, accuracy against kB with a 10 kB budget."""
    from conftest import TINY_SPACE

    root = tmp_path_factory.mktemp("front")
    (root / "tiny.toml").write_text(TINY_SPACE)
    info = {"root": root, "storage": f"sqlite:///{root}/s.db", "tracking": f"sqlite:///{root}/mlflow.db"}
    info["stores"] = ["--study", "f", "--storage", info["storage"], "--tracking-uri", info["tracking"]]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        res = CliRunner().invoke(cli, ["search", "--trials", "5", "--epochs", "1", "--data", str(tiny_data),
                                       "--space", "tiny.toml", "--objectives", "accuracy,kb", "--max-kb", "10",
                                       "--seed", "2", "--jobs", "1", "--no-progress", "--device", "cpu",
                                       *info["stores"]], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    info["output"] = res.output
    info["study"] = optuna.load_study(study_name="f", storage=info["storage"])
    return info


def complete(study):
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_a_multi_objective_study_records_accuracy_and_kb(front_study):
    study = front_study["study"]
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_accuracy", "kb"]
    record = StudyRecord.require(study)
    assert record.objectives == ("accuracy", "kb") and record.pruner == "none"
    assert "no pruning (Optuna cannot prune a multi-objective study)" in front_study["output"]
    done = complete(study)
    assert done
    for t in done:
        assert len(t.values) == 2 and t.values[1] == t.user_attrs["kb"] <= 10
        assert not t.intermediate_values  # nothing reported: nothing to prune on
    for t in study.trials:
        if t.user_attrs.get("over_budget"):  # the budget is still a constraint: never trained
            assert t.state == TrialState.PRUNED and t.constraints["kb"] > 0


def test_front_members_are_non_dominated(front_study):
    study = front_study["study"]
    front, done = front_trials(study), complete(study)
    assert front and [t.values[1] for t in front] == sorted(t.values[1] for t in front)

    def dominates(a, b):
        return (a.values[0] >= b.values[0] and a.values[1] <= b.values[1]
                and (a.values[0] > b.values[0] or a.values[1] < b.values[1]))

    numbers = {t.number for t in front}
    for t in front:
        assert not any(dominates(o, t) for o in done)
    for t in done:
        if t.number not in numbers:
            assert any(dominates(f, t) for f in front)
    best = best_feasible(study)
    assert best.number in numbers and trial_value(best) == max(t.values[0] for t in front)


def test_retrain_best_max_kb_picks_the_most_accurate_front_point_within(front_study, tiny_data):
    study = front_study["study"]
    front = front_trials(study)
    limit = front[len(front) // 2].values[1]
    fits = [t for t in front if t.values[1] <= limit]
    expected = max(fits, key=lambda t: (t.values[0], -t.values[1]))
    assert choose_trial(study, max_kb=limit).number == expected.number
    assert choose_trial(study).number == best_feasible(study).number
    with pytest.raises(ConfigError, match=r"^--max-kb 0.001: no complete trial of study 'f' fits"):
        choose_trial(study, max_kb=0.001)
    out = front_study["root"] / "m.pt"
    res = CliRunner().invoke(cli, ["retrain-best", "--max-kb", f"{limit}", "--epochs", "1", "--out", str(out),
                                   "--device", "cpu", "--data", str(tiny_data), *front_study["stores"]],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"trial {expected.number}: val_accuracy {expected.values[0]:.3f}" in res.output


def test_the_front_is_printed_drawn_and_logged(front_study, tmp_path):
    study = front_study["study"]
    front = front_trials(study)
    assert "Pareto front (" in front_study["output"]
    client = MlflowClient(front_study["tracking"])
    exp = client.get_experiment_by_name("f")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sceneclf.role") == "study")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "pareto_front.json" in artifacts and "figures/pareto_front.html" in figures
    local = client.download_artifacts(parent.info.run_id, "pareto_front.json", str(tmp_path))
    table = json.loads(Path(local).read_text())
    rows = dict(zip(table["columns"], zip(*table["data"])))
    assert list(rows["trial"]) == [t.number for t in front]
    assert list(rows["kb"]) == pytest.approx([t.values[1] for t in front])
    page = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", "--out", str(page), *front_study["stores"]], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "pareto_front" in res.output and "data-figure='pareto_front'" in page.read_text()
    listed = CliRunner().invoke(cli, ["studies", "--storage", front_study["storage"], "--json"])
    assert listed.exit_code == 0
    (row,) = json.loads(listed.output)
    assert row["study"] == "f" and row["best_trial"] == best_feasible(study).number  # the front's most accurate


def test_the_same_study_with_other_objectives_is_refused(front_study, tiny_data):
    res = CliRunner().invoke(cli, ["search", "--trials", "1", "--data", str(tiny_data), "--space",
                                   str(front_study["root"] / "tiny.toml"), "--max-kb", "10", "--jobs", "1",
                                   "--no-progress", *front_study["stores"]])
    assert res.exit_code == 2
    assert "--study f: exists with objectives accuracy,kb; use another --study name or --objectives accuracy,kb" in res.output


def test_a_record_from_before_objectives_reads_as_accuracy(front_study):
    raw = dict(front_study["study"].user_attrs["sceneclf"])
    del raw["objectives"]
    assert StudyRecord.from_attr(raw, "f").objectives == ("accuracy",)


def test_accuracy_against_macs_per_second(tiny_data, tmp_path, monkeypatch):
    from conftest import TINY_SPACE

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    storage = f"sqlite:///{tmp_path}/s.db"
    res = CliRunner().invoke(cli, ["search", "--trials", "1", "--epochs", "1", "--data", str(tiny_data), "--space",
                                   "tiny.toml", "--objectives", "accuracy,macs", "--pruner", "none", "--jobs", "1",
                                   "--no-progress", "--no-mlflow", "--device", "cpu", "--study", "m", "--storage",
                                   storage], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="m", storage=storage)
    assert study.metric_names == ["val_accuracy", "macs_per_second"]
    (t,) = complete(study)
    assert t.values[1] == t.user_attrs["macs_per_second"] and front_trials(study) == [t]
    assert "no pruning" not in res.output  # --pruner none asked for nothing to drop
