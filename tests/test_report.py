"""`sceneclf report`: one offline HTML file with the study's figures, rendered in headless Chromium."""

import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from sceneclf.cli import cli
from sceneclf.report.figures import html_table, learning_curves, top_trials_rows

CHROMIUM = Path("/usr/bin/chromium")
STUDY_FIGURES = ("optimization_history", "param_importances", "parallel_coordinate", "learning_curves",
                 "accuracy_vs_params")
MODEL_FIGURES = ("training_curves", "confusion_matrix")


def small_study() -> optuna.Study:
    """In memory: two complete trials and one pruned after two epochs."""
    study = optuna.create_study(direction="maximize")
    for values, prune in (([0.2, 0.4, 0.5], False), ([0.1, 0.15], True), ([0.3, 0.6, 0.7], False)):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        trial.set_user_attr("n_params", 1000 + trial.number)
        for epoch, v in enumerate(values, 1):
            trial.report(v, epoch)
        if prune:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, values[-1])
    return study


def test_learning_curves_mark_pruned_trials():
    fig = learning_curves(small_study())
    assert len(fig.data) == 3
    pruned = [t for t in fig.data if t.name == "pruned"]
    assert len(pruned) == 1 and pruned[0].line.dash == "dash"
    assert list(pruned[0].marker.symbol) == ["circle", "x"] and list(pruned[0].x) == [1, 2]
    assert {t.name for t in fig.data} == {"complete", "pruned"}
    assert sum(t.showlegend for t in fig.data) == 2  # one legend entry per state


def test_top_trials_rows_and_table():
    rows = top_trials_rows(small_study())
    assert [r["trial"] for r in rows] == [2, 0, 1]  # complete by value first, then pruned
    assert rows[2]["val_accuracy"] == 0.15 and rows[2]["state"] == "pruned"
    table = html_table([{"trial": 1, "name": "<b>x</b>", "p.lr": 0.00123}])
    assert "&lt;b&gt;" in table and "<th>lr</th>" in table and "0.00123" in table


def render(page: Path, tmp_path: Path) -> str:
    """The DOM of the page after Chromium ran its scripts; JavaScript errors are written into the
    DOM by a handler injected before any other script."""
    catcher = ("<script>window.onerror=function(m){var e=document.documentElement;"
               "e.setAttribute('data-js-errors',(e.getAttribute('data-js-errors')||'')+m+' | ');};</script>")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + catcher, 1), encoding="utf-8")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000", "--dump-dom",
           probe.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_report_holds_the_figures_and_renders(retrained_study, tmp_path):
    s = retrained_study
    out = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", "--study", s["study"], "--storage", s["storage"],
                                   "--tracking-uri", s["tracking"], "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"report: {out}" in res.output
    page = out.read_text(encoding="utf-8")
    figures = re.findall(r"data-figure='([a-z_]+)'", page)
    assert set(STUDY_FIGURES + MODEL_FIGURES) <= set(figures)
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js embedded, no CDN: opens offline
    assert page.count("Plotly.newPlot") == len(figures)
    assert "<h2>Top trials</h2><table>" in page and "over_budget" in page
    assert "max_params" in page or "parameter budget" in page
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("Chromium is not installed: the page was not rendered")
    dom = render(out, tmp_path)
    errors = re.search(r'data-js-errors="([^"]*)"', dom)
    assert errors is None, errors.group(1)
    drawn = re.findall(r'<div id="fig-([a-z_]+)"[^>]*class="[^"]*js-plotly-plot', dom)
    assert sorted(drawn) == sorted(figures)  # every figure was drawn by plotly.js
    assert dom.count('class="main-svg"') >= len(figures)


def test_report_with_a_checkpoint_and_no_mlflow(retrained_study, tmp_path):
    s = retrained_study
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", "--study", s["study"], "--storage", s["storage"],
                                   "--tracking-uri", f"sqlite:///{tmp_path}/absent.db",
                                   "--model", str(s["checkpoint"]), "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert "data-figure='confusion_matrix'" in page and "data-figure='training_curves'" not in page
    assert "no MLflow run for this model" in page and "MLflow not used" in page


def test_report_bad_input(retrained_study, tmp_path):
    s = retrained_study
    res = CliRunner().invoke(cli, ["report", "--study", "nope", "--storage", s["storage"]])
    assert res.exit_code == 2 and "--study nope: no such study" in res.output and "(studies: t)" in res.output
    res = CliRunner().invoke(cli, ["report", "--storage", f"sqlite:///{tmp_path}/missing.db"])
    assert res.exit_code == 2 and "no Optuna storage at" in res.output
    assert not (tmp_path / "missing.db").exists()
