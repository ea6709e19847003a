"""What every benchmark shares: the run context, the machine, timing, searches run as
subprocesses, peak memory of a process tree, and the report pieces written to RESULTS.md.

Every figure is a pair or a ratio measured side by side in one run: the machine is shared and
absolute timings are noisy, so the load average is recorded with each section.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GNU_TIME = "/usr/bin/time"


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Goal:
    figure: str
    value: str
    goal: str
    met: bool | None  # None: not judged (quick run, or nothing to judge)


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, head: list[str], rows: list[list[object]]) -> None:
        self.lines.append("| " + " | ".join(head) + " |")
        self.lines.append("|" + "|".join("---" for _ in head) + "|")
        for row in rows:
            self.lines.append("| " + " | ".join(str(c) for c in row) + " |")
        self.lines.append("")

    def goal(self, figure: str, value: str, goal: str, met: bool | None) -> None:
        self.goals.append(Goal(figure, value, goal, met))

    def markdown(self) -> str:
        return f"### {self.title}\n\n" + "\n".join(self.lines).rstrip() + "\n"


@dataclass
class Context:
    quick: bool
    cache_dir: Path
    tmp: Path
    log_file: Path | None = None
    seeds: tuple[int, ...] | None = None  # benchmark 3's seeds, when not its own default
    _data: object = None

    def data(self):
        """The default data set, prepared (decoded and mel-cached) once per suite run."""
        if self._data is None:
            from sceneclf.data.audio import AudioConfig
            from sceneclf.data.prepare import DataConfig, prepare
            from sceneclf.model.frontend import FeatureConfig

            self._data = prepare(DataConfig(), AudioConfig(), FeatureConfig(), self.cache_dir)
        return self._data

    def say(self, text: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


def one_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- the machine -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "sceneclf"],
                               cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
        return head + (" (sceneclf/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    import optuna

    return (f"{os.cpu_count()} cores ({cpu_model()}), {ram_gib():.1f} GiB RAM, "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"(default {torch.get_num_threads()} threads), optuna {optuna.__version__}")


def machine_lines() -> list[str]:
    return [f"- Machine: {machine()}", f"- Code: git {git_state()}"]


# -- timing ----------------------------------------------------------------------------------
class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def yes(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


# -- peak memory of a process tree -----------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _proc_kib(pid: int, file: str, key: str) -> int:
    """A `key: N kB` field of /proc/PID/FILE, 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kib(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over `root` and its descendants. PSS, the proportional set size,
    counts a share of each page mapped by several processes (torch's libraries, mapped by every
    worker), so a tree's sum counts those pages once."""
    kids = _children()
    rss, pss, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        rss += _proc_kib(pid, "status", "VmRSS:")
        pss += _proc_kib(pid, "smaps_rollup", "Pss:")
        todo.extend(kids.get(pid, []))
    return rss, pss


@dataclass
class Measured:
    command: list[str]
    returncode: int
    wall: float
    peak_tree_mib: float  # sum of RSS over the process and all its descendants, sampled
    peak_tree_pss_mib: float  # the same with PSS (shared pages counted once), sampled
    max_single_mib: float  # the largest single process's peak RSS, from the kernel (GNU time %M)
    log: Path
    cpu: float = float("nan")  # user + system seconds of the whole tree (wait4: waited-for descendants count)


class Watched:
    """A subprocess whose tree's RSS is sampled every 0.2 s until it ends; its end is taken by a
    waiting thread, so the wall time is right even when `wait()` is called late."""

    def __init__(self, command: list[str], log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.command = command
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 (closed in wait())
        self._out.write("$ " + shlex.join(command) + "\n")
        self._out.flush()
        # GNU time reports the kernel's peak RSS of the largest process in the tree; wait4's own
        # ru_maxrss would also count this (torch-sized) process's pages inherited at fork.
        self._time_file = log.with_suffix(".maxrss")
        wrapped = ([GNU_TIME, "-f", "%M", "-o", str(self._time_file), *command]
                   if Path(GNU_TIME).exists() else command)
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        self.peak = self.peak_pss = 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._sampler.start()
        self._waiter.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            rss, pss = tree_memory_kib(self.proc.pid)
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self._done.wait(0.2)

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.wall = time.perf_counter() - self.start
        self.cpu = usage.ru_utime + usage.ru_stime
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._done.set()

    def wait(self) -> Measured:
        self._waiter.join()
        self._sampler.join()
        self._out.close()
        try:
            max_rss = float(self._time_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            max_rss = float("nan")
        return Measured(self.command, self.proc.returncode, self.wall, self.peak / 1024,
                        self.peak_pss / 1024, max_rss / 1024, self.log, self.cpu)


# -- searches as subprocesses ----------------------------------------------------------------
@dataclass
class SearchRun:
    label: str
    measured: Measured
    trials: list  # optuna FrozenTrial

    @property
    def finished(self) -> list:
        return finished_trials(self.trials)

    @property
    def over_budget(self) -> int:
        return sum(1 for t in self.trials if t.user_attrs.get("over_budget"))

    @property
    def pruned(self) -> int:
        from optuna.trial import TrialState

        return sum(1 for t in self.trials
                   if t.state == TrialState.PRUNED and not t.user_attrs.get("over_budget"))

    @property
    def complete(self) -> int:
        from optuna.trial import TrialState

        return sum(1 for t in self.trials if t.state == TrialState.COMPLETE)

    @property
    def epochs(self) -> int:
        """Epochs trained over all trials (each reported epoch is one trained epoch)."""
        return sum(len(t.intermediate_values) for t in self.trials)

    @property
    def best(self) -> float:
        """Best validation accuracy of a completed trial within budget."""
        from optuna.trial import TrialState

        values = [t.value for t in self.trials if t.state == TrialState.COMPLETE and t.value is not None]
        return max(values) if values else float("nan")

    def best_after(self, n: int) -> float:
        from optuna.trial import TrialState

        values = [t.value for t in sorted(self.finished, key=lambda t: t.number)[:n]
                  if t.state == TrialState.COMPLETE and t.value is not None]
        return max(values) if values else float("nan")

    def trials_per_hour(self) -> float:
        """Finished trials per hour from the first trial's start to the last one's end (no
        process start-up or data loading)."""
        done, span = trial_span(self.trials)
        return len(done) / span * 3600 if span > 0 else float("nan")


def finished_trials(trials: list) -> list:
    """The trials that ran to an end: complete or pruned."""
    from optuna.trial import TrialState

    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def trial_span(trials: list) -> tuple[list, float]:
    """The finished trials with both timestamps, and the seconds from the first one's start to
    the last one's end (0 without any)."""
    done = [t for t in finished_trials(trials) if t.datetime_start and t.datetime_complete]
    if not done:
        return done, 0.0
    return done, (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()


def search_command(ctx: Context, study: str, storage_file: Path, trials: int, *extra: str) -> list[str]:
    return [PYTHON, "-m", "sceneclf", "search", "--trials", str(trials), "--study", study,
            "--storage", f"sqlite:///{storage_file}", "--no-mlflow", "--no-progress",
            "--cache-dir", str(ctx.cache_dir), *extra]


def start_search(ctx: Context, label: str, study: str, trials: int, *extra: str,
                 env: dict[str, str] | None = None) -> tuple[str, Watched, Path, str]:
    folder = ctx.tmp / study
    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / "optuna.db"
    cmd = search_command(ctx, study, storage, trials, *extra)
    ctx.say(f"  start {label}: {shlex.join(cmd[2:])}")
    return label, Watched(cmd, folder / "log.txt", cwd=folder, env=env), storage, study


def folder_study(cwd: Path):
    """The study a `sceneclf search` run in `cwd` with its defaults wrote (studies/sceneclf.db)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="sceneclf", storage=f"sqlite:///{cwd / 'studies' / 'sceneclf.db'}")


def finish_search(handle: tuple[str, Watched, Path, str]) -> SearchRun:
    import optuna

    label, watched, storage, study = handle
    measured = watched.wait()
    if measured.returncode != 0:
        tail = measured.log.read_text()[-2000:]
        raise RuntimeError(f"{label}: search exited with {measured.returncode}\n{tail}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{storage}")
    return SearchRun(label, measured, loaded.get_trials(deepcopy=False))


def run_pair(ctx: Context, a: tuple, b: tuple, parallel: bool = True) -> tuple[SearchRun, SearchRun]:
    """Two searches, each `(label, study, trials, *extra)`. In parallel each gets one thread (the
    machine has 2 cores); used where the figures are counts and accuracies, not times."""
    env = one_thread_env() if parallel else None
    if parallel:
        ha = start_search(ctx, *a, env=env)
        hb = start_search(ctx, *b, env=env)
        return finish_search(ha), finish_search(hb)
    ra = finish_search(start_search(ctx, *a, env=env))
    return ra, finish_search(start_search(ctx, *b, env=env))
