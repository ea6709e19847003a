"""`sceneclf evaluate`: metrics against hand counts, checkpoint files and MLflow models, bad input."""

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sceneclf.cli import cli
from sceneclf.data.audio import AudioConfig
from sceneclf.data.synth import SCENE_CLASSES
from sceneclf.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig
from sceneclf.tasks.evaluate import Evaluation, confusion_counts, confusion_figure


def constant_model(path, classes, answer: str):
    """A checkpoint whose model answers `answer` for every input: zero head weights, one bias."""
    cfg = ModelConfig(n_classes=len(classes), widths=(4,))
    model = SceneClassifier(FeatureConfig(), cfg).eval()
    with torch.no_grad():
        model.cnn.head.weight.zero_()
        model.cnn.head.bias.zero_()
        model.cnn.head.bias[classes.index(answer)] = 5.0
    return save_checkpoint(path, Checkpoint(model, AudioConfig(), FeatureConfig(), cfg, tuple(classes)))


def evaluate_list(data):
    """Hand count: the labels of the fold's evaluate list (the test split), read from the file."""
    lines = (data / "evaluation_setup" / "fold1_evaluate.txt").read_text().splitlines()
    return Counter(line.split("\t")[1] for line in lines if line.strip())


def test_metrics_match_hand_count():
    classes = ("a", "b", "c", "d")
    # true:  a a a a b b c c   (d never occurs, but is predicted once)
    # pred:  a a b d b a c c
    ev = Evaluation(classes, confusion_counts([0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 3, 1, 0, 2, 2], 4))
    assert ev.n == 8 and ev.accuracy == pytest.approx(5 / 8)
    # F1 = 2TP / (support + predicted): a 2*2/(4+3), b 2*1/(2+2), c 2*2/(2+2), d 0/(0+1)
    assert ev.macro_f1 == pytest.approx((4 / 7 + 0.5 + 1.0 + 0.0) / 4)
    rows = {r["class"]: r for r in ev.per_class()}
    assert set(rows) == {"a", "b", "c"}  # d has no clips
    assert rows["a"]["accuracy"] == 0.5 and rows["a"]["support"] == 4
    assert rows["b"]["accuracy"] == 0.5 and rows["c"]["accuracy"] == 1.0
    pairs = ev.confused_pairs()
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 1), ("a", "d", 1), ("b", "a", 1)]
    assert pairs[0]["share"] == 0.25
    fig = confusion_figure(ev)
    assert fig.data[0].z.shape == (4, 4) and fig.data[0].text[0][0] == 2


def test_evaluate_checkpoint_matches_hand_count(tiny_data, tmp_path):
    classes = list(SCENE_CLASSES)
    ckpt = constant_model(tmp_path / "always_park.pt", classes, "park")
    out = tmp_path / "cm.html"
    res = CliRunner().invoke(cli, ["evaluate", str(ckpt), "--data", str(tiny_data), "--json",
                                   "--out-html", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    counts = evaluate_list(tiny_data)
    n = sum(counts.values())
    assert got["clips"] == n and got["split"] == "test"
    assert got["accuracy"] == pytest.approx(counts["park"] / n)
    # Only `park` is ever predicted: F1 is 2 s/(s + n) for park, 0 for every other class.
    assert got["macro_f1"] == pytest.approx(2 * counts["park"] / (counts["park"] + n) / len(counts))
    per_class = {r["class"]: r for r in got["per_class"]}
    assert {c: r["support"] for c, r in per_class.items()} == dict(counts)
    assert per_class["park"]["accuracy"] == 1.0
    assert all(r["accuracy"] == 0.0 for c, r in per_class.items() if c != "park")
    assert all(p["predicted"] == "park" and p["share"] == 1.0 for p in got["confused_pairs"])
    matrix = np.array(got["confusion_matrix"]["counts"])
    assert matrix[:, classes.index("park")].sum() == n and matrix.sum() == n
    # By device (the file name's last part): park's share of each device's clips.
    tested = [line.split("\t") for line in (tiny_data / "evaluation_setup" / "fold1_evaluate.txt").read_text().split("\n")
              if line.strip()]
    by_device = Counter(f.rsplit("_", 1)[-1][:-4] for f, _ in tested)
    parks = Counter(f.rsplit("_", 1)[-1][:-4] for f, label in tested if label == "park")
    rows = {r["device"]: r for r in got["per_device"]}
    assert {d: r["clips"] for d, r in rows.items()} == dict(by_device)
    assert all(r["accuracy"] == parks[d] / by_device[d] for d, r in rows.items())
    trained = {line.split("\t")[0].rsplit("_", 1)[-1][:-4]
               for line in (tiny_data / "evaluation_setup" / "fold1_train.txt").read_text().split("\n") if line.strip()}
    heard = {d for d, r in rows.items() if r["heard"]}
    assert "a" in heard and heard <= trained
    unheard = set(rows) - heard
    assert got["accuracy_unheard_devices"] == pytest.approx(sum(parks[d] for d in unheard) /
                                                            sum(by_device[d] for d in unheard))
    assert got["html"] == str(out) and got["mlflow_run_id"] is None
    page = out.read_text()
    assert "plotly-graph-div" in page and "Plotly.newPlot" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js embedded: opens offline


def test_evaluate_text_and_splits(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = constant_model(tmp_path / "m.pt", list(SCENE_CLASSES), "beach")
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", str(ckpt), "--data", str(tiny_data)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "macro-F1" in res.output and "most confused" in res.output
    assert " -> beach:" in res.output
    assert (tmp_path / "m-test-confusion.html").is_file()  # default: in the current folder
    sizes = {}
    for split in ("all", "val"):
        res = runner.invoke(cli, ["evaluate", str(ckpt), "--data", str(tiny_data), "--split", split, "--json"],
                            catch_exceptions=False)
        assert res.exit_code == 0, res.output
        sizes[split] = json.loads(res.stdout)["clips"]
    total = len((tiny_data / "meta.txt").read_text().splitlines())
    assert sizes["all"] == total and 0 < sizes["val"] < total - sum(evaluate_list(tiny_data).values())


def test_evaluate_bad_input(tmp_path, tiny_data):
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", str(tmp_path / "missing.pt"), "--data", str(tiny_data)])
    assert res.exit_code == 2 and "missing.pt: checkpoint not found" in res.output
    assert "Traceback" not in res.output
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    res = runner.invoke(cli, ["evaluate", str(tmp_path / "junk.pt"), "--data", str(tiny_data)])
    assert res.exit_code == 2 and "junk.pt: not a readable sceneclf checkpoint" in res.output
    res = runner.invoke(cli, ["evaluate", "models:/sceneclf/1", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert res.exit_code == 2 and "no MLflow store at" in res.output
    # A model that knows other classes than the data holds.
    ckpt = constant_model(tmp_path / "other.pt", ["x", "y"], "x")
    res = runner.invoke(cli, ["evaluate", str(ckpt), "--data", str(tiny_data)])
    assert res.exit_code == 2 and "classes the model does not know" in res.output


@pytest.mark.slow
def test_evaluate_mlflow_model_logs_a_linked_run(retrained_study, tmp_path):
    s = retrained_study
    runner = CliRunner()
    by_file = runner.invoke(cli, ["evaluate", str(s["checkpoint"]), "--data", str(s["data"]), "--json",
                                  "--out-html", str(tmp_path / "a.html")], catch_exceptions=False)
    assert by_file.exit_code == 0, by_file.output
    by_uri = runner.invoke(cli, ["evaluate", s["model_uri"], "--data", str(s["data"]), "--json",
                                 "--tracking-uri", s["tracking"], "--out-html", str(tmp_path / "b.html")],
                           catch_exceptions=False)
    assert by_uri.exit_code == 0, by_uri.output
    a, b = json.loads(by_file.stdout), json.loads(by_uri.stdout)
    assert a["confusion_matrix"] == b["confusion_matrix"]
    # The same number retrain-best measured on the same test split with train.score.
    assert b["accuracy"] == pytest.approx(load_checkpoint(s["checkpoint"]).metrics["test_accuracy"], abs=1e-6)
    # retrain-best fitted train and val: evaluate counts both splits' devices as heard, as it did
    assert a["accuracy_unheard_devices"] == pytest.approx(
        load_checkpoint(s["checkpoint"]).metrics["test_accuracy_unheard_devices"], abs=1e-6)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(s["tracking"])
    model_run = client.get_model_version("sceneclf", "1").run_id
    run = client.get_run(b["mlflow_run_id"])
    assert run.data.tags["sceneclf.role"] == "evaluate"
    assert run.data.tags["sceneclf.model_run_id"] == model_run
    assert run.data.tags["mlflow.parentRunId"] == model_run
    assert run.info.experiment_id == client.get_run(model_run).info.experiment_id
    assert run.data.metrics["accuracy"] == pytest.approx(b["accuracy"])
    assert run.data.metrics["macro_f1"] == pytest.approx(b["macro_f1"])
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "evaluation.json" in artifacts
    assert [f.path for f in client.list_artifacts(run.info.run_id, "figures")] == ["figures/confusion_matrix.html"]
