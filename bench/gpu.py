"""The GPU path, measured: the same short search on the CPU and on CUDA, side by side.

    python bench/gpu.py [--trials 8] [--epochs 5] [--cache-dir DIR] [--cuda-stages-on-cpu]

For each device: `--trials` trials of the default space, `--epochs` each, on the default data, in
this process (no MLflow); prints trials per hour, epochs per second, peak GPU memory of a trial
and the GPU's mean utilisation (sampled with nvidia-smi); then one training of a default-size
model, epochs per second, with batches cut on the host (a pinned copy per batch) against the
splits held on the GPU (`ResidentMels`). On CUDA also: that training through `torch.compile`
("default", and "reduce-overhead": CUDA graphs), each in a fresh process with an empty inductor
cache so that compile time counts in full; and `sceneclf search --jobs 1` against `--jobs 2` on
the one GPU (trials per hour, utilisation). Writes the tables as the `gpu` section of
bench/RESULTS.md and prints each stage's figures as it ends. Without a GPU the CPU half runs and
the table says no GPU was found; `--cuda-stages-on-cpu` runs the CUDA-only stages on the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # an installed sceneclf comes first

from bench.common import folder_study, git_state, machine, trial_span
from bench.run import RESULTS, marker, replace_section
from bench.workers import SPACE as EQUAL_COST_SPACE


class Utilisation:
    """Mean GPU utilisation (%) from nvidia-smi, sampled every half second while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     check=False, capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> Utilisation:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def one_device(device: str, data, trials: int, epochs: int, tmp: Path) -> dict[str, float | None]:
    import torch

    from sceneclf.search.space import load_space
    from sceneclf.search.study import SearchSettings, run_search

    settings = SearchSettings(study=f"gpu-{device}", storage=str(tmp / f"{device}.journal"), epochs=epochs,
                              device=device, checkpoint_dir=tmp / "checkpoints")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with Utilisation() as util:
        outcome = run_search(settings, load_space("default"), data, trials, None, lambda _: None, progress=False)
    wall = time.perf_counter() - t0
    finished = [t for t in outcome.study.trials if t.value is not None or t.intermediate_values]
    epochs_run = sum(len(t.intermediate_values) for t in finished)
    return {"wall": wall, "trials_per_hour": len(finished) / wall * 3600, "epochs_per_second": epochs_run / wall,
            "gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            "utilisation": util.mean if device == "cuda" else None,
            "best": outcome.best.value if outcome.best else None}


def one_fit(device: str, data, epochs: int, resident: bool | None = None,
            compile_mode: str | None = None) -> tuple[float, list[dict[str, float]]]:
    """(epochs per second, per-epoch metrics) of one default-size training (widths 24,48,96,
    batch 32), data path and compile mode as given."""
    import torch

    from sceneclf.model.cnn import ModelConfig, SceneClassifier
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.train import TrainConfig, fit

    torch.manual_seed(0)
    model = SceneClassifier(FeatureConfig(), ModelConfig(widths=(24, 48, 96), n_classes=len(data.classes)))
    model.frontend.fit_stats(data.splits["train"].mels)
    cfg = TrainConfig(epochs=epochs, early_stop=epochs, seed=0)
    t0 = time.perf_counter()
    result = fit(model, data.splits["train"], data.splits["val"], cfg, data.frames, device=device,
                 resident=resident, compile_mode=compile_mode)
    return epochs / (time.perf_counter() - t0), result.history


COMPILE_MODES = ("none", "default", "reduce-overhead")
STAGE_TIMEOUT_S = 150  # a stage that hangs must not eat the one call a lent GPU allows


def stage_command(cmd: list[str], **kwargs) -> subprocess.CompletedProcess | dict:
    """Run one stage's process: the finished process, or {"error": why} if it timed out or failed."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=STAGE_TIMEOUT_S, **kwargs)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {STAGE_TIMEOUT_S} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1][:160] if lines else f"exit {done.returncode}"}
    return done


def compiled_fit(device: str, mode: str, epochs: int, cache_dir: Path | None) -> dict:
    """`one_fit` in a fresh process with an empty inductor cache: per-epoch seconds and the last
    validation accuracy, or the error's last line."""
    with tempfile.TemporaryDirectory(prefix="sceneclf-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": str(Path(cache) / "triton")}
        cmd = [sys.executable, __file__, "--one-fit", device, mode, "--epochs", str(epochs)]
        cmd += ["--cache-dir", str(cache_dir)] if cache_dir else []
        done = stage_command(cmd, env=env)
    return done if isinstance(done, dict) else json.loads(done.stdout.strip().splitlines()[-1])


def compile_rows(device: str, arms: dict[str, dict]) -> list[str]:
    """Table rows: first epoch (compile included), later epochs' median, what compiling cost once,
    what it saves per epoch, and after how many epochs of a trial it has paid for itself."""
    base = arms.get("none", {})
    rows = []
    for mode, arm in arms.items():
        if "error" in arm:
            rows.append(f"| {device} | {mode} | failed: {arm['error']} | - | - | - | - | - |")
            continue
        first, later = arm["seconds"][0], statistics.median(arm["seconds"][1:])
        cost = saved = pays = "-"
        if mode != "none" and "seconds" in base:
            extra = first - base["seconds"][0]
            gain = statistics.median(base["seconds"][1:]) - later
            cost, saved = f"{extra:.1f} s", f"{gain:.2f} s"
            pays = f"{math.ceil(extra / gain) + 1} epochs" if gain > 0 else "never"
        rows.append(f"| {device} | {mode} | {first:.1f} s | {later:.2f} s | {cost} | {saved} | {pays} "
                    f"| {arm['val_accuracy']:.3f} |")
    return rows


SHARED_JOBS = (1, 2)


def shared_device(device: str, jobs: int, trials: int, epochs: int, cache_dir: Path | None, tmp: Path) -> dict:
    """`sceneclf search --jobs JOBS` of equal-cost trials (section 5's space: fixed widths, only the
    learning rate drawn, no pruning) on one device, in a fresh folder: trials per hour and epochs
    per second from the first trial's start to the last one's end (no process start), and the
    GPU's mean utilisation over the whole command."""
    folder = tmp / f"jobs-{device}-{jobs}"
    folder.mkdir()
    (folder / "space.toml").write_text(EQUAL_COST_SPACE.format(epochs=epochs))
    cmd = [sys.executable, "-m", "sceneclf", "search", "--trials", str(trials), "--space", "space.toml",
           "--pruner", "none", "--sampler", "random", "--jobs", str(jobs), "--device", device,
           "--no-mlflow", "--no-progress"]
    cmd += ["--cache-dir", str(cache_dir)] if cache_dir else []
    with Utilisation() as util:
        done = stage_command(cmd, cwd=folder)
    if isinstance(done, dict):
        return done
    ended, span = trial_span(folder_study(folder).trials)
    if span <= 0:
        return {"error": "no trial finished"}
    return {"trials_per_hour": len(ended) / span * 3600,
            "epochs_per_second": sum(len(t.intermediate_values) for t in ended) / span,
            "utilisation": util.mean if device == "cuda" else None}


def stage(label: str, result):
    """Print a stage's figures as it ends (a run cut short still leaves them in its log)."""
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {result}", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--cuda-stages-on-cpu", action="store_true",
                    help="run the stages that run on CUDA only (compile, a shared device) on the CPU too")
    ap.add_argument("--one-fit", nargs=2, metavar=("DEVICE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    from sceneclf.data.audio import AudioConfig
    from sceneclf.data.prepare import DataConfig, default_cache_dir, prepare
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.train import train_precision

    started = dt.datetime.now().astimezone()
    data = prepare(DataConfig(), AudioConfig(), FeatureConfig(), args.cache_dir or default_cache_dir())
    if args.one_fit:  # one arm of the compile table, in its own process
        device, mode = args.one_fit
        _, history = one_fit(device, data, args.epochs, compile_mode=None if mode == "none" else mode)
        print(json.dumps({"seconds": [h["seconds"] for h in history], "val_accuracy": history[-1]["val_accuracy"]}))
        return 0
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    staged = [d for d in devices if d == "cuda" or args.cuda_stages_on_cpu]
    tmp = Path(tempfile.mkdtemp(prefix="sceneclf-gpu-"))
    try:
        results = {d: stage(d, one_device(d, data, args.trials, args.epochs, tmp)) for d in devices}
        paths = {(d, r): stage(f"{d}, batches held on the device: {r}", one_fit(d, data, args.epochs, r)[0])
                 for d in devices for r in ((False, True) if d == "cuda" else (False,))}
        compiled = {d: {m: stage(f"{d}, compile {m}", compiled_fit(d, m, args.epochs, args.cache_dir))
                        for m in COMPILE_MODES} for d in staged}
        shared = {d: {j: stage(f"{d}, --jobs {j}", shared_device(d, j, args.trials, args.epochs, args.cache_dir, tmp))
                      for j in SHARED_JOBS} for d in staged}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def cell(value, fmt: str, unit: str = "") -> str:
        return "-" if value is None else format(value, fmt) + unit

    gpu = torch.cuda.get_device_name(0) if "cuda" in results else "no GPU found: CPU only"
    lines = [f"## GPU path: {args.trials} trials of {args.epochs} epochs, CPU against CUDA {marker('gpu')}", "",
             (f"- Run: {started:%Y-%m-%d %H:%M %Z} · `python bench/gpu.py --trials {args.trials} --epochs "
              f"{args.epochs}{' --cuda-stages-on-cpu' if args.cuda_stages_on_cpu else ''}` · git {git_state()}"),
             f"- Machine: {machine()}; GPU: {gpu}", "",
             "| device (training precision) | wall | trials/hour | epochs/s | peak GPU memory of a trial "
             "| GPU utilisation | best val |",
             "|---|---|---|---|---|---|---|"]
    for device, r in results.items():
        lines.append(f"| {device} ({train_precision(device)}) | {r['wall']:.0f} s | {r['trials_per_hour']:.0f} | "
                     f"{r['epochs_per_second']:.2f} | "
                     f"{cell(r['gpu_mib'], '.0f', ' MiB')} | {cell(r['utilisation'], '.0f', ' %')} | {cell(r['best'], '.3f')} |")
    if "cuda" in results:
        ratio = results["cuda"]["trials_per_hour"] / results["cpu"]["trials_per_hour"]
        lines += ["", f"CUDA / CPU, trials per hour: {ratio:.1f}x."]
    lines += ["", f"One training of {args.epochs} epochs (widths 24,48,96, batch 32):", "",
              "| device | batches | epochs/s |", "|---|---|---|"]
    lines += [f"| {d} | {'held on the device' if r else 'cut on the host'} | {eps:.2f} |" for (d, r), eps in paths.items()]
    if compiled:
        lines += ["", "The same training through `torch.compile`, each mode in a fresh process with an empty "
                  "inductor cache (compile time counted in full; a default trial trains at most 24 epochs):", "",
                  "| device | mode | first epoch | later epochs (median) | compiling cost | saved per epoch "
                  "| pays for itself after | val |", "|---|---|---|---|---|---|---|---|"]
        lines += [row for d, arms in compiled.items() for row in compile_rows(d, arms)]
    else:
        lines += ["", "`torch.compile` and a shared device: not timed (no GPU; `--cuda-stages-on-cpu` runs them "
                  "on the CPU)."]
    if shared:
        lines += ["", f"`sceneclf search --trials {args.trials} --jobs N` of equal-cost trials ({args.epochs} epochs, "
                  "widths 16,32,64, no pruning) on one device, from the first trial's start to the last one's end:",
                  "",
                  "| device | --jobs | trials/hour | epochs/s | GPU utilisation |", "|---|---|---|---|---|"]
        for d, arms in shared.items():
            for j, arm in arms.items():
                lines.append(f"| {d} | {j} | failed: {arm['error']} | - | - |" if "error" in arm else
                             f"| {d} | {j} | {arm['trials_per_hour']:.0f} | {arm['epochs_per_second']:.2f} | "
                             f"{cell(arm['utilisation'], '.0f', ' %')} |")
    wall = (dt.datetime.now().astimezone() - started).total_seconds()
    lines += ["", f"The whole command: {wall / 60:.1f} min (goal on a GPU machine: under 8 minutes)."]
    section = "\n".join(lines) + "\n"
    print(section)
    replace_section(args.results, "gpu", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
