"""Scale-out for real: a PostgreSQL server and an MLflow tracking server on loopback, and two
`sceneclf worker` processes sharing one study. Skipped only where PostgreSQL is not installed."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from servers import free_port

from sceneclf.cli import cli
from sceneclf.search.turns import SURPLUS_REASON

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")


def as_postgres(args: list[str], **kw):
    cmd = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 in a temporary folder; stopped afterwards."""
    bin_dir = Path(PG_BIN[-1])
    root = Path(tempfile.mkdtemp(prefix="sceneclf-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"])
    try:
        as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"])
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgres_study(postgres, tracking_server, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--study", "shared", "--storage", postgres, "--tracking-uri", tracking_server]
    res = CliRunner().invoke(cli, ["search", *common, "--data", str(tiny_data), "--trials", "1",
                                   "--epochs", "1", "--no-progress", "--device", "cpu"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "sceneclf", "worker", *common, "--trials", "4",
                                 "--threads", "1", "--seed", str(i), "--no-progress"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage=postgres)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Each worker's 4 more count from the trials finished when it joined (1, or 2 if the other
    # worker finished one first): the study ends at the later target, exactly.
    targets = [int(re.search(r"until study 'shared' has (\d+) finished", out).group(1)) for out in outputs]
    assert set(targets) <= {5, 6} and len(finished) == max(targets), (targets, outputs)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))
    workers_seen = {t.user_attrs.get("worker") for t in study.trials}
    assert len(workers_seen) >= 2  # both processes ran trials
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id], "tags.`sceneclf.role` = 'trial'", max_results=1000)
    # A trial both workers asked for at once near the target fails unrun, with no run of its own.
    surplus = [t for t in study.trials if t.user_attrs.get("reason") == SURPLUS_REASON]
    assert all(t.state == TrialState.FAIL and "mlflow_run_id" not in t.user_attrs for t in surplus)
    ran = [t for t in study.trials if t.number not in {u.number for u in surplus}]
    assert sorted(int(r.data.tags["sceneclf.trial"]) for r in runs) == [t.number for t in ran]
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in ran}


def test_worker_with_other_data_is_refused(postgres, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from sceneclf.data.synth import SynthConfig, write_dataset

    assert CliRunner().invoke(cli, ["search", "--study", "fp", "--storage", postgres, "--no-mlflow",
                                    "--data", str(tiny_data), "--trials", "1", "--epochs", "1",
                                    "--no-progress"]).exit_code == 0
    other = write_dataset(tmp_path / "other", SynthConfig(clips_per_class=6, locations_per_class=3,
                                                          min_seconds=3.0, max_seconds=3.3), seed=5)
    res = CliRunner().invoke(cli, ["worker", "--study", "fp", "--storage", postgres, "--no-mlflow",
                                   "--data", str(other), "--trials", "1"])
    assert res.exit_code == 2 and "data differ from the study's" in res.output
