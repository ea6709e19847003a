"""`sceneclf report`: gather what the study report shows, then render it with `figures`.

The study's settings and trials come from the Optuna storage. The retrained model is the one
given with `--model`, else the newest `retrain-best` run of the study in MLflow (tags
`sceneclf.role=retrain`, `sceneclf.study=<name>`); its confusion matrix is computed on the test
split of the data the study was searched with, its training curves come from the run's metrics.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sceneclf.echo import Echo
from sceneclf.errors import SceneclfError
from sceneclf.model.budget import count_params
from sceneclf.report.figures import (
    ModelSection,
    learning_curves,
    study_figures,
    study_report_html,
    training_curves,
)
from sceneclf.search.record import StudyAttr, StudyRecord, best_feasible, trial_state, trial_value
from sceneclf.tracking.stores import check_store, mlflow_client


def study_settings(study: optuna.Study, storage_url: str) -> dict:
    record = StudyRecord.load(study)
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[trial_state(t).lower()] = counts.get(trial_state(t).lower(), 0) + 1
    best = best_feasible(study)
    settings = {
        "storage": storage_url,
        "trials": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none",
        "best trial": f"#{best.number}: validation accuracy {trial_value(best):.4f}" if best else "none yet",
        "best parameters": ", ".join(f"{k}={_short(v)}" for k, v in best.params.items()) if best else "–",
    }
    if record is not None:
        settings.update({
            "search space": record.space_name,
            "parameter budget": record.budget.max_params,
            "MAC budget (per clip)": record.budget.max_macs,
            "memory budget (kB)": (f"{record.budget.max_kb:g} at {record.budget.precision}"
                                   if record.budget.max_kb is not None else None),
            "MACs per second budget": record.budget.max_macs_per_second,
            "epochs per trial": record.epochs,
            "sampler": record.sampler,
            "pruner": record.pruner,
            "objectives": ", ".join(record.objectives),
            "data": record.data.data or "embedded synthetic data set",
            "data fingerprint": record.fingerprint,
        })
    settings["MLflow study run"] = study.user_attrs.get(StudyAttr.PARENT_RUN)
    if record is not None:
        settings["space file"] = record.space_text
    return {k: v for k, v in settings.items() if v is not None}


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def retrained_section(study: optuna.Study, tracking_uri: str | None, model_ref: str | None,
                      cache_dir: Path, echo: Echo) -> tuple[ModelSection | None, list[str]]:
    """The retrained model's section (None when there is none) and notes on what was left out."""
    from sceneclf.tasks import evaluate as ev
    from sceneclf.tracking import models

    notes: list[str] = []
    client = None
    if tracking_uri is not None:
        try:
            check_store(tracking_uri)
            client = mlflow_client(tracking_uri)
        except SceneclfError as exc:
            notes.append(f"MLflow not used: {exc}")
    run = None
    if model_ref is not None:
        loaded = models.load_model(model_ref, tracking_uri)
        if loaded.run_id and client is not None:
            run = client.get_run(loaded.run_id)
    elif client is not None:
        run = models.find_retrain_run(client, study.study_name)
        if run is None:
            return None, notes
        loaded = models.LoadedModel(models.checkpoint_from_run(client, run.info.run_id, f"runs:/{run.info.run_id}/model"),
                                f"runs:/{run.info.run_id}/model", run.info.run_id, run.info.experiment_id,
                                dict(run.data.tags))
    else:
        return None, notes
    echo(f"retrained model: {loaded.source}")
    ckpt = loaded.checkpoint
    section = ModelSection(loaded.source)
    section.facts = {"classes": len(ckpt.classes), "widths": list(ckpt.model_cfg.widths),
                     "kernel size": ckpt.model_cfg.kernel_size,
                     "parameters": count_params(ckpt.model_cfg)}
    section.facts.update({k.replace("_", " "): v for k, v in ckpt.metrics.items()})
    if run is not None:
        section.facts["MLflow run"] = run.info.run_id
        history = {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
                   for name in ("train_loss", "lr")}
        if any(history.values()):
            section.figures["training_curves"] = training_curves(history, "Retraining: loss and learning rate per epoch")
    else:
        section.notes.append("no MLflow run for this model, so no training curves")
    from sceneclf.tasks.retrain import stored_data_config

    try:
        evaluation = ev.evaluate_model(loaded, stored_data_config(study), "test", cache_dir, echo=echo)
    except SceneclfError as exc:
        section.notes.append(f"no confusion matrix: the study's data could not be evaluated ({exc})")
    else:
        section.facts["test accuracy (this report)"] = evaluation.accuracy
        section.facts["test macro-F1"] = evaluation.macro_f1
        section.figures["confusion_matrix"] = ev.confusion_figure(evaluation)
    return section, notes


def build_report(study: optuna.Study, storage_url: str, tracking_uri: str | None, model_ref: str | None,
                 cache_dir: Path, echo: Echo = lambda _: None) -> tuple[str, list[str]]:
    """The report's HTML and the names of the figures it holds."""
    record = StudyRecord.load(study)
    figures = study_figures(study, record.budget.max_params if record else None)
    figures.pop("intermediate_values", None)  # replaced by learning_curves (pruned trials marked)
    if any(t.intermediate_values for t in study.trials):
        figures["learning_curves"] = learning_curves(study)
    model, notes = retrained_section(study, tracking_uri, model_ref, cache_dir, echo)
    page = study_report_html(study, study_settings(study, storage_url), figures, model, notes)
    names = list(figures) + (list(model.figures) if model else [])
    return page, names
