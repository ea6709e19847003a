"""The MLflow UI, in a real browser, on a real search's store: the experiment opens on its runs
table (model-training view) and the trial runs compare side by side. Skipped only where
Chromium is missing (CI installs Debian's chromium)."""

import json
import urllib.parse

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from servers import CHROMIUM, dump_dom

from sceneclf.cli import cli
from sceneclf.tracking.stores import experiment_url

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture(scope="module")
def searched(tiny_data, tracking_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    res = CliRunner().invoke(cli, ["search", "--data", str(tiny_data), "--study", "uistudy",
                                   "--storage", f"sqlite:///{root}/s.db", "--tracking-uri", tracking_server,
                                   "--trials", "3", "--epochs", "1", "--no-progress", "--device", "cpu"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return tracking_server


def test_experiment_opens_on_runs_table_and_trials_compare(searched):
    url = searched
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("uistudy")
    trials = client.search_runs([exp.experiment_id], "tags.`sceneclf.role` = 'trial'")
    page = dump_dom(experiment_url(url, exp.experiment_id))
    assert "study-uistudy" in page and "matching runs" in page  # the runs table, parent run listed
    ids = [r.info.run_id for r in trials]
    compare = (f"{url}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
               f"&experiments={urllib.parse.quote(json.dumps([exp.experiment_id]))}")
    page = dump_dom(compare)
    assert f"Comparing {len(ids)} Runs" in page
    for r in trials:
        assert r.info.run_name in page
    for param in ("lr", "widths", "noise", "batch_size"):
        assert f">{param}<" in page
