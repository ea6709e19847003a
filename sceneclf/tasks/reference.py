"""The bag-of-frames reference every study is measured against: each clip's per-band log-mel
mean and standard deviation over its whole length, standardised, fed to a multinomial logistic
regression (scikit-learn) whose regularisation is chosen on the validation split. A CNN search
that does not beat it has not learnt more than a clip's average spectrum."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sceneclf.data.melset import MelSet
from sceneclf.model.frontend import LOG_EPS

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class Reference:
    val_accuracy: float
    test_accuracy: float
    c: float  # the inverse regularisation strength chosen on validation

    def to_dict(self) -> dict[str, float]:
        return {"reference_val_accuracy": self.val_accuracy, "reference_test_accuracy": self.test_accuracy,
                "reference_c": self.c}


def bag_of_frames(data: MelSet) -> np.ndarray:
    """(N, 2 * n_mels): per-band mean and std of each whole clip's log-mel spectrogram."""
    rows = []
    for mel in data.mels:
        logmel = torch.log(mel.double() + LOG_EPS)
        rows.append(torch.cat([logmel.mean(-1), logmel.std(-1, correction=0)]).numpy())
    return np.stack(rows)


def fit_reference(splits: dict[str, MelSet], seed: int = 0) -> Reference:
    """Fit on train for each C in C_GRID, keep the best on validation, score it on test."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small matrices: BLAS threads only fight each other and torch's
        return _fit(splits, seed)


def _fit(splits: dict[str, MelSet], seed: int) -> Reference:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = {name: bag_of_frames(split) for name, split in splits.items()}
    y = {name: split.labels.numpy() for name, split in splits.items()}
    best = None
    for c in C_GRID:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        with warnings.catch_warnings():  # scikit-learn warns on tiny sets with many classes; the score says enough
            warnings.simplefilter("ignore", UserWarning)
            model.fit(x["train"], y["train"])
        val = float(model.score(x["val"], y["val"]))
        if best is None or val > best[0]:
            best = (val, c, model)
    val, c, model = best
    test = float(model.score(x["test"], y["test"])) if len(y["test"]) else float("nan")
    return Reference(val, test, c)
