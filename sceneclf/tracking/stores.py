"""MLflow stores: where the default one lives, set-up shared by every client, and the check
that a local store exists before a command reads it. Light to import (no torch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sceneclf.errors import ConfigError
from sceneclf.paths import sqlite_path

DEFAULT_STORE = Path("mlruns")


def default_tracking_uri(store: Path = DEFAULT_STORE) -> str:
    """`$MLFLOW_TRACKING_URI`, else a SQLite store under `mlruns/`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(store / 'mlflow.db').resolve()}"


def experiment_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI (model-training view, not GenAI traces)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def local_artifact_root(uri: str) -> str | None:
    """Artifacts beside a local SQLite store (mlruns/artifacts); a server decides its own."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent / "artifacts").resolve().as_uri()


def setup_mlflow() -> None:
    """Fail fast on an unreachable server instead of retrying for minutes; log quietly."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ..." per trial on a server
    import mlflow  # noqa: F401  (its import sets its loggers to INFO: quieten them after it)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def mlflow_client(tracking_uri: str):
    """An MlflowClient on `tracking_uri`, set up by `setup_mlflow`."""
    setup_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def check_store(tracking_uri: str, option: str = "--tracking-uri") -> None:
    """A local SQLite MLflow store must exist: opening a missing one would create an empty one."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"{option} {tracking_uri}: no MLflow store at {db} "
                          "(run `sceneclf search` first, or point --tracking-uri at your store)")
