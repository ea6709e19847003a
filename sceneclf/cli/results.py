"""Commands that use a search's results: evaluate, predict, report, ui, studies."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sceneclf import atomic
from sceneclf.cli.group import cli
from sceneclf.cli.options import STORAGE_HELP, TRACKING_HELP, data_options, study_options
from sceneclf.model import PRECISIONS
from sceneclf.search import DEFAULT_STORAGE


def _storage(storage: str | None) -> str:
    return storage or DEFAULT_STORAGE


@cli.command()
@click.argument("model")
@data_options
@click.option("--split", type=click.Choice(["test", "val", "all"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text summary.")
@click.option("--out-html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Confusion-matrix page [default: ./<model name>-<split>-confusion.html].")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
              help="Log the metrics and figure to an MLflow run there (always done for MLflow models, "
                   "nested under the model's run) [env MLFLOW_TRACKING_URI].")
@click.option("--experiment", default="sceneclf", show_default=True,
              help="MLflow experiment for a checkpoint file's evaluation run.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Also score the model converted to this precision [default: the one it ships in, "
                   "as retrain-best stored it].")
def evaluate(model, data, layout, fold, skip_bad, cache_dir, split, as_json, out_html, tracking_uri,
             experiment, precision) -> None:
    """Accuracy, macro-F1, per-class accuracy and the most confused pairs of a model.

    MODEL is a checkpoint file or an MLflow model URI (models:/sceneclf/3, runs:/<run id>/model).
    Scores whole clips of the data set's test split (default: the embedded synthetic data), in
    float and, for a model that ships in fp16 or int8, at that precision too.

    Example: sceneclf evaluate models:/sceneclf/1 --split test --precision int8 --json
    """
    from sceneclf.cli import actions
    from sceneclf.data.prepare import default_cache_dir
    from sceneclf.report.figures import figure_html
    from sceneclf.tasks import evaluate as ev
    from sceneclf.tracking import models

    echo = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    loaded = models.load_model(model, tracking_uri)
    echo(f"model: {loaded.source} ({len(loaded.checkpoint.classes)} classes)")
    result = ev.evaluate_model(loaded, actions.data_config(data, layout, fold), split,
                               cache_dir or default_cache_dir(), skip_bad, echo=echo, precision=precision)
    out_html = (out_html or Path(f"{loaded.label}-{split}-confusion.html")).absolute()
    page = figure_html(ev.confusion_figure(result), offline=True)
    atomic.write_text(out_html, page)
    run_id = None
    if loaded.run_id is not None or tracking_uri is not None:
        from sceneclf.tracking.stores import default_tracking_uri

        run_id = models.log_evaluation(tracking_uri or default_tracking_uri(), loaded, split, ev.evaluation_metrics(result),
                                       {"model": loaded.source, "data": result.data, "split": split},
                                       json.dumps(result.to_dict(), indent=2), page, experiment)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "html": str(out_html), "mlflow_run_id": run_id}))
        return
    click.echo(result.format())
    click.echo(f"confusion matrix: {out_html}")
    if run_id:
        link = f", nested under the model's run {loaded.run_id}" if loaded.run_id else ""
        click.echo(f"MLflow run: {run_id}{link}")


@cli.command()
@click.argument("model")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(1), default=3, show_default=True, help="Labels per file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--per-window", is_flag=True, help="Also list each window's top class with its start time.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
              help="Where to find an MLflow model [env MLFLOW_TRACKING_URI].")
def predict(model, paths, top_k, fmt, per_window, tracking_uri) -> None:
    """Scene labels for recordings: files or folders, any length, rate and channel count.

    MODEL is a checkpoint file or an MLflow model URI. Recordings longer than the model's clip
    length are cut into windows with 50 % overlap and their logits averaged. Files
    that cannot be read are reported with the reason; the exit code is 1 if any could not.

    Example: sceneclf predict model.pt recordings/ street.flac --top-k 3 --format csv
    """
    from sceneclf.tasks import predict as pr
    from sceneclf.tracking.models import load_model

    loaded = load_model(model, tracking_uri)
    ckpt = loaded.checkpoint
    results = pr.predict_paths(ckpt.model, paths, ckpt.audio, keep_windows=per_window)
    click.echo(pr.format_results(results, ckpt.classes, top_k, fmt, per_window))
    failed = [r for r in results if r.error is not None]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} file(s) could not be read", err=True)
        click.get_current_context().exit(1)


@cli.command()
@study_options
@click.option("--model", default=None,
              help="The retrained model to show: checkpoint file or MLflow model URI [default: the "
                   "study's newest retrain-best run in MLflow].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file [default: ./report-<study>.html].")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, envvar="SCENECLF_CACHE",
              help="Cache folder [env SCENECLF_CACHE; default ~/.cache/sceneclf].")
def report(study, storage, tracking_uri, model, out, cache_dir) -> None:
    """Write one self-contained HTML report of a study (opens offline).

    Settings, top trials, optimization history, parameter importances, parallel coordinates,
    learning curves, accuracy against parameter count, and the retrained model's confusion matrix
    and training curves.

    Example: sceneclf report --study sceneclf --out report.html
    """
    from sceneclf.data.prepare import default_cache_dir
    from sceneclf.report.study import build_report
    from sceneclf.search.storage import check_storage, load_study
    from sceneclf.tracking.stores import default_tracking_uri

    storage = _storage(storage)
    check_storage(storage)
    loaded = load_study(storage, study)
    page, figures = build_report(loaded, storage, tracking_uri or default_tracking_uri(), model,
                                 cache_dir or default_cache_dir(), echo=click.echo)
    out = (out or Path(f"report-{study}.html")).absolute()
    atomic.write_text(out, page)
    click.echo(f"report: {out} ({len(figures)} figures: {', '.join(figures)})")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback exposes the UI (no login) to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
@click.option("--study", default="sceneclf", show_default=True, help="Study whose experiment to open.")
def ui(host, port, tracking_uri, study) -> None:
    """Start the MLflow UI on the store the other commands use; Ctrl-C stops it.

    Example: sceneclf ui --port 5000 --study sceneclf
    """
    from sceneclf.tracking import ui as ui_mod
    from sceneclf.tracking.stores import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):  # a tracking server already serves the UI
        url = ui_mod.study_experiment_url(uri, uri, study)
        click.echo(f"MLflow UI: {url or uri}" + ("" if url else f"  (no experiment {study!r} yet)"))
        return
    if not ui_mod.is_loopback(host):
        click.echo(f"warning: the MLflow UI has no login; listening on {host} exposes it to the network", err=True)
    click.echo(f"starting the MLflow UI on {uri} ...")
    code = ui_mod.run_ui(uri, host, port, study, echo=click.echo)
    if code is None:
        click.echo("MLflow UI stopped")
    else:
        click.echo(f"the MLflow UI exited by itself (code {code}); see its log above", err=True)
        click.get_current_context().exit(1)


@cli.command()
@click.option("--storage", default=None, envvar="SCENECLF_STORAGE",
              help=STORAGE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of the table.")
def studies(storage, as_json) -> None:
    """List the studies in a storage: trials by state, best value, when each last ran.

    Example: sceneclf studies --storage sqlite:///studies/sceneclf.db
    """
    from sceneclf.search.listing import format_studies, list_studies

    storage = _storage(storage)
    rows = list_studies(storage)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        click.echo(format_studies(rows, storage))
