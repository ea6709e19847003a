"""`sceneclf evaluate`: a model's accuracy, macro-F1, per-class accuracy and most confused pairs
on a data set split, and its confusion matrix as a plotly figure.

A MODEL is a checkpoint file or an MLflow model URI (`models:/sceneclf/3`, `models:/sceneclf@prod`,
`runs:/<run id>/model`). For an MLflow URI the model's run is found and its `checkpoint/*.pt`
artifact is loaded: `retrain-best` logs that checkpoint and the MLflow model from the same
weights, and only the checkpoint also holds the class names and the audio and feature settings.
Evaluation runs on centre crops of cached mel spectrograms, exactly as `train.evaluate` does, so
the numbers match the ones training and retraining report.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from sceneclf.data.melset import MelSet
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.errors import ConfigError, DataError, first_line
from sceneclf.model.checkpoint import Checkpoint, load_checkpoint
from sceneclf.stores import check_store, mlflow_client

Echo = Callable[[str], None]
SPLITS = ("test", "val", "all")
MLFLOW_SCHEMES = ("models:/", "runs:/")


# -- loading a model ---------------------------------------------------------------------------
@dataclass
class LoadedModel:
    checkpoint: Checkpoint
    source: str  # the path or URI it was loaded from
    run_id: str | None = None  # the MLflow run that logged it
    experiment_id: str | None = None
    run_tags: dict | None = None

    @property
    def label(self) -> str:
        """A short file-name-safe name: the checkpoint's stem, or e.g. `sceneclf-3`."""
        if not is_mlflow_uri(self.source):
            return Path(self.source).stem
        rest = self.source.split(":/", 1)[1].strip("/")
        if self.source.startswith("runs:/"):
            rest = f"run-{rest.split('/')[0][:8]}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", rest).strip("-") or "model"


def is_mlflow_uri(ref: str) -> bool:
    return str(ref).startswith(MLFLOW_SCHEMES)


def load_model(ref: str, tracking_uri: str | None = None) -> LoadedModel:
    """A checkpoint file, or the checkpoint logged with an MLflow model (see the module doc)."""
    if not is_mlflow_uri(ref):
        return LoadedModel(load_checkpoint(Path(ref)), str(ref))
    if tracking_uri is None:
        from sceneclf.tracking import default_tracking_uri

        tracking_uri = default_tracking_uri()
    check_store(tracking_uri)
    client = mlflow_client(tracking_uri)
    try:
        run_id = _run_id(client, ref)
        run = client.get_run(run_id)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{ref}: no such model in {tracking_uri} ({first_line(exc)})") from None
    return LoadedModel(checkpoint_from_run(client, run_id, ref), ref, run_id,
                       run.info.experiment_id, dict(run.data.tags))


def _run_id(client, uri: str) -> str:
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].strip("/").split("/")[0]
        if not run_id:
            raise ConfigError(f"{uri}: expected runs:/<run id>/model")
        return run_id
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        if version.lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ConfigError(f"{uri}: registered model {name!r} has no versions")
            return max(versions, key=lambda v: int(v.version)).run_id
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(rest).source_run_id  # models:/m-<id> (MLflow 3 logged model)


def checkpoint_from_run(client, run_id: str, ref: str) -> Checkpoint:
    """Download and load the run's `checkpoint/*.pt` artifact."""
    try:
        names = sorted(a.path for a in client.list_artifacts(run_id, "checkpoint") if a.path.endswith(".pt"))
    except Exception as exc:
        raise ConfigError(f"{ref}: cannot list the artifacts of run {run_id} ({first_line(exc)})") from None
    if not names:
        raise ConfigError(f"{ref}: run {run_id} has no checkpoint/*.pt artifact, so its class names are "
                          "unknown (models registered by `sceneclf retrain-best` have one)")
    with tempfile.TemporaryDirectory(prefix="sceneclf-") as tmp:
        local = client.download_artifacts(run_id, names[0], tmp)
        return load_checkpoint(Path(local))


# -- metrics -----------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Counts and the metrics derived from them. Rows of `confusion` are true classes, columns
    predicted ones, both in the model's class order."""

    classes: tuple[str, ...]
    confusion: np.ndarray  # (C, C) int
    model: str = ""
    data: str = ""
    split: str = ""

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def support(self) -> np.ndarray:
        return self.confusion.sum(1)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else float("nan")

    @property
    def f1(self) -> np.ndarray:
        """Per class: 2 TP / (support + predicted); NaN where the class neither occurs nor is
        predicted."""
        tp = np.diag(self.confusion).astype(float)
        denom = self.support + self.confusion.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / denom, np.nan)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes that occur in the data or are predicted (scikit-learn's
        default label set)."""
        f1 = self.f1
        return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")

    def per_class(self) -> list[dict]:
        """Each class that occurs in the data: accuracy (recall), support, F1."""
        tp, support, f1 = np.diag(self.confusion), self.support, self.f1
        return [{"class": c, "accuracy": float(tp[i] / support[i]), "support": int(support[i]),
                 "f1": float(f1[i])}
                for i, c in enumerate(self.classes) if support[i] > 0]

    def confused_pairs(self, top: int = 5) -> list[dict]:
        """The largest off-diagonal counts: (true class, predicted class, count, share of the
        true class's clips), largest first, ties by class order."""
        cells = [(int(self.confusion[i, j]), i, j) for i in range(len(self.classes))
                 for j in range(len(self.classes)) if i != j and self.confusion[i, j] > 0]
        cells.sort(key=lambda c: (-c[0], c[1], c[2]))
        return [{"true": self.classes[i], "predicted": self.classes[j], "count": count,
                 "share": count / int(self.support[i])} for count, i, j in cells[:top]]

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "split": self.split, "clips": self.n,
                "accuracy": self.accuracy, "macro_f1": self.macro_f1, "per_class": self.per_class(),
                "confused_pairs": self.confused_pairs(),
                "confusion_matrix": {"classes": list(self.classes), "counts": self.confusion.tolist()}}

    def format(self) -> str:
        width = max([len("class")] + [len(c) for c in self.classes]) + 2
        lines = [f"{self.split}: {self.n} clips   accuracy {self.accuracy:.3f}   macro-F1 {self.macro_f1:.3f}",
                 "", f"{'class':<{width}}{'accuracy':>9}{'F1':>7}{'support':>9}"]
        for row in self.per_class():
            lines.append(f"{row['class']:<{width}}{row['accuracy']:>9.3f}{row['f1']:>7.3f}{row['support']:>9}")
        pairs = self.confused_pairs()
        lines += ["", "most confused (true -> predicted):" if pairs else "no confusions"]
        for p in pairs:
            lines.append(f"  {p['true']} -> {p['predicted']}: {p['count']} of "
                         f"{p['count'] / p['share']:.0f} ({p['share']:.0%})")
        return "\n".join(lines)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def confusion_figure(ev: Evaluation) -> go.Figure:
    """Heatmap of the row-normalised confusion matrix, counts written in the cells."""
    support = ev.support.clip(min=1)[:, None]
    share = ev.confusion / support
    fig = go.Figure(go.Heatmap(
        z=share, x=list(ev.classes), y=list(ev.classes), colorscale="Blues", zmin=0, zmax=1,
        text=ev.confusion, texttemplate="%{text}",
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text} clips (%{z:.0%} of the class)<extra></extra>",
        colorbar={"title": {"text": "share of<br>true class"}}))
    fig.update_layout(
        title=f"Confusion matrix, {ev.split} ({ev.n} clips): accuracy {ev.accuracy:.3f}, "
              f"macro-F1 {ev.macro_f1:.3f}",
        xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
        width=max(520, 40 * len(ev.classes) + 260), height=max(480, 36 * len(ev.classes) + 200))
    return fig


# -- evaluating a model on data ----------------------------------------------------------------
def evaluate_model(model: LoadedModel, data: DataConfig, split: str, cache_dir: Path,
                   skip_bad: bool = False, echo: Echo = lambda _: None) -> Evaluation:
    """Predict every clip of `split` (test, val, or all) on centre crops and count."""
    from sceneclf.train import evaluate

    if split not in SPLITS:
        raise ConfigError(f"--split {split}: use one of {', '.join(SPLITS)}")
    ckpt = model.checkpoint
    prepared = prepare(data, ckpt.audio, ckpt.features, cache_dir, skip_bad=skip_bad)
    root = prepared.manifest.root
    index = {c: i for i, c in enumerate(ckpt.classes)}
    unknown = [c for c in prepared.classes if c not in index]
    if unknown:
        raise DataError(f"{root}: classes the model does not know: {', '.join(unknown)} "
                        f"(it knows {', '.join(ckpt.classes)})")
    sets = prepared.splits
    chosen = sets["train"] + sets["val"] + sets["test"] if split == "all" else sets[split]
    if len(chosen) == 0:
        raise DataError(f"{root}: the {split} split holds no clips (--split)")
    echo(f"data: {root} ({prepared.manifest.layout}), {split} split: {len(chosen)} clips"
         + (f"; skipped {len(prepared.skipped)} unreadable file(s)" if prepared.skipped else ""))
    to_model = np.array([index[c] for c in prepared.classes])
    labels = to_model[chosen.labels.numpy()]
    _, _, logits = evaluate(ckpt.model, MelSet(chosen.mels, chosen.labels), prepared.frames)
    predicted = logits.argmax(1).numpy()
    return Evaluation(ckpt.classes, confusion_counts(labels, predicted, len(ckpt.classes)),
                      model.source, str(root), split)


def log_evaluation(tracking_uri: str, model: LoadedModel, ev: Evaluation, figure_html: str,
                   experiment: str = "sceneclf") -> str:
    """A run holding the metrics, the evaluation as JSON and the confusion-matrix figure. For an
    MLflow model it lives in the model run's experiment, nested under that run
    (`mlflow.parentRunId`) and tagged `sceneclf.model_run_id`. Returns the run id."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from sceneclf.tracking import Tracker

    if model.run_id is not None:
        check_store(tracking_uri)
    client = mlflow_client(tracking_uri)
    if model.experiment_id is not None:
        experiment = client.get_experiment(model.experiment_id).name
    tracker = Tracker(tracking_uri, experiment)
    tags = {"sceneclf.role": "evaluate", "sceneclf.model": model.source, "sceneclf.split": ev.split}
    if model.run_id:
        tags.update({"sceneclf.model_run_id": model.run_id, MLFLOW_PARENT_RUN_ID: model.run_id})
        if model.run_tags and "sceneclf.study" in model.run_tags:
            tags["sceneclf.study"] = model.run_tags["sceneclf.study"]
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"evaluate-{ev.split}", tags=tags)
    run_id = run.info.run_id
    metrics = {"accuracy": ev.accuracy, "macro_f1": ev.macro_f1, "clips": ev.n}
    metrics.update({f"accuracy.{_metric_name(r['class'])}": r["accuracy"] for r in ev.per_class()})
    params = {"model": model.source, "data": ev.data, "split": ev.split}
    now = int(time.time() * 1000)
    tracker.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                             params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    tracker.client.log_text(run_id, json.dumps(ev.to_dict(), indent=2), "evaluation.json")
    tracker.client.log_text(run_id, figure_html, "figures/confusion_matrix.html")
    tracker.client.set_terminated(run_id)
    return run_id


def _metric_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)
