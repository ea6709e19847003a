"""The `sceneclf` command line: parse options, call one library function, print.

Library errors (SceneclfError) become one-line messages with exit code 2, never tracebacks.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import click

from sceneclf.errors import SceneclfError

# Optuna marks heartbeats, grouped TPE and stale-trial retry as experimental; we use them on purpose.
warnings.filterwarnings("ignore", message=".*(experimental|ExperimentalWarning).*")


class CliError(click.ClickException):
    exit_code = 2


class Group(click.Group):
    """Turns library errors into one-line CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SceneclfError as exc:
            raise CliError(str(exc)) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sceneclf")
def cli() -> None:
    """Find the best small CNN for acoustic scene classification under a parameter budget."""


def parse_widths(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        widths = tuple(int(w) for w in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers") from None
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"'{value}': widths must be positive integers")
    return widths


def data_options(f):
    """--data, --layout, --fold, --skip-bad, --cache-dir."""
    @click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
                  help="Data set folder or CSV manifest (default: the embedded synthetic data set).")
    @click.option("--layout", type=click.Choice(["tut2017", "tut2016", "tau2019", "esc50",
                                                 "urbansound8k", "csv", "folders"]),
                  default=None, help="Force a layout instead of detecting it.")
    @click.option("--fold", type=click.IntRange(1, 10), default=1, show_default=True,
                  help="Official fold, where the layout has folds.")
    @click.option("--skip-bad", is_flag=True, help="Drop unreadable audio files with a warning.")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                  envvar="SCENECLF_CACHE", help="Cache folder [env SCENECLF_CACHE; default ~/.cache/sceneclf].")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(2, 10000), default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out_dir: Path, clips_per_class: int, seed: int) -> None:
    """Write the procedural synthetic scene data set (TUT 2017 layout) to OUT_DIR.

    Example: sceneclf synth data/synth --clips-per-class 40 --seed 0
    """
    from sceneclf.data.synth import SynthConfig, write_dataset

    if out_dir.exists() and any(out_dir.iterdir()):
        raise CliError(f"{out_dir}: folder exists and is not empty")
    path = write_dataset(out_dir, SynthConfig(clips_per_class=clips_per_class), seed=seed)
    click.echo(f"wrote {clips_per_class * 15} clips to {path}")


@cli.command()
@data_options
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True), default=3e-3, show_default=True)
@click.option("--widths", callback=parse_widths, default="16,32,64", show_default=True,
              help="Channel width of each conv block.")
@click.option("--kernel-size", type=click.Choice(["1", "3", "5", "7"]), default="3", show_default=True)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--noise", type=click.FloatRange(0, 10), default=0.05, show_default=True,
              help="Training noise: at most this noise-to-signal RMS ratio.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=1e-4, show_default=True)
@click.option("--max-params", type=click.IntRange(1), default=128_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.pt"),
              show_default=True, help="Checkpoint file for the best epoch.")
def train(data, layout, fold, skip_bad, cache_dir, lr, widths, kernel_size, dropout, noise, epochs,
          batch_size, weight_decay, max_params, seed, device, out) -> None:
    """Train one CNN and keep its best checkpoint.

    Example: sceneclf train --widths 16,32,64 --lr 3e-3 --epochs 20 --out model.pt
    """
    from sceneclf import commands

    run = commands.TrainRequest(
        data=commands.data_config(data, layout, fold), cache_dir=cache_dir, skip_bad=skip_bad,
        lr=lr, widths=widths, kernel_size=int(kernel_size), dropout=dropout, noise=noise,
        epochs=epochs, batch_size=batch_size, weight_decay=weight_decay, max_params=max_params,
        seed=seed, device=device, out=out)
    commands.train_command(run, echo=click.echo)


def study_options(f):
    """--study, --storage, --tracking-uri."""
    @click.option("--study", default="sceneclf", show_default=True, help="Optuna study name.")
    @click.option("--storage", default=None, envvar="SCENECLF_STORAGE",
                  help="Optuna storage: an RDB URL (sqlite:///..., postgresql://...) or a journal file "
                       "path [env SCENECLF_STORAGE; default sqlite:///studies/sceneclf.db].")
    @click.option("--tracking-uri", default=None,
                  help="MLflow tracking URI [env MLFLOW_TRACKING_URI; default sqlite:///mlruns/mlflow.db].")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


@cli.command()
@click.option("--trials", type=click.IntRange(1), default=50, show_default=True,
              help="Run until this many MORE trials have finished or been pruned (over-budget trials "
                   "count as pruned; failed ones are not counted, and those cut off by a dead process "
                   "or machine run again). Stops early, exit code 1, when 5 trials in a row fail.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop starting trials after this many seconds.")
@data_options
@study_options
@click.option("--space", default="search/default.toml", show_default=True,
              help="Search-space TOML file, or a packaged space name (default, dcase-low-complexity).")
@click.option("--max-params", type=click.IntRange(1), default=None,
              help="Parameter budget (overrides the space's [budget]; default 128000).")
@click.option("--sampler", type=click.Choice(["tpe", "random", "gp", "cmaes"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["median", "percentile", "asha", "hyperband", "none"]),
              default="median", show_default=True,
              help="median: stop a trial whose best accuracy so far is below the median of earlier "
                   "trials at the same epoch (from epoch 2, after 4 completed trials); percentile: "
                   "below their top quarter; asha: successive halving at epochs 1, 3, 9; hyperband; none.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epoch limit per trial (default: the space's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes on this machine, sharing the study, the trial count and the CPU threads.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-mlflow", is_flag=True, help="Do not track in MLflow.")
def search(trials, timeout, data, layout, fold, skip_bad, cache_dir, study, storage, tracking_uri,
           space, max_params, sampler, pruner, epochs, seed, device, jobs, no_progress, no_mlflow) -> None:
    """Search CNNs under the budget with Optuna; track every trial in MLflow.

    Running the same command again resumes the same study.

    Example: sceneclf search --trials 50 --sampler tpe --pruner median
    """
    from sceneclf import commands

    req = commands.SearchRequest(
        trials=trials, timeout=timeout, data=commands.data_config(data, layout, fold), skip_bad=skip_bad,
        cache_dir=cache_dir, study=study, storage=storage, tracking_uri=tracking_uri, space=space,
        max_params=max_params, sampler=sampler, pruner=pruner, epochs=epochs, seed=seed, device=device,
        progress=not no_progress, mlflow=not no_mlflow, jobs=jobs)
    outcome = commands.search_command(req, echo=click.echo)
    if outcome.stopped_because:  # every recent trial failed: said why; scripts must notice
        click.get_current_context().exit(1)


@cli.command()
@study_options
@data_options
@click.option("--trials", type=click.IntRange(1), default=None,
              help="Run until this many more trials have finished (default: the target of the search "
                   "that started the study).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for this worker.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--worker-index", type=click.IntRange(0), default=0, hidden=True)
@click.option("--no-progress", is_flag=True)
@click.option("--no-mlflow", is_flag=True, help="Do not track in MLflow.")
def worker(study, storage, tracking_uri, data, layout, fold, skip_bad, cache_dir, trials, timeout,
           threads, seed, device, worker_index, no_progress, no_mlflow) -> None:
    """Join an existing study's search from this process or machine.

    The study stores its search space, budget and data settings; a worker with a different
    data set (fingerprint) is refused.

    Example: sceneclf worker --study sceneclf --storage postgresql://user@db/optuna --tracking-uri http://mlflow:5000
    """
    from sceneclf import commands

    req = commands.WorkerRequest(
        study=study, storage=storage, tracking_uri=tracking_uri,
        data=commands.data_config(data, layout, fold) if data is not None else None,
        cache_dir=cache_dir, skip_bad=skip_bad, trials=trials, timeout=timeout, threads=threads,
        seed=seed, device=device, progress=not no_progress, mlflow=not no_mlflow, worker_index=worker_index)
    outcome = commands.worker_command_run(req, echo=click.echo)
    if outcome.stopped_because:
        click.get_current_context().exit(1)


@cli.command("retrain-best")
@study_options
@data_options
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Epochs (default: the best trial's best epoch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.pt"),
              show_default=True, help="Checkpoint file of the final model.")
def retrain_best(study, storage, tracking_uri, data, layout, fold, skip_bad, cache_dir, epochs, seed,
                 device, out) -> None:
    """Retrain the best trial on train + validation data, test it, register it in MLflow.

    Example: sceneclf retrain-best --study sceneclf --out model.pt
    """
    from sceneclf import commands

    req = commands.RetrainRequest(
        study=study, storage=storage, tracking_uri=tracking_uri,
        data=commands.data_config(data, layout, fold) if data is not None else None,
        cache_dir=cache_dir, skip_bad=skip_bad, epochs=epochs, seed=seed, device=device, out=out)
    commands.retrain_command(req, echo=click.echo)


from sceneclf import cli_results  # noqa: E402,F401  (registers evaluate, predict, report, ui, studies)
