"""Plotly figures of a study. Functions return figures; only the CLI and the tracker write them."""

from __future__ import annotations

import plotly.graph_objects as go
from optuna.trial import TrialState

import optuna
from optuna import visualization as ov

STATE_COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "OVER_BUDGET": "#7f7f7f", "FAIL": "#d62728"}


def trial_state(t: optuna.trial.FrozenTrial) -> str:
    """COMPLETE, PRUNED, OVER_BUDGET, FAIL, RUNNING or WAITING."""
    if t.user_attrs.get("over_budget"):
        return "OVER_BUDGET"
    return t.state.name


def accuracy_vs_params(study: optuna.Study, max_params: int | None = None) -> go.Figure:
    """Validation accuracy (last reported for pruned trials) against parameter count."""
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        pts = [t for t in study.trials if trial_state(t) == state and "n_params" in t.user_attrs]
        if not pts:
            continue
        ys = [t.value if t.value is not None else
              (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else 0.0)
              for t in pts]
        fig.add_trace(go.Scatter(
            x=[t.user_attrs["n_params"] for t in pts], y=ys, mode="markers", name=state.lower(),
            marker={"color": colour, "size": 9}, text=[f"trial {t.number}" for t in pts]))
    if max_params:
        fig.add_vline(x=max_params, line_dash="dash", line_color="black",
                      annotation_text=f"budget {max_params:,}")
    fig.update_layout(title="Validation accuracy against parameter count",
                      xaxis_title="parameters", yaxis_title="validation accuracy", xaxis_type="log")
    return fig


def study_figures(study: optuna.Study, max_params: int | None = None) -> dict[str, go.Figure]:
    """The study's figures by name; those Optuna cannot draw yet (too few trials) are left out."""
    makers = {
        "optimization_history": lambda: ov.plot_optimization_history(study),
        "param_importances": lambda: ov.plot_param_importances(study),
        "parallel_coordinate": lambda: ov.plot_parallel_coordinate(study),
        "slice": lambda: ov.plot_slice(study),
        "intermediate_values": lambda: ov.plot_intermediate_values(study),
        "accuracy_vs_params": lambda: accuracy_vs_params(study, max_params),
    }
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    figures = {}
    for name, make in makers.items():
        if name == "param_importances" and len(done) < 2:
            continue
        try:
            figures[name] = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
    return figures


def figure_html(fig: go.Figure, offline: bool = False) -> str:
    """HTML of one figure: with plotly.js embedded when `offline`, else from the CDN."""
    return fig.to_html(include_plotlyjs=True if offline else "cdn", full_html=True)
