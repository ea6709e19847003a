"""`sceneclf evaluate`: a model's accuracy, macro-F1, per-class accuracy and most confused pairs
on a data set split, and its confusion matrix as a plotly figure.

A model is loaded by `sceneclf.tracking.models.load_model` (a checkpoint file or an MLflow URI).
Evaluation scores whole clips from cached mel spectrograms, exactly as `train.score` does, so
the numbers match the ones training and retraining report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from sceneclf.data.devices import DeviceAccuracy, device_accuracy
from sceneclf.data.melset import MelSet
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.echo import Echo
from sceneclf.errors import ConfigError, DataError
from sceneclf.tracking.models import LoadedModel

SPLITS = ("test", "val", "all")


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
    at_precision: dict[str, float] = field(default_factory=dict)  # accuracy as shipped, by precision
    devices: DeviceAccuracy | None = None  # where file names tell the recording device

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
                **{f"accuracy_{p}": acc for p, acc in self.at_precision.items()},
                **({"per_device": [{"device": d, "accuracy": r / n, "clips": n, "heard": d in self.devices.heard}
                                   for d, (r, n) in self.devices.counts.items()],
                    **self.devices.metrics()} if self.devices else {}),
                "confusion_matrix": {"classes": list(self.classes), "counts": self.confusion.tolist()}}

    def format(self) -> str:
        width = max([len("class")] + [len(c) for c in self.classes]) + 2
        lines = [f"{self.split}: {self.n} clips   accuracy {self.accuracy:.3f}   macro-F1 {self.macro_f1:.3f}",
                 *(f"accuracy at {p} (as it ships) {acc:.3f}, float {self.accuracy:.3f}"
                   for p, acc in self.at_precision.items()),
                 *([self.devices.format()] if self.devices else []),
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
                   skip_bad: bool = False, echo: Echo = lambda _: None, precision: str | None = None) -> Evaluation:
    """Predict every clip of `split` (test, val, or all) from all of it and count, with the float
    model; and the accuracy at `precision` (default: the one the checkpoint ships in) unless fp32."""
    from sceneclf.model.quantize import calibration_batches, check_precision, to_precision
    from sceneclf.train import score

    if split not in SPLITS:
        raise ConfigError(f"--split {split}: use one of {', '.join(SPLITS)}")
    ckpt = model.checkpoint
    precision = check_precision(precision or ckpt.train.get("precision", "fp32"))
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
    _, _, logits = score(ckpt.model, MelSet(chosen.mels, chosen.labels), prepared.frames)
    predicted = logits.argmax(1).numpy()
    at_precision = {}
    if precision != "fp32":  # int8 calibrated on training clips, as retrain-best does (`retrain.deployed_model`)
        deployed = to_precision(ckpt.model, precision, calibration_batches(sets["train"], prepared.frames))
        _, _, logits = score(deployed, MelSet(chosen.mels, chosen.labels), prepared.frames)
        at_precision[precision] = float((logits.argmax(1).numpy() == labels).mean())
    paths = [p for s in ("train", "val", "test") for p in prepared.paths[s]] if split == "all" \
        else prepared.paths[split]
    trained = [p for s in ckpt.train.get("trained_on", ["train"]) for p in prepared.paths.get(s, [])]
    devices = device_accuracy(paths, (predicted == labels).tolist(), trained)
    return Evaluation(ckpt.classes, confusion_counts(labels, predicted, len(ckpt.classes)),
                      model.source, str(root), split, at_precision, devices)


def evaluation_metrics(ev: Evaluation) -> dict[str, float]:
    """Flat MLflow metrics: accuracy, macro-F1, clip count and accuracy per class."""
    metrics = {"accuracy": ev.accuracy, "macro_f1": ev.macro_f1, "clips": ev.n,
               **{f"accuracy_{p}": acc for p, acc in ev.at_precision.items()}}
    metrics.update({f"accuracy.{_metric_name(r['class'])}": r["accuracy"] for r in ev.per_class()})
    metrics.update(ev.devices.metrics() if ev.devices else {})
    return metrics


def _metric_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)
