"""The work behind the commands, between the CLI (parsing) and the library: requests in, output through `echo`."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, PreparedData, check_trainable, default_cache_dir, prepare
from sceneclf.echo import Echo
from sceneclf.errors import ConfigError
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import Budget, Cost, count_params, summarize
from sceneclf.model.checkpoint import Checkpoint, save_checkpoint
from sceneclf.model.cnn import ModelConfig
from sceneclf.model.frontend import FeatureConfig
from sceneclf.search.front import front_table
from sceneclf.search.record import StudyAttr, TrialAttr, trial_value
from sceneclf.search.space import load_space
from sceneclf.search.study import SearchOutcome, SearchSettings, mlflow_ui_command, run_search, top_trials_table
from sceneclf.tasks.reference import Reference, fit_reference
from sceneclf.tracking.tracker import open_tracker
from sceneclf.train import TrainConfig, pick_device, score, train_model

if TYPE_CHECKING:
    from sceneclf.cli.zygote import Zygote


def data_config(data: Path | None, layout: str | None, fold: int) -> DataConfig:
    return DataConfig(data=str(data) if data is not None else None, layout=layout, fold=fold)


def load_data(cfg: DataConfig, cache_dir: Path | None, skip_bad: bool, echo: Echo,
              audio: AudioConfig = AudioConfig(), features: FeatureConfig = FeatureConfig()) -> PreparedData:
    """Prepare the data and say what was loaded (and what was skipped)."""
    prepared = prepare(cfg, audio, features, cache_dir or default_cache_dir(), skip_bad=skip_bad)
    sizes = ", ".join(f"{s} {len(m)}" for s, m in prepared.splits.items())
    echo(f"data: {prepared.manifest.root} ({prepared.manifest.layout}), "
         f"{len(prepared.classes)} classes, {sizes}")
    if prepared.skipped:
        echo(f"warning: skipped {len(prepared.skipped)} unreadable file(s); first: {prepared.skipped[0]}")
    check_trainable(prepared)
    return prepared


def describe_budget(budget: Budget) -> str:
    """The budget's limits in words, e.g. '128,000 parameters, 128 kB at int8'."""
    parts = [f"{budget.max_params:,} parameters"]
    if budget.max_kb is not None:
        parts.append(f"{budget.max_kb:g} kB at {budget.precision}")
    if budget.max_macs_per_second is not None:
        parts.append(f"{budget.max_macs_per_second:,.0f} MACs per second of audio")
    if budget.max_macs is not None:
        parts.append(f"{budget.max_macs:,} MACs per clip")
    return ", ".join(parts)


def reference_for(prepared: PreparedData, seed: int, echo: Echo) -> Reference:
    """The bag-of-frames reference on the prepared splits, said in one line."""
    reference = fit_reference(prepared.splits, seed)
    echo(f"bag-of-frames reference (logistic regression on band means and stds): "
         f"val_accuracy {reference.val_accuracy:.3f}, test_accuracy {reference.test_accuracy:.3f}")
    return reference


def check_writable(path: Path, option: str = "--out") -> None:
    """Refuse an output file that cannot be written before any work is done."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class TrainRequest:
    data: DataConfig
    cache_dir: Path | None
    skip_bad: bool
    lr: float
    widths: tuple[int, ...]
    kernel_size: int
    dropout: float
    noise: float
    epochs: int
    batch_size: int
    weight_decay: float
    max_params: int
    seed: int
    device: str
    out: Path
    augment: AugmentConfig = AugmentConfig()


def train_command(req: TrainRequest, echo: Echo) -> dict[str, float]:
    device = pick_device(req.device)
    check_writable(req.out)
    features = FeatureConfig(noise=req.noise)
    train_cfg = TrainConfig(lr=req.lr, weight_decay=req.weight_decay, batch_size=req.batch_size,
                            epochs=req.epochs, seed=req.seed)
    budget = Budget(max_params=req.max_params)
    # Before any data is read, the smallest head (2 classes): a model over budget even so is refused.
    smallest = ModelConfig(n_classes=2, widths=req.widths, kernel_size=req.kernel_size, dropout=req.dropout)
    budget.check(Cost(count_params(smallest), 0, 1.0))
    prepared = load_data(req.data, req.cache_dir, req.skip_bad, echo, features=features)
    model_cfg = replace(smallest, n_classes=len(prepared.classes))
    budget.check(Cost(count_params(model_cfg), 0, 1.0))
    reference = reference_for(prepared, req.seed, echo)
    echo(summarize(model_cfg, (features.n_mels, prepared.frames)).format())

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        echo(f"epoch {epoch:3d}/{req.epochs}  train_loss {m['train_loss']:.4f}  "
             f"val_loss {m['val_loss']:.4f}  val_acc {m['val_accuracy']:.3f}  "
             f"lr {m['lr']:.2e}  {m['seconds']:.1f}s")

    model, result = train_model(features, model_cfg, train_cfg, budget, prepared.splits["train"],
                                prepared.splits["val"], prepared.frames, on_epoch=on_epoch,
                                device=device, augment=req.augment)
    model.cpu()
    test_acc, test_loss, logits = score(model, prepared.splits["test"], prepared.frames)
    devices = prepared.devices("test", logits)
    metrics = {"val_accuracy": result.best_val_accuracy, "val_loss": result.best_val_loss,
               "test_accuracy": test_acc, "test_loss": test_loss, "best_epoch": result.best_epoch,
               **reference.to_dict(), **(devices.metrics("test_") if devices else {})}
    save_checkpoint(req.out, Checkpoint(model, AudioConfig(), features, model_cfg, prepared.classes,
                                        train={**asdict(train_cfg), "augment": asdict(req.augment)},
                                        metrics=metrics))
    echo(f"best epoch {result.best_epoch}: val_accuracy {result.best_val_accuracy:.3f}; "
         f"test_accuracy {test_acc:.3f} vs bag-of-frames reference {reference.test_accuracy:.3f}")
    if devices:
        echo(f"test {devices.format()}")
    echo(f"checkpoint: {req.out}")
    return metrics


@dataclass(frozen=True)
class SearchRequest:
    trials: int
    timeout: float | None
    data: DataConfig
    skip_bad: bool
    cache_dir: Path | None
    study: str
    storage: str | None
    tracking_uri: str | None
    space: str
    max_params: int | None
    max_kb: float | None
    max_macs_per_second: float | None
    precision: str | None
    sampler: str
    pruner: str
    epochs: int | None
    seed: int
    device: str
    progress: bool = True
    mlflow: bool = True
    jobs: int | str = 1
    objectives: str = "accuracy"  # or accuracy,kb / accuracy,macs: a multi-objective study
    fork_workers: bool = False  # the command has this process to itself: fork the workers (cli.zygote)


def resolve_tracking_uri(given: str | None, mlflow: bool) -> str | None:
    """The MLflow store a command tracks in: the one given, else the default; None without MLflow."""
    from sceneclf.tracking.stores import default_tracking_uri

    return (given or default_tracking_uri()) if mlflow else None


def search_settings(req: SearchRequest) -> SearchSettings:
    from sceneclf.search import DEFAULT_STORAGE

    return SearchSettings(
        study=req.study, storage=req.storage or DEFAULT_STORAGE,
        tracking_uri=resolve_tracking_uri(req.tracking_uri, req.mlflow),
        sampler=req.sampler, pruner=req.pruner if req.objectives == "accuracy" else "none", epochs=req.epochs,
        seed=req.seed, device=str(pick_device(req.device)), data=req.data,
        objectives=tuple(req.objectives.split(",")))


AUTO_MAX_JOBS = 4  # TPE learns from finished trials: more parallel workers sample more blindly
WORKER_BYTES = 2 * 1024**3  # a search worker's peak resident memory, with room (bench e2e)


def auto_jobs(cores: int, available_bytes: int | None, device: str) -> int:
    """`--jobs auto`: a 1-thread worker per core on CPU (as memory allows, <= AUTO_MAX_JOBS); one on a GPU."""
    if device != "cpu":
        return 1
    fit = max(1, available_bytes // WORKER_BYTES) if available_bytes else cores
    return max(1, min(cores, fit, AUTO_MAX_JOBS))


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where the kernel does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resolve_jobs(jobs: int | str, device: str, trials: int) -> int:
    """The number of worker processes for `--jobs` (a number, or auto), never more than the trials."""
    from sceneclf.data.pool import usable_cores

    n = auto_jobs(usable_cores(), available_memory(), device) if jobs == "auto" else int(jobs)
    return max(1, min(n, trials))


def split_threads(jobs: int) -> int:
    """Give each of `jobs` processes its share of the CPU threads; returns the share."""
    import torch

    from sceneclf.data.pool import usable_cores

    share = max(1, usable_cores() // jobs)
    if jobs > 1:
        torch.set_num_threads(share)
    return share


def worker_args(req: SearchRequest, settings: SearchSettings, threads: int) -> list[str]:
    """The arguments of one `--jobs` worker: `sceneclf worker` on the same study."""
    cmd = ["worker", "--study", settings.study, "--storage",
           settings.storage, "--threads", str(threads), "--seed", str(req.seed), "--device", req.device,
           "--no-progress"]
    cmd += ["--tracking-uri", settings.tracking_uri] if settings.tracking_uri else ["--no-mlflow"]
    if req.cache_dir:
        cmd += ["--cache-dir", str(req.cache_dir)]
    if req.skip_bad:
        cmd += ["--skip-bad"]
    return cmd


@dataclass(frozen=True)
class WorkerRequest:
    study: str
    storage: str | None
    tracking_uri: str | None
    data: DataConfig | None
    cache_dir: Path | None
    skip_bad: bool
    trials: int | None
    timeout: float | None
    threads: int | None
    seed: int
    device: str
    progress: bool = False
    mlflow: bool = True
    worker_index: int = 0


def worker_command_run(req: WorkerRequest, echo: Echo) -> SearchOutcome:
    """`sceneclf worker`: join a study's search from this process or machine."""
    import torch

    from sceneclf.search import DEFAULT_STORAGE
    from sceneclf.search.study import join_study

    if req.threads:
        torch.set_num_threads(req.threads)
    device = pick_device(req.device)
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        device = torch.device("cuda", req.worker_index % torch.cuda.device_count())
    settings = SearchSettings(
        study=req.study, storage=req.storage or DEFAULT_STORAGE,
        tracking_uri=resolve_tracking_uri(req.tracking_uri, req.mlflow),
        seed=req.seed + 1000 * req.worker_index, device=str(device))
    open_tracker(settings.tracking_uri, settings.study)  # fails fast on an unusable MLflow store
    outcome = join_study(settings, lambda cfg: load_data(cfg, req.cache_dir, req.skip_bad, echo),
                         req.trials, req.timeout, echo, progress=req.progress, data=req.data)
    if outcome.stopped_because:
        echo(f"worker {req.worker_index} stopped: {outcome.stopped_because}")
    echo(f"worker {req.worker_index} done: study {req.study!r} has {len(outcome.study.trials)} trials")
    return outcome


def search_command(req: SearchRequest, echo: Echo) -> SearchOutcome:
    """`sceneclf search`; with `req.fork_workers` and several jobs, a zygote forks the workers first."""
    from sceneclf.cli.zygote import Zygote, can_fork

    zygote = Zygote.start() if req.fork_workers and req.jobs != 1 and can_fork() else None
    try:
        return _search(req, echo, zygote)
    finally:
        if zygote is not None:
            zygote.close()


def _search(req: SearchRequest, echo: Echo, zygote: Zygote | None) -> SearchOutcome:
    from sceneclf.cli.zygote import starter

    space = load_space(req.space)
    overrides = {"max_params": req.max_params, "max_kb": req.max_kb,
                 "max_macs_per_second": req.max_macs_per_second, "precision": req.precision}
    space = replace(space, budget=replace(space.budget, **{k: v for k, v in overrides.items() if v is not None}))
    settings = search_settings(req)
    open_tracker(settings.tracking_uri, settings.study)  # fails fast on an unusable MLflow store
    prepared = load_data(req.data, req.cache_dir, req.skip_bad, echo)
    reference = reference_for(prepared, req.seed, echo)
    echo(f"study {settings.study!r} in {settings.storage}; space {space.name}; "
         f"budget {describe_budget(space.budget)}")
    if len(settings.objectives) > 1 and req.pruner != "none":
        echo(f"objectives {req.objectives}: no pruning (Optuna cannot prune a multi-objective study)")
    jobs = resolve_jobs(req.jobs, settings.device, req.trials)
    threads = split_threads(jobs)
    if jobs > 1:
        echo(f"{jobs} worker processes, {threads} thread(s) each (--jobs {req.jobs})")
    outcome = run_search(settings, space, prepared, req.trials, req.timeout, echo, progress=req.progress,
                         jobs=jobs, start_worker=starter(worker_args(req, settings, threads), zygote),
                         reference=reference.to_dict())
    echo(top_trials_table(outcome.study))
    if len(settings.objectives) > 1:
        echo(front_table(outcome.study))
    if outcome.stopped_because:
        echo(f"search stopped: {outcome.stopped_because}")
    if outcome.best is None:
        echo("no trial has finished within the budget yet")
    else:
        echo(f"best: trial {outcome.best.number}, val_accuracy {trial_value(outcome.best):.3f} "
             f"vs bag-of-frames reference {reference.val_accuracy:.3f}")
        if trial_value(outcome.best) <= reference.val_accuracy:
            echo("the best trial is not above the bag-of-frames reference: on these data the CNNs found "
                 "so far have learnt no more than each clip's average spectrum")
        echo(f"best checkpoint: {outcome.best_checkpoint}")
    if settings.tracking_uri:
        echo(f"MLflow: {mlflow_ui_command(settings.tracking_uri, outcome.experiment_id)}")
    return outcome


@dataclass(frozen=True)
class RetrainRequest:
    study: str
    storage: str | None
    tracking_uri: str | None
    data: DataConfig | None  # None: the data the study was searched with
    cache_dir: Path | None
    skip_bad: bool
    epochs: int | None
    seed: int
    device: str
    out: Path
    trial: int | None = None
    max_kb: float | None = None
    mlflow: bool = True


def retrain_command(req: RetrainRequest, echo: Echo) -> dict:
    from sceneclf.search import DEFAULT_STORAGE
    from sceneclf.search.storage import load_study
    from sceneclf.tasks import retrain
    from sceneclf.tracking.models import REGISTERED_MODEL, log_retrained_model, trial_checkpoint

    check_writable(req.out)
    storage = req.storage or DEFAULT_STORAGE
    study = load_study(storage, req.study)
    data_cfg = req.data or retrain.stored_data_config(study)
    tracking_uri = resolve_tracking_uri(req.tracking_uri, req.mlflow)
    prepared = load_data(data_cfg, req.cache_dir, req.skip_bad, echo)
    best = retrain.best_trial_configs(study, len(prepared.classes), seed=req.seed, number=req.trial,
                                      max_kb=req.max_kb)
    echo(f"trial {best.trial.number}: val_accuracy {trial_value(best.trial):.3f}; params {best.trial.params}")
    echo(summarize(best.configs.model, (best.configs.features.n_mels, prepared.frames)).format())
    ckpt, history = retrain.retrain(best, prepared, req.epochs, req.seed, str(pick_device(req.device)), echo)
    against_trial = retrain.against_trial(trial_checkpoint(best.trial.user_attrs.get(TrialAttr.RUN_ID), tracking_uri),
                                          ckpt, prepared, req.seed)
    save_checkpoint(req.out, ckpt)
    reference = study.user_attrs.get(StudyAttr.REFERENCE) or {}
    against = (f" vs bag-of-frames reference {reference['reference_test_accuracy']:.3f}"
               if "reference_test_accuracy" in reference else "")
    echo(f"test_accuracy {ckpt.metrics['test_accuracy']:.3f} (held-out test split, "
         f"{len(prepared.splits['test'])} clips){against}")
    by_device = [f"{name} devices {ckpt.metrics[f'test_accuracy_{name}_devices']:.3f}"
                 for name in ("heard", "unheard") if f"test_accuracy_{name}_devices" in ckpt.metrics]
    if by_device:
        echo(f"test_accuracy on {', '.join(by_device)} (heard: in the training split)")
    for line in against_trial:
        echo(line)
    precision = ckpt.train["precision"]
    if precision != "fp32":
        echo(f"test_accuracy at {precision} (as it ships) {ckpt.metrics[f'test_accuracy_{precision}']:.3f}, "
             f"float {ckpt.metrics['test_accuracy']:.3f}")
    echo(f"checkpoint: {req.out}")
    result = {"checkpoint": str(req.out), **ckpt.metrics}
    if tracking_uri:
        run_id, version = log_retrained_model(tracking_uri, req.study, best.trial.number, best.parent_run_id,
                                              best.configs.flat(), ckpt, history, req.out, AudioConfig().clip_samples,
                                              deployed=retrain.deployed_model(ckpt, prepared)
                                              if precision != "fp32" else None)
        echo(f"MLflow run {run_id}; registered model {REGISTERED_MODEL!r} version {version} "
             f"(models:/{REGISTERED_MODEL}/{version})")
        result.update(run_id=run_id, version=version)
    return result
