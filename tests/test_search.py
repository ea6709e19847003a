"""End-to-end searches on tiny data with a real Optuna storage and a real MLflow store."""

import mlflow
import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from conftest import native_bf16

import sceneclf.search as search_names
import sceneclf.search.objective as search_mod
from sceneclf.cli import cli
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.checkpoint import load_checkpoint
from sceneclf.search.storage import make_pruner


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {"storage": f"sqlite:///{tmp_path}/studies/s.db",
            "tracking": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}


AUGMENT_FIELDS = tuple(AugmentConfig.__dataclass_fields__)


def run_search(stores, data, *extra, study="t"):
    args = ["search", "--data", str(data), "--study", study, "--storage", stores["storage"],
            "--tracking-uri", stores["tracking"], "--no-progress", "--device", "cpu", *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def child_runs(stores, study="t"):
    client = MlflowClient(stores["tracking"])
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sceneclf.role") == "study"]
    children = [r for r in runs if r.data.tags.get("sceneclf.role") == "trial"]
    return client, exp, parents, children


def test_search_trials_and_runs_agree(stores, tiny_data, tmp_path):
    res = run_search(stores, tiny_data, "--trials", "4", "--epochs", "2", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert "best checkpoint:" in res.output and "mlflow ui --backend-store-uri" in res.output
    study = optuna.load_study(study_name="t", storage=stores["storage"])
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    client, exp, parents, children = child_runs(stores)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len(parents) == 1 and len(children) == len(study.trials)
    by_id = {r.info.run_id: r for r in children}
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for t in study.trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["sceneclf.trial"] == str(t.number)
        assert run.data.tags["sceneclf.study"] == "t"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == status[t.state.name]
        assert float(run.data.params["lr"]) == pytest.approx(t.params["lr"])
        assert run.data.metrics["n_params"] == t.user_attrs["n_params"]
        assert {f"augment.{k}" for k in AUGMENT_FIELDS} <= set(run.data.params)  # each a flat param
        assert run.data.params["train_precision"] == ("bf16-mixed" if native_bf16() else "fp32")
        if t.state == TrialState.COMPLETE:
            assert run.data.tags["state"] == "COMPLETE"
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert [m.step for m in history] == sorted(t.intermediate_values)
            assert max(m.value for m in history) == pytest.approx(t.value)
            assert client.list_artifacts(run.info.run_id, "checkpoint")
            assert any(a.path == "model_summary.txt" for a in client.list_artifacts(run.info.run_id))
    best = study.best_trial
    parent = parents[0]
    assert parent.data.tags["best_trial"] == str(best.number)
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "figures")]
    for fig in ("optimization_history", "parallel_coordinate", "intermediate_values", "accuracy_vs_params"):
        assert f"figures/{fig}.html" in artifacts
    local = client.download_artifacts(parent.info.run_id, parent.data.tags["best_checkpoint"], str(tmp_path))
    ckpt = load_checkpoint(local)
    assert ckpt.metrics["val_accuracy"] == pytest.approx(best.value)


def test_over_budget_never_trains(stores, tiny_data, monkeypatch):
    calls = []
    real = search_mod.train_model

    def spy(features, model_cfg, *args, **kwargs):
        calls.append(model_cfg)
        return real(features, model_cfg, *args, **kwargs)

    monkeypatch.setattr(search_mod, "train_model", spy)
    res = run_search(stores, tiny_data, "--trials", "6", "--epochs", "1", "--max-params", "3000")
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="t", storage=stores["storage"])
    over = [t for t in study.trials if t.user_attrs.get("over_budget")]
    assert over, "the default space should produce some configurations over 3,000 parameters"
    for t in over:
        assert t.state == TrialState.PRUNED and t.user_attrs["n_params"] > 3000
        assert t.constraints["params"] > 0 and not t.intermediate_values
    from sceneclf.model.budget import count_params
    assert all(count_params(c) <= 3000 for c in calls)
    assert len(calls) == len(study.trials) - len(over)
    _, _, _, children = child_runs(stores)
    over_runs = [r for r in children if r.data.tags["state"] == "OVER_BUDGET"]
    assert len(over_runs) == len(over) and all(r.info.status == "KILLED" for r in over_runs)


def test_forced_pruning_marks_run_killed(stores, tiny_data, tmp_path):
    """A pruner that always prunes (a threshold no accuracy reaches): every trial is pruned at its
    first epoch, and its MLflow run is KILLED with the per-epoch metric logged."""
    from sceneclf.data.audio import AudioConfig
    from sceneclf.data.prepare import DataConfig, prepare
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.search.space import load_space
    from sceneclf.tracking.tracker import MlflowTracker

    data = prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(), tmp_path / "cache")
    tracker = MlflowTracker(stores["tracking"], "pruned")
    parent = tracker.parent_run("pruned", {})
    space = load_space("default")
    objective = search_mod.Objective(data, space, space.budget, "pruned", tracker, parent,
                                     search_mod.Path("ck"), epochs=3)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01),
                                sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=3)
    trained = [t for t in study.trials if not t.user_attrs.get("over_budget")]
    assert trained and all(t.state == TrialState.PRUNED for t in study.trials)
    assert all(list(t.intermediate_values) == [1] for t in trained)
    runs = {r.info.run_id: r for r in child_runs(stores, "pruned")[3]}
    for t in trained:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "KILLED" and run.data.tags["state"] == "PRUNED"
        assert "val_accuracy" in run.data.metrics


def test_resume_adds_trials_to_the_same_study(stores, tiny_data):
    assert run_search(stores, tiny_data, "--trials", "2", "--epochs", "1").exit_code == 0
    assert run_search(stores, tiny_data, "--trials", "2", "--epochs", "1").exit_code == 0
    study = optuna.load_study(study_name="t", storage=stores["storage"])
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials)
    _, _, parents, children = child_runs(stores)
    assert len(parents) == 1 and len(children) == len(study.trials)


def test_other_space_under_same_study_is_refused(stores, tiny_data):
    assert run_search(stores, tiny_data, "--trials", "1", "--epochs", "1").exit_code == 0
    res = CliRunner().invoke(cli, ["search", "--data", str(tiny_data), "--study", "t", "--storage",
                                   stores["storage"], "--tracking-uri", stores["tracking"], "--no-progress",
                                   "--trials", "1", "--space", "dcase-low-complexity"])
    assert res.exit_code == 2
    assert "--study t: exists with a different search space" in res.output


def test_retrain_best_registers_a_loadable_model(stores, tiny_data, tmp_path):
    from conftest import TINY_SPACE

    from sceneclf.data.audio import AudioConfig
    from sceneclf.data.prepare import DataConfig, prepare
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.tracking.models import load_model
    from sceneclf.train import score

    extra = '[params.batch_size]\ntype = "categorical"\nchoices = [16, 32]\n[params.noise]\ntype = "float"\nlow = 0.0\nhigh = 0.2\n'
    (tmp_path / "tiny.toml").write_text(TINY_SPACE + extra)  # every trial fits and completes
    assert run_search(stores, tiny_data, "--trials", "3", "--epochs", "2", "--space", "tiny.toml").exit_code == 0
    study = optuna.load_study(study_name="t", storage=stores["storage"])
    best = study.best_trial
    out = tmp_path / "final.pt"
    res = CliRunner().invoke(cli, ["retrain-best", "--study", "t", "--storage", stores["storage"],
                                   "--tracking-uri", stores["tracking"], "--out", str(out), "--device", "cpu"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(out)
    assert ckpt.train["lr"] == pytest.approx(best.params["lr"])
    assert ckpt.train["batch_size"] == best.params["batch_size"]
    assert ckpt.features.noise == pytest.approx(best.params["noise"])
    assert list(ckpt.model_cfg.widths) == best.user_attrs["widths"]
    client = MlflowClient(stores["tracking"])
    # It trains the trial's best epoch count or more, until its training loss reaches the trial's then (at most 3x).
    trial_losses = {m.step: m.value for m in client.get_metric_history(best.user_attrs["mlflow_run_id"], "train_loss")}
    target = best.user_attrs["best_epoch_train_loss"]
    assert target == trial_losses[best.user_attrs["best_epoch"]]
    version = max(client.search_model_versions("name='sceneclf'"), key=lambda v: int(v.version))
    run = client.get_run(version.run_id)
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)]
    assert ckpt.metrics["target_train_loss"] == target and ckpt.train["until_train_loss"] == target
    assert len(losses) == ckpt.train["epochs"] == ckpt.metrics["epochs"] == int(run.data.params["epochs"])
    assert len(losses) >= best.user_attrs["best_epoch"]
    assert all(loss > target for loss in losses[best.user_attrs["best_epoch"] - 1:-1])
    assert losses[-1] <= target or len(losses) == 3 * best.user_attrs["epochs_run"]
    assert ckpt.metrics["final_train_loss"] == losses[-1]
    assert run.data.tags["sceneclf.best_trial"] == str(best.number)
    assert run.data.tags["sceneclf.study_run_id"] == study.user_attrs["mlflow_parent_run_id"]
    assert float(run.data.params["lr"]) == pytest.approx(best.params["lr"])
    assert "test_accuracy" in run.data.metrics
    # Beside it, the trial's own checkpoint (train split only) on the same test clips.
    own = load_model(f"runs:/{best.user_attrs['mlflow_run_id']}/model", stores["tracking"]).checkpoint
    data = prepare(DataConfig(data=str(tiny_data)), AudioConfig(), FeatureConfig(), tmp_path / "cache")
    expected, _, _ = score(own.model, data.splits["test"], data.frames)
    assert ckpt.metrics["trial_checkpoint_test_accuracy"] == expected
    assert run.data.metrics["trial_checkpoint_test_accuracy"] == pytest.approx(expected)
    assert f"the trial's own checkpoint (training split only): test_accuracy {expected:.3f}" in res.output
    assert ("below the trial's own checkpoint" in res.output) == (expected > ckpt.metrics["test_accuracy"])
    mlflow.set_tracking_uri(stores["tracking"])
    model = mlflow.pyfunc.load_model(f"models:/sceneclf/{version.version}")
    for n in (16000, 48000):
        logits = model.predict(np.random.default_rng(0).normal(0, 0.1, (2, n)).astype("float32"))
        assert logits.shape == (2, 15)


def test_retrain_best_without_finished_trials(stores, tiny_data):
    res = CliRunner().invoke(cli, ["retrain-best", "--study", "nothing", "--storage", stores["storage"]])
    assert res.exit_code == 2 and "--study nothing: no such study" in res.output


def test_default_pruner_keeps_the_leaders_and_stops_the_laggards_early():
    """The CLI offers the pruners `make_pruner` knows, defaulting to DEFAULT_PRUNER; with it, in a
    real study, a trial below the top third of the completed ones is stopped at its fourth epoch,
    the first it can be, and a trial above them runs to the end."""
    option = next(p for p in cli.commands["search"].params if p.name == "pruner")
    assert tuple(option.type.choices) == search_names.PRUNERS and option.default == search_names.DEFAULT_PRUNER
    study = optuna.create_study(direction="maximize", pruner=make_pruner(search_names.DEFAULT_PRUNER, 20))

    def run(curve):
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                return epoch
        study.tell(trial, max(curve))
        return len(curve)

    assert run([0.1] * 20) == 20  # startup: the first two are never pruned
    assert run([0.3 + 0.02 * e for e in range(20)]) == 20
    assert run([0.1] * 20) == 4  # the third is, from its fourth epoch
    for i in range(1, 6):
        assert run([0.3 + 0.02 * i + 0.02 * e for e in range(20)]) == 20
    assert run([0.5 + 0.02 * e for e in range(20)]) == 20
    # at every epoch above the completed trials' median, under their top third
    assert run([0.37 + 0.02 * e for e in range(20)]) == 4
    for name in search_names.PRUNERS:
        assert isinstance(make_pruner(name, 20), optuna.pruners.BasePruner)


def test_trials_with_jobs_finish_exactly_the_asked_number(stores, tiny_data, tmp_path):
    """`--trials N --jobs 2` finishes exactly N trials: a worker starts none once finished plus
    running trials reach the target, and the same command again adds exactly N more."""
    from conftest import TINY_SPACE

    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    for total in (6, 9):
        res = run_search(stores, tiny_data, "--trials", str(total - 6 if total == 9 else 6), "--jobs", "2",
                         "--epochs", "1", "--space", "tiny.toml", "--no-mlflow")
        assert res.exit_code == 0, res.output
        study = optuna.load_study(study_name="t", storage=stores["storage"])
        finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == total
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_kb_budget_constrains_trials_and_is_tracked(stores, tiny_data, tmp_path):
    """--max-kb at int8: trials over it are never trained (constraint 'kb' > 0, over_budget), every
    trial carries its kB and MACs per second as attributes and MLflow metrics."""
    from conftest import TINY_SPACE

    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    res = run_search(stores, tiny_data, "--trials", "4", "--epochs", "1", "--space", "tiny.toml",
                     "--max-kb", "1.5", "--precision", "int8")
    assert res.exit_code == 0, res.output
    assert "budget 3,000 parameters, 1.5 kB at int8" in res.output
    study = optuna.load_study(study_name="t", storage=stores["storage"])
    runs = {r.info.run_id: r for r in child_runs(stores)[3]}
    for t in study.trials:
        kb = t.user_attrs["n_params"] / 1000
        assert t.user_attrs["kb"] == kb
        assert t.user_attrs["macs_per_second"] == t.user_attrs["macs"] / (94 * 512 / 16000)
        assert t.system_attrs["constraints:kb"] == kb - 1.5  # what TPE learns the feasible region from
        assert bool(t.user_attrs.get("over_budget")) == (kb > 1.5)
        assert runs[t.user_attrs["mlflow_run_id"]].data.metrics["kb"] == kb
    assert any(t.user_attrs.get("over_budget") for t in study.trials)


def test_bad_precision_is_a_one_line_error(stores, tiny_data):
    res = run_search(stores, tiny_data, "--trials", "1", "--precision", "int4")
    assert res.exit_code == 2 and "Invalid value for '--precision': 'int4' is not one of" in res.output
    assert "Traceback" not in res.output


def test_retrain_best_picks_a_trial_by_number_or_by_kb(retrained_study, tmp_path):
    """--trial N retrains trial N; --max-kb picks the most accurate complete trial that fits; a trial
    that is not complete, or a limit nothing fits, is a one-line error."""
    study = optuna.load_study(study_name="t", storage=retrained_study["storage"])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    common = ["retrain-best", "--study", "t", "--storage", retrained_study["storage"], "--tracking-uri",
              f"sqlite:///{tmp_path}/mlflow.db", "--device", "cpu", "--epochs", "1"]
    smallest = min(done, key=lambda t: t.user_attrs["kb"])
    res = CliRunner().invoke(cli, [*common, "--trial", str(smallest.number), "--out", str(tmp_path / "a.pt")])
    assert res.exit_code == 0, res.output
    assert list(load_checkpoint(tmp_path / "a.pt").model_cfg.widths) == smallest.user_attrs["widths"]
    limit = smallest.user_attrs["kb"]
    expected = max((t for t in done if t.user_attrs["kb"] <= limit), key=lambda t: t.value)
    res = CliRunner().invoke(cli, [*common, "--max-kb", str(limit), "--out", str(tmp_path / "b.pt")])
    assert res.exit_code == 0, res.output
    assert f"trial {expected.number}: val_accuracy" in res.output
    res = CliRunner().invoke(cli, [*common, "--max-kb", str(limit / 2), "--out", str(tmp_path / "c.pt")])
    assert res.exit_code == 2 and f"--max-kb {limit / 2:g}: no complete trial of study 't' fits" in res.output
    res = CliRunner().invoke(cli, [*common, "--trial", "999", "--out", str(tmp_path / "d.pt")])
    assert res.exit_code == 2 and "--trial 999: not a complete trial within the budget" in res.output
