"""A fresh MLflow SQLite store per test, copied from a migrated template: creating one runs the
MLflow schema migrations, which take seconds each time. Import the fixtures into a test module:

    from mlflow_store import mlflow_template, tracking_uri  # noqa: F401
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking_uri(tmp_path, mlflow_template) -> str:
    """sqlite:///<tmp_path>/mlruns/mlflow.db, an empty, migrated MLflow store."""
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    shutil.copy(mlflow_template, tmp_path / "mlruns" / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"
