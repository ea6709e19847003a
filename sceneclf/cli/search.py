"""`sceneclf search` and `sceneclf worker`: run a study, or join one."""

from __future__ import annotations

import click

from sceneclf.cli.group import cli
from sceneclf.cli.options import AutoOrCount, data_options, device_option, study_options
from sceneclf.model import PRECISIONS
from sceneclf.search import DEFAULT_PRUNER, OBJECTIVES, PRUNERS, SAMPLERS


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
@click.option("--max-kb", type=click.FloatRange(0, min_open=True), default=None,
              help="Parameter memory budget in kB (1000 bytes) at --precision (overrides the space's).")
@click.option("--max-macs-per-second", type=click.FloatRange(0, min_open=True), default=None,
              help="MACs of one forward pass per second of audio (overrides the space's).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Precision the model ships in, for --max-kb [default: the space's, else fp32].")
@click.option("--objectives", type=click.Choice(OBJECTIVES), default="accuracy", show_default=True,
              help="accuracy,kb or accuracy,macs: a multi-objective study (maximize accuracy, minimize kB at "
                   "--precision or MACs per second; budget limits still apply) whose result is the "
                   "accuracy-size Pareto front; unpruned, as Optuna cannot prune such studies.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS),
              default=DEFAULT_PRUNER, show_default=True,
              help="percentile: stop a trial whose best accuracy so far is below the top third of the "
                   "completed trials at the same epoch (from epoch 4, after 4 completed trials); median: "
                   "below their median; asha: successive halving at epochs 1, 3, 9; hyperband; none.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epoch limit per trial (default: the space's).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--jobs", type=AutoOrCount(64), default="auto", show_default=True, envvar="SCENECLF_JOBS",
              help="Worker processes on this machine, sharing the study, the trial count and the CPU threads; "
                   "auto: one per core on the CPU (at most 4, and as many as free memory holds), one on a GPU. "
                   "--jobs 1 makes a seeded search repeatable.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-mlflow", is_flag=True, help="Do not track in MLflow.")
def search(trials, timeout, data, layout, fold, skip_bad, cache_dir, study, storage, tracking_uri,
           space, max_params, max_kb, max_macs_per_second, precision, objectives, sampler, pruner, epochs, seed,
           device, jobs, no_progress, no_mlflow) -> None:
    """Search CNNs under the budget with Optuna; track every trial in MLflow.

    Running the same command again resumes the same study.

    Example: sceneclf search --trials 50 --sampler tpe --pruner percentile

    Example: sceneclf search --space dcase-low-complexity --objectives accuracy,kb --trials 60
    """
    from sceneclf.cli import actions

    req = actions.SearchRequest(
        trials=trials, timeout=timeout, data=actions.data_config(data, layout, fold), skip_bad=skip_bad,
        cache_dir=cache_dir, study=study, storage=storage, tracking_uri=tracking_uri, space=space,
        max_params=max_params, max_kb=max_kb, max_macs_per_second=max_macs_per_second, precision=precision,
        sampler=sampler, pruner=pruner, epochs=epochs, seed=seed, device=device,
        progress=not no_progress, mlflow=not no_mlflow, jobs=jobs, objectives=objectives,
        fork_workers=(click.get_current_context().find_root().obj or {}).get("own_process", False))
    outcome = actions.search_command(req, echo=click.echo)
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
@device_option
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
    from sceneclf.cli import actions

    req = actions.WorkerRequest(
        study=study, storage=storage, tracking_uri=tracking_uri,
        data=actions.data_config(data, layout, fold) if data is not None else None,
        cache_dir=cache_dir, skip_bad=skip_bad, trials=trials, timeout=timeout, threads=threads,
        seed=seed, device=device, progress=not no_progress, mlflow=not no_mlflow, worker_index=worker_index)
    outcome = actions.worker_command_run(req, echo=click.echo)
    if outcome.stopped_because:
        click.get_current_context().exit(1)
