"""Mid-trial resume: a trial's whole training state is kept beside the study's checkpoints after
each epoch, so the retry of a trial whose worker died goes on at the next epoch.

A retry is a new Optuna trial with the same parameters and the reports already made: queued on
restart (`recovery.recover_dead_trials`, `retry_of` user attribute) or by the heartbeat check
(Optuna's `failed_trial` / `retry_history` system attributes). Every attempt of one chain writes
the same file, named after the chain's first trial, so it holds the newest state and the folder
holds at most one per running trial. A state that does not load (torn, another sceneclf, other
data, another configuration) is refused with one line in the log and the trial starts afresh.

Where MLflow is a tracking server (what machines share), the state is also stored on the trial's
run (`training-state/`, as often as its upload time allows: `MIRROR_SPACING`), and a retry with no
state on its disk takes the newest one its chain's runs hold. MLflow gets a new run per attempt, linked to the dead one (`resumed_from_run` tag), which copies
its learning curve up to the resumed epoch: each run keeps its own trial's status, and a reopened
FAILED run would race with other workers closing the runs of failed trials.

`SCENECLF_STATE_SECONDS` (default 0: after every epoch) is the least time between two writes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import torch

from sceneclf import __version__
from sceneclf.atomic import atomic_open
from sceneclf.errors import first_line
from sceneclf.search.record import TrialAttr
from sceneclf.tracking.tracker import Tracker

FORMAT = "sceneclf.train-state"
STATE_VERSION = 2
STATE_SECONDS = float(os.environ.get("SCENECLF_STATE_SECONDS", "0"))
MIRROR_SPACING = 40  # the copy to MLflow waits 40x its last upload time: at most 2.5 % of training
FIT_KEYS = {"epoch", "model", "average", "optimizer", "scheduler", "scaler", "stale", "history", "best", "rng"}
log = logging.getLogger("sceneclf")


def state_path(checkpoint_dir: Path, number: int) -> Path:
    return checkpoint_dir / f"trial-{number:04d}.state"


def predecessor(t: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one retries: the heartbeat's retry history (studies whose retries copied
    every user attribute, `retry_of` included, still hold it), else `retry_of`."""
    history = t.system_attrs.get("retry_history")
    if history:
        return int(history[-1])
    retry_of = t.user_attrs.get(TrialAttr.RETRY_OF)
    return None if retry_of is None else int(retry_of)


def attempts_back(trials: list[optuna.trial.FrozenTrial], number: int | None) -> Iterator[int]:
    """Trial `number`, then each earlier attempt of its retry chain, back to the first."""
    while number is not None:
        yield number
        before = predecessor(trials[number])
        number = before if before is not None and before < number else None


def chain_root(trials: list[optuna.trial.FrozenTrial], number: int) -> int:
    """The first trial of the retry chain `number` belongs to."""
    return list(attempts_back(trials, number))[-1]


class TrainingState:
    """The training state of one trial's chain (a `train.StateStore`)."""

    def __init__(self, path: Path, number: int, configs: dict[str, Any], fingerprint: str,
                 every_s: float = STATE_SECONDS, mirror: Callable[[Path], None] | None = None,
                 mirror_spacing: float = MIRROR_SPACING):
        self.path, self.number, self.configs, self.fingerprint = path, number, configs, fingerprint
        self.every_s = every_s
        self.mirror = mirror  # also called with the file after a write (the MLflow run's copy)
        self._mirrored, self._mirror_cost, self._spacing = -math.inf, 0.0, mirror_spacing
        self.saved: dict[str, Any] | None = None
        self.writer: int | None = None  # the trial whose training wrote the state read
        self._last = -math.inf
        self._warned = False

    def read(self) -> dict[str, Any] | None:
        """The state on disk if it is whole and fits this trial, else None (refused in one line,
        and removed)."""
        if not self.path.exists():
            return None
        fit, reason = self._check()
        if reason is not None:
            log.warning("trial %d: training state %s refused: %s; training from scratch", self.number,
                        self.path.name, reason)
            self.path.unlink(missing_ok=True)
        self.saved = fit
        return fit

    def _check(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            raw = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torn or not a state at all: any reason torch gives
            return None, f"unreadable ({first_line(exc, 200)})"
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            return None, "not a sceneclf training state"
        if raw.get("version") != STATE_VERSION or raw.get("code") != __version__:
            return None, (f"written by another sceneclf ({raw.get('code')}, state version {raw.get('version')}; "
                          f"this is {__version__}, state version {STATE_VERSION})")
        if raw.get("fingerprint") != self.fingerprint:
            return None, f"other data (fingerprint {raw.get('fingerprint')}, study {self.fingerprint})"
        if raw.get("configs") != self.configs:
            return None, "another trial configuration"
        fit = raw.get("fit")
        if not isinstance(fit, dict) or set(fit) != FIT_KEYS:
            return None, "incomplete"
        self.writer = raw["trial"] if isinstance(raw.get("trial"), int) else None
        return fit, None

    def load(self) -> dict[str, Any] | None:
        return self.saved

    def save(self, epoch: int, state: Callable[[], dict[str, Any]]) -> None:
        """Write the state after `epoch` (atomically), at most once per `every_s` seconds; a
        failed write is said once and training goes on."""
        if time.monotonic() - self._last < self.every_s:
            return
        payload = {"format": FORMAT, "version": STATE_VERSION, "code": __version__, "trial": self.number,
                   "fingerprint": self.fingerprint, "configs": self.configs, "fit": state()}
        try:
            with atomic_open(self.path) as f:
                torch.save(payload, f)
            if self.mirror is not None and time.monotonic() - self._mirrored >= self._spacing * self._mirror_cost:
                start = time.monotonic()
                self.mirror(self.path)
                self._mirrored = time.monotonic()
                self._mirror_cost = self._mirrored - start
        except Exception as exc:  # disk full, the tracking server gone: training matters more
            if not self._warned:
                log.warning("trial %d: training state not saved (%s); a crash restarts it", self.number,
                            first_line(exc))
                self._warned = True
            return
        self._last = time.monotonic()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def open_state(trial: optuna.Trial, checkpoint_dir: Path, configs: dict[str, Any], fingerprint: str,
               tracker: Tracker, run_id: str | None) -> TrainingState:
    """The state store of `trial`. For a retry, loads its chain's last state, and says so: the
    `resumed_from_epoch` user attribute (0: from scratch) and, on the MLflow run, the dead run's
    learning curve up to that epoch and the link to it."""
    trials = trial.study.get_trials(deepcopy=False)
    store = TrainingState(state_path(checkpoint_dir, chain_root(trials, trial.number)), trial.number, configs,
                          fingerprint, mirror=lambda path: tracker.log_state(run_id, path))
    before = predecessor(trials[trial.number])
    if before is None or before >= trial.number:
        return store
    if not store.path.exists():  # died on another machine: its run may hold the state
        _fetch(trials, before, store.path, tracker)
    saved = store.read()
    epoch = int(saved["epoch"]) if saved is not None else 0
    trial.set_user_attr(TrialAttr.RESUMED_FROM_EPOCH, epoch)
    # The curve to continue is the run of the attempt that wrote the state: an attempt killed
    # before it trained (or before its run began) has none.
    source = store.writer if saved is not None and store.writer is not None and store.writer < trial.number else before
    dead_run = _chain_run(trials, source)
    if run_id is not None:
        tracker.continue_trial(run_id, dead_run if dead_run != run_id else None, epoch)
    return store


def _chain_run(trials: list[optuna.trial.FrozenTrial], number: int | None) -> str | None:
    """The MLflow run of trial `number`, else of the nearest earlier attempt of its chain that has one."""
    return next((run for n in attempts_back(trials, number) if (run := trials[n].user_attrs.get(TrialAttr.RUN_ID))),
                None)


def _fetch(trials: list[optuna.trial.FrozenTrial], number: int | None, dest: Path, tracker: Tracker) -> None:
    """The newest state the chain's runs stored, from the latest attempt back."""
    for n in attempts_back(trials, number):
        run = trials[n].user_attrs.get(TrialAttr.RUN_ID)
        if run and tracker.fetch_state(run, dest):
            return


def discard_state(study: optuna.Study, number: int, checkpoint_dir: Path) -> None:
    """Remove the state of a trial recorded by its own process (finished, pruned or failed
    there: no retry resumes it)."""
    try:
        trials = study.get_trials(deepcopy=False)
        state_path(checkpoint_dir, chain_root(trials, number)).unlink(missing_ok=True)
    except Exception as exc:  # the storage is failing: the next worker's sweep removes it
        log.warning("trial %d: training state not removed (%s)", number, first_line(exc))


def sweep_states(study: optuna.Study, checkpoint_dir: Path) -> list[int]:
    """Remove states no waiting or running trial can resume from (its chain ended, or its
    retries ran out). Returns the chain numbers removed."""
    trials = study.get_trials(deepcopy=False)
    live = {chain_root(trials, t.number) for t in trials
            if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)}
    removed = []
    for path in checkpoint_dir.glob("trial-*.state"):
        number = path.stem[6:]
        if number.isdigit() and int(number) not in live:
            path.unlink(missing_ok=True)
            removed.append(int(number))
    return sorted(removed)
