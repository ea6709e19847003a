"""Shared fixtures: a tiny synthetic data set written once per session, an isolated cache."""

from pathlib import Path

import pytest

from sceneclf.data.synth import SynthConfig, write_dataset

TINY = SynthConfig(clips_per_class=6, locations_per_class=3, min_seconds=3.0, max_seconds=3.3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """15 classes x 6 clips (3 locations each), TUT 2017 layout, real WAV files."""
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny", TINY, seed=0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test uses a session-wide cache folder, never ~/.cache; no MLflow env leaks in."""
    monkeypatch.setenv("SCENECLF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SCENECLF_STORAGE", raising=False)
    monkeypatch.setenv("SCENECLF_JOBS", "1")  # seeded searches stay repeatable; tests ask for --jobs N
    monkeypatch.delenv("SCENECLF_PREP_WORKERS", raising=False)  # the CLI sets it; undone after each test


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory) -> str:
    """One `mlflow server` on loopback for the session (each start costs seconds); every test that
    uses it keeps to an experiment of its own."""
    from servers import mlflow_server

    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root}/mlflow.db", root, artifacts=root / "artifacts") as url:
        yield url


def native_bf16() -> bool:
    """Whether /proc/cpuinfo lists bfloat16 arithmetic (AVX512-BF16 or AMX tiles)."""
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_tile"} & set(flags.split()))


# -- A finished study with a retrained, registered model (evaluate, report, ui, studies tests) --
TINY_SPACE = """
[budget]
max_params = 3000
[train]
epochs = 2
[params.lr]
type = "float"
low = 3e-3
high = 1e-2
log = true
[params.n_blocks]
type = "int"
low = 2
high = 2
[params.base_width]
type = "int"
low = 4
high = 16
step = 4
[params.growth]
type = "float"
low = 1.0
high = 1.5
"""


@pytest.fixture(scope="session")
def retrained_study(tmp_path_factory, tiny_data):
    """`sceneclf search` (3 trials of 2 epochs, a tiny space) and `retrain-best`, through the CLI,
    with real Optuna and MLflow stores. Returns names and paths as a dict."""
    from click.testing import CliRunner

    from sceneclf.cli import cli

    root = tmp_path_factory.mktemp("study")
    (root / "tiny.toml").write_text(TINY_SPACE)
    info = {"root": root, "data": tiny_data, "study": "t",
            "storage": f"sqlite:///{root}/studies/s.db", "tracking": f"sqlite:///{root}/mlruns/mlflow.db",
            "checkpoint": root / "model.pt"}
    stores = ["--study", "t", "--storage", info["storage"], "--tracking-uri", info["tracking"]]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SCENECLF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("SCENECLF_STORAGE", raising=False)
        runner = CliRunner()
        res = runner.invoke(cli, ["search", "--trials", "3", "--data", str(tiny_data), "--space", "tiny.toml",
                                  "--no-progress", "--device", "cpu", *stores], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        info["search_output"] = res.output
        res = runner.invoke(cli, ["retrain-best", "--out", str(info["checkpoint"]), "--device", "cpu", *stores],
                            catch_exceptions=False)
        assert res.exit_code == 0, res.output
        info["retrain_output"] = res.output
    info["model_uri"] = "models:/sceneclf/1"
    return info
