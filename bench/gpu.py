"""The GPU path, measured: the same short search on the CPU and on CUDA, side by side.

    python bench/gpu.py [--trials 8] [--epochs 5] [--cache-dir DIR]

For each device: `--trials` trials of the default space, `--epochs` each, on the default data, in
this process (no MLflow); prints trials per hour, epochs per second, peak GPU memory of a trial
and the GPU's mean utilisation (sampled with nvidia-smi); then one training of a default-size
model, epochs per second, with batches cut on the host (a pinned copy per batch) against the
splits held on the GPU (`ResidentMels`); and writes the tables as the `gpu` section of
bench/RESULTS.md. Without a GPU the CPU half runs and the table says no GPU was found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_state, machine
from bench.run import RESULTS, marker, replace_section


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


def one_fit(device: str, data, epochs: int, resident: bool) -> float:
    """Epochs per second of one default-size training (widths 24,48,96, batch 32), data path as given."""
    import torch

    from sceneclf.model.cnn import ModelConfig, SceneClassifier
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.train import TrainConfig, fit

    torch.manual_seed(0)
    model = SceneClassifier(FeatureConfig(), ModelConfig(widths=(24, 48, 96), n_classes=len(data.classes)))
    model.frontend.fit_stats(data.splits["train"].mels)
    cfg = TrainConfig(epochs=epochs, early_stop=epochs, seed=0)
    t0 = time.perf_counter()
    fit(model, data.splits["train"], data.splits["val"], cfg, data.frames, device=device, resident=resident)
    return epochs / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()

    import torch

    from sceneclf.data.audio import AudioConfig
    from sceneclf.data.prepare import DataConfig, default_cache_dir, prepare
    from sceneclf.model.frontend import FeatureConfig
    from sceneclf.train import train_precision

    started = dt.datetime.now().astimezone()
    data = prepare(DataConfig(), AudioConfig(), FeatureConfig(), args.cache_dir or default_cache_dir())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    tmp = Path(tempfile.mkdtemp(prefix="sceneclf-gpu-"))
    try:
        results = {d: one_device(d, data, args.trials, args.epochs, tmp) for d in devices}
        paths = {(d, r): one_fit(d, data, args.epochs, r) for d in devices for r in ((False, True) if d == "cuda" else (False,))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def cell(value, fmt: str, unit: str = "") -> str:
        return "-" if value is None else format(value, fmt) + unit

    gpu = torch.cuda.get_device_name(0) if "cuda" in results else "no GPU found: CPU only"
    lines = [f"## GPU path: {args.trials} trials of {args.epochs} epochs, CPU against CUDA {marker('gpu')}", "",
             (f"- Run: {started:%Y-%m-%d %H:%M %Z} · `python bench/gpu.py --trials {args.trials} --epochs "
              f"{args.epochs}` · git {git_state()}"),
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
    section = "\n".join(lines) + "\n"
    print(section)
    replace_section(args.results, "gpu", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
