"""Tracking a search: the `Tracker` protocol the search calls, `MlflowTracker` (one
experiment per study, a parent run for the study, a nested run per trial) and `NullTracker`,
which does nothing, for `--no-mlflow`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

from sceneclf.errors import ConfigError, first_line
from sceneclf.paths import sqlite_path
from sceneclf.tracking.stores import local_artifact_root, mlflow_client

# The UI opens such experiments on the runs table ("model training"), not on traces.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
STATE_ARTIFACTS = "training-state"  # where a trial's run keeps its training state, for other machines
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "OVER_BUDGET": "KILLED", "FAIL": "FAILED"}


class Tracker(Protocol):
    """What the search tells its tracker. Run ids are None where nothing is tracked."""

    experiment_id: str | None

    def parent_run(self, study: str, settings: dict[str, Any], run_id: str | None = None) -> str | None: ...
    def end_parent(self, run_id: str | None, status: str = "FINISHED") -> None: ...
    def set_best(self, parent_id: str, trial_number: int, trial_run_id: str, checkpoint: Path,
                 params: dict[str, Any], metrics: dict[str, float]) -> str | None: ...
    def log_figures(self, run_id: str | None, figures: dict[str, str]) -> None: ...
    def log_table(self, run_id: str | None, rows: list[dict[str, Any]], name: str) -> None: ...
    def start_trial(self, parent_id: str | None, study: str, number: int, params: dict[str, Any],
                    sizes: dict[str, float]) -> str | None: ...
    def log_metrics(self, run_id: str | None, metrics: dict[str, float], step: int = 0) -> None: ...
    def log_text(self, run_id: str | None, text: str, name: str) -> None: ...
    def log_checkpoint(self, run_id: str | None, path: Path) -> None: ...
    def end_trial(self, run_id: str | None, state: str, reason: str | None = None) -> None: ...
    def close_if_running(self, run_id: str, state: str, reason: str) -> bool: ...
    def running_trial_runs(self) -> dict[str, int]: ...
    def continue_trial(self, run_id: str | None, dead_run_id: str | None, epoch: int) -> None: ...
    def log_state(self, run_id: str | None, path: Path) -> None: ...
    def fetch_state(self, run_id: str, dest: Path) -> bool: ...


class NullTracker:
    """Tracks nothing (`--no-mlflow`)."""

    experiment_id = None

    def parent_run(self, study, settings, run_id=None) -> None:
        return None

    def end_parent(self, run_id, status="FINISHED") -> None:
        pass

    def set_best(self, parent_id, trial_number, trial_run_id, checkpoint, params, metrics) -> None:
        return None

    def log_figures(self, run_id, figures) -> None:
        pass

    def log_table(self, run_id, rows, name) -> None:
        pass

    def start_trial(self, parent_id, study, number, params, sizes) -> None:
        return None

    def log_metrics(self, run_id, metrics, step=0) -> None:
        pass

    def log_text(self, run_id, text, name) -> None:
        pass

    def log_checkpoint(self, run_id, path) -> None:
        pass

    def end_trial(self, run_id, state, reason=None) -> None:
        pass

    def close_if_running(self, run_id, state, reason) -> bool:
        return False

    def running_trial_runs(self) -> dict[str, int]:
        return {}

    def continue_trial(self, run_id, dead_run_id, epoch) -> None:
        pass

    def log_state(self, run_id, path) -> None:
        pass

    def fetch_state(self, run_id, dest) -> bool:
        return False


def open_tracker(tracking_uri: str | None, experiment: str) -> Tracker:
    """An MlflowTracker on `tracking_uri`, or a NullTracker when it is None."""
    return NullTracker() if tracking_uri is None else MlflowTracker(tracking_uri, experiment)


class MlflowTracker:
    """The search tracked in MLflow: experiment, parent run, trial runs, checkpoints, figures."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.uri = tracking_uri
        if (db := sqlite_path(tracking_uri)) is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = mlflow_client(tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                root = local_artifact_root(tracking_uri)
                exp_id = self.client.create_experiment(
                    experiment, artifact_location=f"{root}/{experiment}" if root else None,
                    tags=EXPERIMENT_KIND)
            else:
                exp_id = found.experiment_id
        except Exception as exc:  # connection refused, bad URI, broken store ...
            reason = first_line(exc)
            raise ConfigError(f"--tracking-uri {tracking_uri}: MLflow store not usable ({reason})") from None
        self.experiment_id = exp_id
        self.experiment = experiment

    # -- the study's parent run ------------------------------------------------------------
    def parent_run(self, study: str, settings: dict[str, Any], run_id: str | None = None) -> str:
        """Resume the study's parent run (by id or tag) or create it; mark it running."""
        from mlflow.entities import RunStatus

        if run_id is None:
            found = self.client.search_runs(
                [self.experiment_id], f"tags.`sceneclf.role` = 'study' and tags.`sceneclf.study` = '{study}'",
                max_results=1)
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=f"study-{study}",
                                         tags={"sceneclf.role": "study", "sceneclf.study": study})
            run_id = run.info.run_id
            self._log_params(run_id, settings)
        else:
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return run_id

    def end_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def set_best(self, parent_id: str, trial_number: int, trial_run_id: str, checkpoint: Path,
                 params: dict[str, Any], metrics: dict[str, float]) -> str:
        """Put a new best checkpoint on the parent run. Each best is a new artifact (never an
        overwrite), and the tag pointing at it changes only once it is stored."""
        artifact_dir = f"best/trial-{trial_number:04d}"
        self.client.log_artifact(parent_id, str(checkpoint), artifact_dir)
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(parent_id, metrics=[
            Metric(f"best_{k}", float(v), now, trial_number) for k, v in metrics.items()
        ], tags=[
            RunTag("best_trial", str(trial_number)), RunTag("best_run_id", trial_run_id),
            RunTag("best_checkpoint", f"{artifact_dir}/{checkpoint.name}"),
            *[RunTag(f"best.{k}", str(v)) for k, v in params.items()],
        ])
        return f"{artifact_dir}/{checkpoint.name}"

    def log_figures(self, run_id: str, figures: dict[str, str]) -> None:
        """Plotly figures as self-contained HTML artifacts under figures/."""
        for name, html in figures.items():
            self.client.log_text(run_id, html, f"figures/{name}.html")

    def log_table(self, run_id: str, rows: list[dict[str, Any]], name: str) -> None:
        """Rows of equal keys as an MLflow table artifact `name` (JSON, shown in the UI)."""
        columns = list(dict.fromkeys(k for r in rows for k in r))
        self.client.log_table(run_id, {c: [r.get(c) for r in rows] for c in columns}, name)

    # -- one run per trial -----------------------------------------------------------------
    def start_trial(self, parent_id: str, study: str, number: int, params: dict[str, Any],
                    sizes: dict[str, float]) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}", tags={
            MLFLOW_PARENT_RUN_ID: parent_id, "sceneclf.role": "trial", "sceneclf.study": study,
            "sceneclf.trial": str(number), "state": "RUNNING"})
        self._log_params(run.info.run_id, params)
        self.log_metrics(run.info.run_id, sizes)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_checkpoint(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path), "checkpoint")

    def end_trial(self, run_id: str, state: str, reason: str | None = None) -> None:
        """Close a trial's run: its Optuna state as a tag and as the run status."""
        self.client.set_tag(run_id, "state", state)
        if reason:
            self.client.set_tag(run_id, "reason", reason[:500])
        self.client.set_terminated(run_id, status=STATUS.get(state, "FAILED"))

    def close_if_running(self, run_id: str, state: str, reason: str) -> bool:
        """Close a run a dead worker left RUNNING; False when it was already closed. Several
        workers may recover the same dead trial at once: the tag one of them inserts second
        fails on the store's unique key, and a second try (an update by then) succeeds."""
        from mlflow.exceptions import MlflowException

        for attempt in range(3):
            if attempt:
                time.sleep(0.2 * attempt)  # the other closer's insert is committed by then
            try:
                run = self.client.get_run(run_id)
            except Exception:
                return False  # deleted, or the store unreachable: nothing to close now
            if run.info.status != "RUNNING":
                return False
            try:
                self.end_trial(run_id, state, reason)
                return True
            except MlflowException as exc:
                error = exc
        logging.getLogger("sceneclf").warning("run %s not closed (%s); the next recovery tries again",
                                              run_id, first_line(error))
        return False

    def running_trial_runs(self) -> dict[str, int]:
        """Trial runs still RUNNING in the study's experiment: run id -> trial number."""
        runs = self.client.search_runs([self.experiment_id], "tags.`sceneclf.role` = 'trial' and "
                                       "attributes.status = 'RUNNING'", max_results=1000)
        return {r.info.run_id: int(r.data.tags["sceneclf.trial"]) for r in runs
                if r.data.tags.get("sceneclf.trial", "").isdigit()}

    def continue_trial(self, run_id: str, dead_run_id: str | None, epoch: int) -> None:
        """A retry's run goes on from a dead trial's run, where one exists: its per-epoch metrics up
        to `epoch` are copied over (one learning curve), then tags say from which epoch the run
        resumed (`resumed_from_epoch`, always) and link the two."""
        from mlflow.entities import Metric, RunTag
        from mlflow.exceptions import MlflowException

        tags = [RunTag("resumed_from_epoch", str(epoch))]
        try:
            dead = self.client.get_run(dead_run_id) if dead_run_id else None
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            dead = None  # the dead run is gone: nothing to continue
        if dead is not None:
            metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in dead.data.metrics
                       for m in self.client.get_metric_history(dead_run_id, key) if 1 <= m.step <= epoch]
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
            tags += [RunTag("resumed_from_run", dead_run_id), RunTag(
                "mlflow.note.content",
                f"Continues run {dead_run_id} (trial {dead.data.tags.get('sceneclf.trial')}) after epoch {epoch}.")]
        self.client.log_batch(run_id, tags=tags)  # last: a run with the tag holds the whole curve copied

    @property
    def shares_states(self) -> bool:
        """A tracking server is what workers on other machines share; a local store shares the
        disk the training states are written to already."""
        return self.uri.startswith(("http://", "https://"))

    def log_state(self, run_id: str | None, path: Path) -> None:
        """A trial's training state as an artifact of its run (`training-state/`), replacing the last
        copy, for a retry on another machine."""
        if run_id and self.shares_states:
            self.client.log_artifact(run_id, str(path), STATE_ARTIFACTS)

    def fetch_state(self, run_id: str, dest: Path) -> bool:
        """The training state `dest.name` a (dead) run stored, written atomically to `dest`;
        False when it has none."""
        import tempfile

        from sceneclf.atomic import atomic_open

        if not self.shares_states:
            return False
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, f"{STATE_ARTIFACTS}/{dest.name}", tmp)
            except Exception:  # none stored (died before its first state), or the run is gone
                return False
            with atomic_open(dest) as f:
                f.write(Path(local).read_bytes())
        return True

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])
