"""`sceneclf studies` against a real storage; `sceneclf ui` serving HTTP on loopback, then stopped."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from click.testing import CliRunner

from sceneclf.cli import cli
from sceneclf.search.record import trial_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_studies_lists_counts_best_and_last_run(retrained_study):
    s = retrained_study
    study = optuna.load_study(study_name=s["study"], storage=s["storage"])
    states = [trial_state(t) for t in study.trials]
    res = CliRunner().invoke(cli, ["studies", "--storage", s["storage"], "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["study"] == "t" and row["trials"] == len(study.trials)
    assert row["states"]["COMPLETE"] == states.count("COMPLETE")
    assert row["states"]["OVER_BUDGET"] == states.count("OVER_BUDGET")
    assert row["best_value"] == pytest.approx(study.best_value) and row["best_trial"] == study.best_trial.number
    last = max(t.datetime_complete for t in study.trials)
    assert row["last_run"] == last.isoformat(timespec="seconds")
    res = CliRunner().invoke(cli, ["studies", "--storage", s["storage"]], catch_exceptions=False)
    line = next(line for line in res.stdout.splitlines() if line.startswith("t "))
    assert f"{study.best_value:.4f} (#{study.best_trial.number})" in line
    assert last.strftime("%Y-%m-%d %H:%M:%S") in line


def test_studies_bad_input(tmp_path):
    res = CliRunner().invoke(cli, ["studies", "--storage", f"sqlite:///{tmp_path}/nothing.db"])
    assert res.exit_code == 2 and "--storage" in res.output and "no Optuna storage at" in res.output
    assert not (tmp_path / "nothing.db").exists()  # not created empty by looking
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path}/e.db")
    res = CliRunner().invoke(cli, ["studies", "--storage", f"sqlite:///{tmp_path}/e.db"], catch_exceptions=False)
    assert res.exit_code == 0 and re.search(r"^empty\s+0\s+0", res.stdout, re.M) and " - " in res.stdout


def test_ui_refuses_a_busy_port_and_a_missing_store(retrained_study, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(cli, ["ui", "--port", str(port), "--tracking-uri", retrained_study["tracking"]])
    assert res.exit_code == 2 and f"--port {port}: cannot listen on 127.0.0.1:{port}" in res.output
    res = CliRunner().invoke(cli, ["ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert res.exit_code == 2 and "no MLflow store at" in res.output


@pytest.mark.slow
def test_ui_serves_the_study_on_loopback_and_stops(retrained_study):
    s = retrained_study
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sceneclf", "ui", "--port", str(port), "--study", s["study"],
                             "--tracking-uri", s["tracking"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("MLflow UI:"):
                break
        url = next((line.split()[2] for line in lines if line.startswith("MLflow UI:")), None)
        assert url is not None, "".join(lines)
        from mlflow.tracking import MlflowClient

        exp = MlflowClient(s["tracking"]).get_experiment_by_name(s["study"])
        assert url == f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={s['study']}"
        with urllib.request.urlopen(api, timeout=10) as r:
            assert json.load(r)["experiment"]["experiment_id"] == exp.experiment_id
        try:
            hosts = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        except OSError:
            hosts = set()
        for outside in (h for h in hosts if not h.startswith("127.")):  # loopback only
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=2).close()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "MLflow UI stopped" in rest
        with pytest.raises(OSError):  # the server (and its workers) are gone too
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:  # a failed assertion: let sceneclf stop its server, then make sure
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.parametrize("command", ["evaluate", "predict", "report", "ui", "studies"])
def test_help_has_an_example(command):
    res = CliRunner().invoke(cli, [command, "--help"], catch_exceptions=False)
    assert res.exit_code == 0 and f"Example: sceneclf {command}" in res.output
