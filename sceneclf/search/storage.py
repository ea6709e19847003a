"""Optuna storages, samplers and pruners by name, and opening a study's storage."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from sceneclf.errors import ConfigError, first_line
from sceneclf.paths import sqlite_path
from sceneclf.search import PRUNERS, SAMPLERS
from sceneclf.search.record import TrialAttr

HEARTBEAT_SECONDS = int(os.environ.get("SCENECLF_HEARTBEAT", "10"))


def grace_seconds() -> float:
    """How long a running trial may go unheard (no heartbeat, or no worker claiming it) before it
    counts as dead; read at call time, so a changed heartbeat interval carries over."""
    return 3 * HEARTBEAT_SECONDS


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial the heartbeat check failed, carrying `retry_of` as the restart's
    retry does, not the dead attempt's own attributes (its MLflow run, its worker, its resume)."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {TrialAttr.RETRY_OF: trial.number}
        super().__call__(study, trial)


def check_storage(url: str) -> None:
    """An Optuna storage given as a SQLite URL or a journal file must exist: opening a missing
    one would silently create an empty store."""
    path = sqlite_path(url) if "://" in url else Path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"--storage {url}: no Optuna storage at {path} (run `sceneclf search` first)")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite:///, postgresql://, ...) with heartbeats and retry of stale trials, or a
    path to a journal file (`*.log`, `*.journal`)."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))  # replays the file: garbage fails here
        except Exception as exc:
            reason = first_line(exc)
            raise ConfigError(f"--storage {url}: cannot open the journal file ({reason})") from None
    engine_kwargs: dict[str, Any] = {}
    if (db := sqlite_path(url)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent workers wait for the write lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 120}}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=grace_seconds(),
                          heartbeat_stale_trial_callback=RetryStaleTrial(
                              max_retry=2, inherit_intermediate_values=True))
    except Exception as exc:
        reason = first_line(exc)
        raise ConfigError(f"--storage {url}: cannot open ({reason})") from None


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"--sampler {name}: use one of {', '.join(SAMPLERS)}")


# Epochs count from 1: none is pruned before its fourth, so slow starters (strong Freq-MixStyle) get a chance.
# Two completed trials suffice: until then every random start-up trial runs to the limit, the largest too.
PATIENCE = dict(n_startup_trials=2, n_warmup_steps=4, n_min_trials=2)
TOP_THIRD = 100 / 3  # percentile the default pruner keeps: a search spends its time on completed trials


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Every pruner compares a trial's validation accuracy at an epoch with what earlier trials
    reached at the same epoch."""
    if name == "median":  # the best so far below the median of 2 or more completed trials at this epoch
        return optuna.pruners.MedianPruner(**PATIENCE)
    if name == "percentile":  # the same, against the top third
        return optuna.pruners.PercentilePruner(TOP_THIRD, **PATIENCE)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":  # TPE then learns only from the trials of the same bracket (optuna _filter_study)
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name}: use one of {', '.join(PRUNERS)}")


def load_study(storage_url: str, name: str) -> optuna.Study:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {name}: no such study in {storage_url} "
                          f"(studies: {', '.join(names) or 'none'})") from None
