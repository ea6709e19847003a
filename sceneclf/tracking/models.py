"""Models in MLflow: loading one by file or URI, logging and registering the retrained model,
and the runs that evaluate it.

A MODEL is a checkpoint file or an MLflow model URI (`models:/sceneclf/3`, `models:/sceneclf@prod`,
`runs:/<run id>/model`). For an MLflow URI the model's run is found and its `checkpoint/*.pt`
artifact is loaded: `retrain-best` logs that checkpoint and the MLflow model from the same
weights, and only the checkpoint also holds the class names and the audio and feature settings.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sceneclf.errors import ConfigError, first_line
from sceneclf.model.checkpoint import Checkpoint, load_checkpoint
from sceneclf.tracking.stores import check_store, default_tracking_uri, mlflow_client, setup_mlflow
from sceneclf.tracking.tracker import MlflowTracker

REGISTERED_MODEL = "sceneclf"
MLFLOW_SCHEMES = ("models:/", "runs:/")


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


def trial_checkpoint(run_id: str | None, tracking_uri: str | None) -> LoadedModel | None:
    """The checkpoint a completed trial logged on its MLflow run; None without MLflow or one."""
    if not tracking_uri or not run_id:
        return None
    try:
        return load_model(f"runs:/{run_id}/model", tracking_uri)
    except ConfigError:  # a run without its checkpoint: nothing to compare with
        return None


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


def log_retrained_model(tracking_uri: str, study: str, best_trial: int, parent_run_id: str | None,
                        params: dict[str, Any], ckpt: Checkpoint, history: list[dict[str, float]],
                        checkpoint_path: Path, clip_samples: int,
                        deployed: torch.nn.Module | None = None) -> tuple[str, str]:
    """A run linked to the study's parent run, with the model logged by the pytorch flavor and
    registered as `sceneclf`. Returns (run id, model version).

    `deployed` (the model at the precision it ships in, `quantize.to_precision`) is what is logged
    and registered when given, so the registered version is the one that fits the budget; the
    checkpoint artifact keeps the float weights and names that precision, from which sceneclf
    rebuilds the same model."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import sceneclf

    setup_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    tracker = MlflowTracker(tracking_uri, study)  # the study's experiment, created if needed
    example = torch.zeros(2, clip_samples)
    example[1].normal_(0, 0.1)
    # Waveforms of any length in (mono, at the model's rate), class logits out.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(ckpt.classes)))]))
    precision = getattr(deployed, "precision", "fp32")
    tags = {"sceneclf.role": "retrain", "sceneclf.study": study,
            "sceneclf.best_trial": str(best_trial), "sceneclf.precision": precision}
    if parent_run_id:
        tags["sceneclf.study_run_id"] = parent_run_id
    with mlflow.start_run(experiment_id=tracker.experiment_id, run_name="retrain-best", tags=tags) as run:
        mlflow.log_params({**params, "epochs": ckpt.train["epochs"], "seed": ckpt.train["seed"]})
        for step, m in enumerate(history, 1):
            mlflow.log_metrics({k: v for k, v in m.items() if k in ("train_loss", "lr")}, step=step)
        mlflow.log_metrics({k: float(v) for k, v in ckpt.metrics.items()})
        mlflow.log_artifact(str(checkpoint_path), "checkpoint")
        # torch.export's archive writer warns about CPU weights it handles; MLflow prints what we print.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", message="No complete tensor found", category=UserWarning)
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            info = mlflow.pytorch.log_model(
                ckpt.model if deployed is None else deployed, name="model", signature=signature,
                input_example=example.numpy(),
                # torch.export cannot trace quantized kernels' packed weights: pickled instead.
                serialization_format="pt2" if precision == "fp32" else "pickle",
                registered_model_name=REGISTERED_MODEL,
                code_paths=[str(Path(sceneclf.__file__).parent)],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchaudio", "numpy"],
            )
        version = str(info.registered_model_version)
    return run.info.run_id, version


def log_evaluation(tracking_uri: str, model: LoadedModel, split: str, metrics: dict[str, float],
                   params: dict[str, str], evaluation_json: str, figure_html: str,
                   experiment: str = "sceneclf") -> str:
    """A run holding the metrics, the evaluation as JSON and the confusion-matrix figure. For an
    MLflow model it lives in the model run's experiment, nested under that run
    (`mlflow.parentRunId`) and tagged `sceneclf.model_run_id`. Returns the run id."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if model.run_id is not None:
        check_store(tracking_uri)
    client = mlflow_client(tracking_uri)
    if model.experiment_id is not None:
        experiment = client.get_experiment(model.experiment_id).name
    tracker = MlflowTracker(tracking_uri, experiment)
    tags = {"sceneclf.role": "evaluate", "sceneclf.model": model.source, "sceneclf.split": split}
    if model.run_id:
        tags.update({"sceneclf.model_run_id": model.run_id, MLFLOW_PARENT_RUN_ID: model.run_id})
        if model.run_tags and "sceneclf.study" in model.run_tags:
            tags["sceneclf.study"] = model.run_tags["sceneclf.study"]
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"evaluate-{split}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    tracker.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                             params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    tracker.client.log_text(run_id, evaluation_json, "evaluation.json")
    tracker.client.log_text(run_id, figure_html, "figures/confusion_matrix.html")
    tracker.client.set_terminated(run_id)
    return run_id


def find_retrain_run(client, study: str):
    """The newest finished `retrain-best` run of `study`, or None."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`sceneclf.role` = 'retrain' and tags.`sceneclf.study` = '{study}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None
