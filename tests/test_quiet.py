"""What a user sees is ours: a first search on a new MLflow store and a retrain-best print no
library log lines or warnings, as real processes (MLflow's loggers write to the process's stderr)."""

import subprocess
import sys

from conftest import TINY_SPACE


def test_search_and_retrain_print_no_library_lines(tiny_data, tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    common = ["--data", str(tiny_data), "--device", "cpu"]
    outputs = []
    for args in (["search", "--trials", "2", "--epochs", "1", "--space", "tiny.toml", "--no-progress"],
                 ["retrain-best", "--epochs", "1", "--out", "m.pt"]):
        done = subprocess.run([sys.executable, "-m", "sceneclf", *args, *common], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    assert "registered model 'sceneclf' version 1" in outputs[1]  # our own line says it
    for text in outputs:
        assert "INFO" not in text and "Warning" not in text and "Successfully registered" not in text, text
