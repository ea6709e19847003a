"""`--jobs` workers forked by a zygote: exit codes as a process's, output as the command's, and a
real search whose worker ran trials as a child of the zygote, not of the search process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sceneclf.search.turns import SURPLUS_REASON

ZYGOTE = r"""
import sys
from sceneclf.cli.zygote import Zygote
zygote = Zygote.start(preload=("click", "no_such_module"))  # a module not installed is left out
done = zygote.spawn(["--version"])
bad = zygote.spawn(["worker", "--study", "none", "--storage", sys.argv[1], "--no-mlflow"])
print("codes", done.wait(), bad.wait(), flush=True)
zygote.close()
"""


def test_forked_commands_exit_with_their_codes_and_print(tmp_path):
    storage = f"sqlite:///{tmp_path}/none.db"
    out = subprocess.run([sys.executable, "-c", ZYGOTE, storage], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "codes 0 2" in out.stdout
    assert "sceneclf, version " in out.stdout  # the forked `--version` printed to the command's stdout
    assert "--study none: no sceneclf study of that name" in out.stderr  # the one-line error, not a traceback
    assert "Traceback" not in out.stderr


def test_search_jobs_2_forks_its_worker_from_the_zygote(tiny_data, tmp_path):
    from conftest import TINY_SPACE

    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    cmd = [sys.executable, "-m", "sceneclf", "search", "--data", str(tiny_data), "--space", "tiny.toml",
           "--trials", "6", "--jobs", "2", "--epochs", "1", "--storage", storage, "--no-mlflow", "--no-progress",
           "--device", "cpu", "--study", "z"]
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    parents: dict[int, int] = {}  # every process seen below the search, with its parent
    while proc.poll() is None:
        parents.update(_descendants(proc.pid))
        time.sleep(0.1)
    out = log.read_text()
    assert proc.returncode == 0, out
    assert "worker 1 done" in out
    study = optuna.load_study(study_name="z", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    pids = {int(str(t.user_attrs["worker"]).rpartition(":")[2]) for t in study.trials
            if t.user_attrs.get("reason") != SURPLUS_REASON}  # a surplus trial ran nowhere
    (worker,) = pids - {proc.pid}  # one other process ran trials
    assert parents[worker] != proc.pid and parents[parents[worker]] == proc.pid  # a grandchild: the zygote's


def _descendants(root: int) -> dict[int, int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, pp in parent.items():
            if pp == p:
                found[child] = p
                todo.append(child)
    return found
