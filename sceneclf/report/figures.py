"""Plotly figures of a study. Functions return figures; only the CLI and the tracker write them."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime

import optuna
import plotly.graph_objects as go
from optuna import visualization as ov
from optuna.trial import TrialState

from sceneclf.search.front import SIZE_COLUMNS, front_trials
from sceneclf.search.record import StudyAttr, StudyRecord, TrialAttr, top_trials, trial_state, trial_value

STATE_COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "OVER_BUDGET": "#7f7f7f", "FAIL": "#d62728"}


def accuracy_vs_params(study: optuna.Study, max_params: int | None = None) -> go.Figure:
    """Validation accuracy (last reported for pruned trials) against parameter count."""
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        pts = [t for t in study.trials if trial_state(t) == state and TrialAttr.N_PARAMS in t.user_attrs]
        if not pts:
            continue
        ys = [0.0 if math.isnan(v) else v for v in map(trial_value, pts)]
        fig.add_trace(go.Scatter(
            x=[t.user_attrs[TrialAttr.N_PARAMS] for t in pts], y=ys, mode="markers", name=state.lower(),
            marker={"color": colour, "size": 9}, text=[f"trial {t.number}" for t in pts]))
    if max_params:
        fig.add_vline(x=max_params, line_dash="dash", line_color="black",
                      annotation_text=f"budget {max_params:,}")
    fig.update_layout(title="Validation accuracy against parameter count",
                      xaxis_title="parameters", yaxis_title="validation accuracy", xaxis_type="log")
    return fig


def pareto_front(study: optuna.Study) -> go.Figure:
    """Accuracy against the second objective (kB or MACs per second) of every trial that has
    them: the Pareto front joined by a line, other complete trials, pruned and over-budget ones
    greyed; the budget's limit on that axis dashed."""
    record = StudyRecord.load(study)
    size = record.objectives[1] if record and len(record.objectives) > 1 else "kb"
    column = SIZE_COLUMNS[size]
    front = front_trials(study)
    on_front = {t.number for t in front}
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        pts = [t for t in study.trials if trial_state(t) == state and t.number not in on_front
               and column in t.user_attrs]
        if pts:
            fig.add_trace(go.Scatter(
                x=[t.user_attrs[column] for t in pts], y=[0.0 if math.isnan(v) else v for v in map(trial_value, pts)],
                mode="markers", name=state.lower(), text=[f"trial {t.number}" for t in pts],
                marker={"color": colour if state == "COMPLETE" else "#c7c7c7", "size": 8}))
    fig.add_trace(go.Scatter(
        x=[t.values[1] for t in front], y=[t.values[0] for t in front], mode="lines+markers", name="Pareto front",
        line={"shape": "hv", "color": "#d62728"}, marker={"size": 11, "symbol": "diamond"},
        text=[f"trial {t.number}" for t in front]))
    limit = None
    if record is not None:
        limit = record.budget.max_kb if size == "kb" else record.budget.max_macs_per_second
    if limit is not None:
        fig.add_vline(x=limit, line_dash="dash", line_color="black", annotation_text=f"budget {limit:,g}")
    label = f"kB at {record.budget.precision if record else 'fp32'}" if size == "kb" else "MACs per second of audio"
    fig.update_layout(title=f"Validation accuracy against {label}: the Pareto front", xaxis_title=label,
                      yaxis_title="validation accuracy")
    return fig


def study_figures(study: optuna.Study, max_params: int | None = None) -> dict[str, go.Figure]:
    """The study's figures by name; those Optuna cannot draw yet (too few trials) are left out.
    Where the study stores its bag-of-frames reference, accuracy figures draw it as a line. In a
    multi-objective study Optuna's figures show the accuracy, and the Pareto front is added."""
    target = {}
    if len(study.directions) > 1:
        target = {"target": lambda t: t.values[0], "target_name": "val_accuracy"}
    makers = {
        "optimization_history": lambda: ov.plot_optimization_history(study, **target),
        "param_importances": lambda: ov.plot_param_importances(study, **target),
        "parallel_coordinate": lambda: ov.plot_parallel_coordinate(study, **target),
        "slice": lambda: ov.plot_slice(study, **target),
        "intermediate_values": lambda: ov.plot_intermediate_values(study),
        "accuracy_vs_params": lambda: accuracy_vs_params(study, max_params),
    }
    if target:  # nothing is reported per epoch in such a study: no intermediate values
        del makers["intermediate_values"]
        makers["pareto_front"] = lambda: pareto_front(study)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    reference = (study.user_attrs.get(StudyAttr.REFERENCE) or {}).get("reference_val_accuracy")
    figures = {}
    for name, make in makers.items():
        if name == "param_importances" and len(done) < 2:
            continue
        try:
            with warnings.catch_warnings():  # Optuna warns when it has too few trials to say much
                warnings.simplefilter("ignore", UserWarning)
                figures[name] = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        if reference is not None and name in ("optimization_history", "accuracy_vs_params"):
            figures[name].add_hline(y=reference, line_dash="dot", line_color="#2ca02c",
                                    annotation_text=f"bag-of-frames reference {reference:.3f}")
    return figures


def figure_html(fig: go.Figure, offline: bool = False) -> str:
    """HTML of one figure: with plotly.js embedded when `offline`, else from the CDN."""
    return fig.to_html(include_plotlyjs=True if offline else "cdn", full_html=True)


# -- the study report (one self-contained HTML page) ----------------------------------------------
FIGURE_TITLES = {
    "optimization_history": "Optimization history",
    "param_importances": "Parameter importances",
    "parallel_coordinate": "Parallel coordinates",
    "learning_curves": "Learning curves (pruned trials marked ×)",
    "accuracy_vs_params": "Accuracy against parameter count (budget line dashed)",
    "slice": "Validation accuracy against each parameter",
    "pareto_front": "Accuracy against size: the Pareto front (budget line dashed)",
}


def learning_curves(study: optuna.Study) -> go.Figure:
    """Validation accuracy per epoch of every trial that reported one: complete trials solid,
    pruned ones dashed and marked with a cross where they were stopped."""
    fig = go.Figure()
    shown: set[str] = set()
    for t in study.trials:
        if not t.intermediate_values:
            continue
        state = trial_state(t)
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        colour = STATE_COLOURS.get(state, "#9467bd")
        pruned = state == "PRUNED"
        fig.add_trace(go.Scatter(
            x=steps, y=values, mode="lines+markers", name=state.lower(), legendgroup=state,
            showlegend=state not in shown, line={"color": colour, "dash": "dash" if pruned else "solid"},
            marker={"size": [4] * (len(steps) - 1) + [12 if pruned else 4],
                    "symbol": ["circle"] * (len(steps) - 1) + ["x" if pruned else "circle"]},
            text=[f"trial {t.number}"] * len(steps),
            hovertemplate="%{text}<br>epoch %{x}<br>val accuracy %{y:.3f}<extra></extra>"))
        shown.add(state)
    fig.update_layout(title="Learning curves", xaxis_title="epoch", yaxis_title="validation accuracy")
    return fig


def training_curves(history: dict[str, list[tuple[int, float]]], title: str = "Training curves") -> go.Figure:
    """Metric histories (step, value) by name; the learning rate, if present, on a log axis on
    the right."""
    fig = go.Figure()
    for name, points in history.items():
        if not points:
            continue
        steps, values = zip(*sorted(points))
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=name,
                                 yaxis="y2" if name == "lr" else "y"))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="value",
                      yaxis2={"title": "learning rate", "overlaying": "y", "side": "right", "type": "log"})
    return fig


def top_trials_rows(study: optuna.Study, n: int = 10) -> list[dict]:
    """The rows of the search's top-trials table as dicts, best first."""
    return [{"trial": t.number, "val_accuracy": trial_value(t), "params": t.user_attrs.get(TrialAttr.N_PARAMS),
             "macs": t.user_attrs.get(TrialAttr.MACS), "widths": t.user_attrs.get(TrialAttr.WIDTHS),
             "epochs": t.user_attrs.get(TrialAttr.EPOCHS_RUN, len(t.intermediate_values)),
             "state": trial_state(t).lower(), **{f"p.{k}": v for k, v in t.params.items()}}
            for t in top_trials(study, n)]


def _cell(value) -> str:
    import html

    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return html.escape(",".join(map(str, value)))
    return html.escape(str(value))


def html_table(rows: list[dict], columns: list[str] | None = None) -> str:
    import html

    if not rows:
        return "<p class='note'>no finished trials yet</p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c.removeprefix('p.'))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts_table(facts: dict) -> str:
    import html

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in facts.items())
    return f"<table class='facts'>{rows}</table>"


@dataclass
class ModelSection:
    """What the report shows about a retrained model."""

    source: str
    facts: dict = field(default_factory=dict)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}table.facts th{text-align:left}table.facts td{text-align:left}
pre{background:#f8f8f8;padding:.8em;overflow:auto;font-size:.85em}.note{color:#777;font-style:italic}
.figure{margin:1em 0}"""


def study_report_html(study: optuna.Study, settings: dict, figures: dict[str, go.Figure],
                      model: ModelSection | None = None, notes: list[str] | None = None) -> str:
    """One self-contained page: plotly.js is embedded once, so it opens offline."""
    import html

    from plotly.offline import get_plotlyjs

    def fig_div(name: str, fig: go.Figure) -> str:
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                          config={"responsive": True, "displaylogo": False})
        return f"<div class='figure' data-figure='{html.escape(name)}'>{div}</div>"

    space_text = settings.pop("space file", None)
    parts = [f"<h1>Study {html.escape(study.study_name)}</h1>",
             f"<p class='note'>sceneclf report, {datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
             "<h2>Settings</h2>", facts_table(settings)]
    if space_text:
        parts.append(f"<details><summary>search space file</summary><pre>{html.escape(space_text)}</pre></details>")
    parts += ["<h2>Top trials</h2>", html_table(top_trials_rows(study))]
    for name, title in FIGURE_TITLES.items():
        if name == "pareto_front" and name not in figures:
            continue  # a single-objective study has no front
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig_div(name, figures[name]) if name in figures else
                     "<p class='note'>not enough finished trials to draw this yet</p>")
    parts.append("<h2>Retrained model</h2>")
    if model is None:
        parts.append("<p class='note'>no retrained model found for this study "
                     "(run <code>sceneclf retrain-best</code>, or pass <code>--model</code>)</p>")
    else:
        parts.append(facts_table({"model": model.source, **model.facts}))
        parts += [fig_div(name, fig) for name, fig in model.figures.items()]
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in model.notes]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes or []]
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>sceneclf study {html.escape(study.study_name)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{''.join(parts)}</body></html>\n")
