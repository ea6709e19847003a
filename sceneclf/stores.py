"""Checks and clients for the stores the result commands read: an Optuna storage and an MLflow
tracking store. Opening a missing SQLite file would silently create an empty store; these refuse
with a one-line error instead. Light to import (no torch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sceneclf.errors import ConfigError


def check_storage(url: str) -> None:
    """An Optuna storage given as a SQLite URL or a journal file must exist."""
    path = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else (None if "://" in url else Path(url))
    if path is not None and not path.is_file():
        raise ConfigError(f"--storage {url}: no Optuna storage at {path} (run `sceneclf search` first)")


def check_store(tracking_uri: str, option: str = "--tracking-uri") -> None:
    """A local SQLite MLflow store must exist."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise ConfigError(f"{option} {tracking_uri}: no MLflow store at {db} "
                              "(run `sceneclf search` first, or point --tracking-uri at your store)")


def mlflow_client(tracking_uri: str):
    """An MlflowClient that fails fast on an unreachable server and logs quietly."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)
