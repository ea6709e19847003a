"""`sceneclf retrain-best`: the best feasible trial, retrained on train + validation data,
evaluated on the held-out test split, logged and registered in MLflow as `sceneclf`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, PreparedData
from sceneclf.errors import ConfigError
from sceneclf.model.budget import Budget
from sceneclf.model.checkpoint import Checkpoint
from sceneclf.search import best_feasible, open_storage
from sceneclf.space import TrialConfigs, parse_space, sample
from sceneclf.train import evaluate, train_model

REGISTERED_MODEL = "sceneclf"
Echo = Callable[[str], None]


def load_study(storage_url: str, name: str) -> optuna.Study:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {name}: no such study in {storage_url} "
                          f"(studies: {', '.join(names) or 'none'})") from None


@dataclass
class BestTrial:
    trial: optuna.trial.FrozenTrial
    configs: TrialConfigs
    budget: Budget
    parent_run_id: str | None


def stored_data_config(study: optuna.Study) -> DataConfig:
    """The data settings the study was searched with."""
    return DataConfig(**_record(study)["data"])


def _record(study: optuna.Study) -> dict:
    record = study.user_attrs.get("sceneclf")
    if record is None:
        raise ConfigError(f"study {study.study_name!r} was not made by sceneclf search (no settings stored)")
    return record


def best_trial_configs(study: optuna.Study, n_classes: int, seed: int = 0) -> BestTrial:
    """The best feasible trial's configs, rebuilt from the space stored with the study."""
    best = best_feasible(study)
    if best is None:
        raise ConfigError(f"study {study.study_name!r} has no finished trial within the budget yet; "
                          "run `sceneclf search` first")
    record = _record(study)
    space = parse_space(record["space_text"], record["space_name"])
    configs = sample(optuna.trial.FixedTrial(best.params), space, n_classes, seed=seed)
    return BestTrial(best, configs, space.budget, study.user_attrs.get("mlflow_parent_run_id"))


def retrain(best: BestTrial, data: PreparedData, epochs: int | None, seed: int, device: str,
            echo: Echo) -> tuple[Checkpoint, list[dict[str, float]]]:
    """Train the best configs on train + val for the best trial's best epoch count (or
    `epochs`), keep the last state, evaluate on test."""
    cfgs = best.configs
    n_epochs = epochs or int(best.trial.user_attrs.get("best_epoch", cfgs.train.epochs))
    train_cfg = replace(cfgs.train, epochs=n_epochs, seed=seed)
    model_cfg = cfgs.model
    combined = data.splits["train"] + data.splits["val"]

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        echo(f"epoch {epoch:3d}/{n_epochs}  train_loss {m['train_loss']:.4f}  lr {m['lr']:.2e}  {m['seconds']:.1f}s")

    model, result = train_model(cfgs.features, model_cfg, train_cfg, best.budget,
                                combined, data.splits["val"], data.frames, on_epoch=on_epoch,
                                device=device, keep_last=True)
    model.cpu()
    test_acc, test_loss, _ = evaluate(model, data.splits["test"], data.frames)
    metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "epochs": n_epochs,
               "search_val_accuracy": float(best.trial.value)}
    ckpt = Checkpoint(model, AudioConfig(), cfgs.features, model_cfg, data.classes,
                      train=asdict(train_cfg), metrics=metrics)
    return ckpt, result.history


def log_to_mlflow(tracking_uri: str, study: str, best: BestTrial, ckpt: Checkpoint,
                  history: list[dict[str, float]], checkpoint_path: Path, clip_samples: int) -> tuple[str, str]:
    """A run linked to the study's parent run, with the model logged by the pytorch flavor and
    registered as `sceneclf`. Returns (run id, model version)."""
    import logging

    import mlflow
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import sceneclf

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri)
    from sceneclf.tracking import Tracker

    tracker = Tracker(tracking_uri, study)  # the study's experiment, created if needed
    example = torch.zeros(2, clip_samples)
    example[1].normal_(0, 0.1)
    # Waveforms of any length in (mono, at the model's rate), class logits out.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(ckpt.classes)))]))
    tags = {"sceneclf.role": "retrain", "sceneclf.study": study,
            "sceneclf.best_trial": str(best.trial.number)}
    if best.parent_run_id:
        tags["sceneclf.study_run_id"] = best.parent_run_id
    with mlflow.start_run(experiment_id=tracker.experiment_id, run_name="retrain-best", tags=tags) as run:
        mlflow.log_params({**best.configs.flat(), "epochs": ckpt.train["epochs"], "seed": ckpt.train["seed"]})
        for step, m in enumerate(history, 1):
            mlflow.log_metrics({k: v for k, v in m.items() if k in ("train_loss", "lr")}, step=step)
        mlflow.log_metrics({k: float(v) for k, v in ckpt.metrics.items()})
        mlflow.log_artifact(str(checkpoint_path), "checkpoint")
        info = mlflow.pytorch.log_model(
            ckpt.model, name="model", signature=signature, input_example=example.numpy(),
            registered_model_name=REGISTERED_MODEL,
            code_paths=[str(Path(sceneclf.__file__).parent)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchaudio", "numpy"],
        )
        version = str(info.registered_model_version)
    return run.info.run_id, version
