"""2. Compute efficiency: achieved GFLOP/s of a training pass against dense matmul GFLOP/s.

FLOPs of one real training step (front end, CNN, loss, backward) come from
`torch.utils.flop_counter.FlopCounterMode`; they scale with the batch, so a training pass costs
FLOPs-per-clip x training clips. The machine's reference is `torch.mm` of 1024 x 1024 float32
matrices, measured in the same run before and after the variants (best block kept).

Variants are timed interleaved (one pass of each per round, medians over rounds) so that a change
in the machine's load hits all of them alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Context, Section, Timer, fmt_s, median
from sceneclf.data.melset import batches, clip_windows
from sceneclf.model.budget import count_params
from sceneclf.model.cnn import ModelConfig, SceneClassifier
from sceneclf.model.frontend import FeatureConfig
from sceneclf.train import score

NOISE = 0.1
TRIAL_EPOCHS = 10  # compile time is paid once per trial (each trial builds a new model)


def matmul_gflops(threads: int, n: int = 1024, reps: int = 8, blocks: int = 5) -> float:
    """Best block's GFLOP/s of float32 n x n matrix products with `threads` threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            torch.mm(a, b)
        best = 0.0
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
        return best
    finally:
        torch.set_num_threads(saved)


def flops_per_clip(model: SceneClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward + backward FLOPs of one training step, per clip."""
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = nn.functional.cross_entropy(model.forward_mel(x), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(y)


@dataclass
class Variant:
    name: str
    threads: int
    batch: int = 32
    channels_last: bool = False  # the weights too (the input is channels_last since 7c02395)
    nchw: bool = False  # the CNN on plain NCHW input, as before 7c02395
    compile: bool = False
    relu_first: bool = False  # Conv-BN-ReLU-MaxPool blocks, as before 3767e37 (now Conv-BN-MaxPool-ReLU)
    torch_pool: bool = False  # nn.AdaptiveAvgPool2d(1) itself, as before 2d05a15 (now GlobalAvgPool2d)
    adam: str = "for-loop"  # torch's default on the CPU; or "foreach", "fused"


def nchw_forward(cnn) -> Callable[[torch.Tensor], torch.Tensor]:
    """SceneCNN's forward as it was before 7c02395 (no channels_last conversion)."""
    return lambda x: cnn.head(cnn.dropout(cnn.pool(cnn.blocks(x)).flatten(1)))


class Runner:
    """One variant's model, optimiser and data order; `train_pass()` runs one training pass."""

    def __init__(self, v: Variant, model_cfg: ModelConfig, data, seed: int = 0):
        self.v, self.data = v, data
        torch.manual_seed(seed)
        self.model = SceneClassifier(FeatureConfig(noise=NOISE), model_cfg)
        self.model.frontend.fit_stats(data.splits["train"].mels)
        if v.channels_last:
            self.model.cnn.to(memory_format=torch.channels_last)
        if v.relu_first:
            for block in self.model.cnn.blocks:
                if len(block) == 4:  # conv, bn, pool, relu -> conv, bn, relu, pool
                    block[2], block[3] = block[3], block[2]
        if v.torch_pool:
            self.model.cnn.pool = nn.AdaptiveAvgPool2d(1)
        self.cnn = torch.compile(self.model.cnn) if v.compile else self.model.cnn
        if v.nchw:
            self.cnn = nchw_forward(self.model.cnn)
        choice = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
        self.opt = torch.optim.Adam(self.model.parameters(), lr=3e-3, **choice[v.adam])
        self.gen = torch.Generator().manual_seed(seed)

    def train_pass(self) -> float:
        saved = torch.get_num_threads()
        torch.set_num_threads(self.v.threads)
        try:
            with Timer() as t:
                self.model.train()
                for x, y in batches(self.data.splits["train"], self.v.batch, self.data.frames, train=True,
                                    generator=self.gen):
                    feats = self.model.frontend.from_mel(x)
                    if self.v.channels_last:
                        feats = feats.contiguous(memory_format=torch.channels_last)
                    loss = nn.functional.cross_entropy(self.cnn(feats), y)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    loss.item()
            return t.seconds
        finally:
            torch.set_num_threads(saved)


# label -> grad mode of a plain forward pass over the model as trained; None: `train.score` itself
EVAL_MODES = {"`evaluate` as shipped (inference_mode, BatchNorm folded)": None,
              "inference_mode, BatchNorm apart": torch.inference_mode,
              "no_grad, BatchNorm apart": torch.no_grad,
              "autograd on, BatchNorm apart": torch.enable_grad}


def eval_pass(model: SceneClassifier, data, mode: str) -> float:
    """One validation pass: `train.score` (BatchNorm folded into the convolutions, under
    inference_mode), or the model as trained under inference_mode, no_grad, or with autograd on."""
    val = data.splits["val"]
    grad_mode = EVAL_MODES[mode]
    with Timer() as t:
        if grad_mode is None:
            score(model, val, data.frames)
        else:
            model.eval()
            with grad_mode():
                outs = [model.forward_mel(x) for x, _ in clip_windows(val, 128, data.frames)]
                torch.cat(outs).argmax(1)
    return t.seconds


@dataclass
class Measured:
    label: str
    cfg: ModelConfig
    per_clip: float  # training FLOPs per clip
    pass_flops: float
    seconds: dict[str, float]  # variant -> median training pass
    first: dict[str, float]  # variant -> first pass (with compilation)
    compiled: set[str]
    failed: list[str]


def measure_model(ctx: Context, label: str, model_cfg: ModelConfig, data, threads: int) -> Measured:
    """Time every variant's training pass for one model, interleaved over rounds."""
    train = data.splits["train"]
    probe = SceneClassifier(FeatureConfig(noise=NOISE), model_cfg)
    probe.frontend.fit_stats(train.mels[:32])
    x, y = next(batches(train, 32, data.frames, train=True))
    per_clip = flops_per_clip(probe, x, y)
    variants = [Variant(f"as shipped ({threads} threads, batch 32)", threads)]
    if threads != 1:
        variants.append(Variant("1 thread", 1))
    variants += [Variant("ReLU before the pool (before 3767e37)", threads, relu_first=True),
                 Variant("ReLU before the pool (before 3767e37), 1 thread", 1, relu_first=True),
                 Variant("torch's AdaptiveAvgPool2d (before 2d05a15)", threads, torch_pool=True),
                 Variant("Adam foreach", threads, adam="foreach"),
                 Variant("Adam fused", threads, adam="fused"),
                 Variant("NCHW input (before 7c02395)", threads, nchw=True),
                 Variant("NCHW input (before 7c02395), 1 thread", 1, nchw=True),
                 Variant("weights channels_last too, 1 thread", 1, channels_last=True),
                 Variant("batch 64", threads, batch=64),
                 Variant("batch 128", threads, batch=128),
                 Variant("batch 64, 1 thread", 1, batch=64),
                 Variant("torch.compile (inductor)", threads, compile=True)]
    runners: list[tuple[Variant, Runner]] = []
    first: dict[str, float] = {}
    failed = []
    for v in variants:
        ctx.say(f"  {label}: set up {v.name}")
        r = Runner(v, model_cfg, data)
        try:
            first[v.name] = r.train_pass()  # warm-up (and compilation)
        except Exception as exc:  # noqa: BLE001  torch.compile may be unavailable
            failed.append(f"{v.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        runners.append((v, r))
    rounds = 2 if ctx.quick else 4
    times: dict[str, list[float]] = {v.name: [] for v, _ in runners}
    for i in range(rounds):
        ctx.say(f"  {label}: round {i + 1}/{rounds}")
        for v, r in runners:
            times[v.name].append(r.train_pass())
    return Measured(label, model_cfg, per_clip, per_clip * len(train),
                    {k: median(v) for k, v in times.items()}, first,
                    {v.name for v, _ in runners if v.compile}, failed)


def report_model(sec: Section, m: Measured, peak: float, n_train: int) -> tuple[float, float, str]:
    """The variants table; returns (baseline share of peak, best share, best variant)."""
    base_name = next(iter(m.seconds))
    base = m.seconds[base_name]
    rows, share = [], {}
    for name, t in m.seconds.items():
        gflops = m.pass_flops / t / 1e9
        share[name] = gflops / peak
        note = ""
        if name in m.compiled:
            compile_s = max(0.0, m.first[name] - t)
            amortised = t + compile_s / TRIAL_EPOCHS
            share[name] = m.pass_flops / amortised / 1e9 / peak  # judged with its compile time
            note = (f"compile {fmt_s(compile_s)}; spread over a {TRIAL_EPOCHS}-epoch trial: "
                    f"{fmt_s(amortised)} per pass, {base / amortised:.2f}x baseline, "
                    f"{share[name]:.1%} of peak")
        rows.append([name, fmt_s(t), f"{base / t:.2f}x", f"{gflops:.1f}", f"{gflops / peak:.1%}", note])
    sec.add(f"**{m.label}**: widths {m.cfg.widths}, kernel {m.cfg.kernel_size}, "
            f"{count_params(m.cfg):,} parameters; {m.per_clip / 1e6:.1f} MFLOP per training clip "
            f"(forward + backward), {m.pass_flops / 1e9:.1f} GFLOP per training pass of {n_train} clips.", "")
    sec.table(["variant", "training pass (median)", "speed vs baseline", "GFLOP/s", "of matmul peak", "note"], rows)
    for f in m.failed:
        sec.add(f"- failed: {f}")
    best = max(share, key=share.get)
    return share[base_name], share[best], best


def child_passes(cache_dir: str, widths: str, passes: int) -> None:
    """`python -m bench.compute CACHE WIDTHS PASSES`: time training passes in a fresh process (so
    that OpenMP environment variables, read when torch loads, can differ); prints JSON."""
    import json
    from pathlib import Path

    from sceneclf.data.audio import AudioConfig
    from sceneclf.data.prepare import DataConfig, prepare

    data = prepare(DataConfig(), AudioConfig(), FeatureConfig(), Path(cache_dir))
    cfg = ModelConfig(n_classes=len(data.classes), widths=tuple(int(w) for w in widths.split(",")))
    r = Runner(Variant("child", torch.get_num_threads()), cfg, data)
    r.train_pass()
    print(json.dumps({"threads": torch.get_num_threads(), "seconds": [r.train_pass() for _ in range(passes)]}))


# Process settings compared in child processes, since OpenMP and malloc read them at start-up; the
# malloc row is not shipped and is measured so that its speed-for-memory trade stays visible.
SHIPPED = "as shipped (OMP_WAIT_POLICY=PASSIVE, glibc's malloc), 2 threads"
KEEP_FREED = "malloc keeps freed memory (MALLOC_MMAP_THRESHOLD_=256 MiB, MALLOC_TRIM_THRESHOLD_=1 GiB), 2 threads"
ENV_VARIANTS = {
    SHIPPED: {},
    "OMP_WAIT_POLICY=ACTIVE (spinning; the default before 030e353), 2 threads": {"OMP_WAIT_POLICY": "ACTIVE"},
    "as shipped, OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    KEEP_FREED: {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
}
CLEARED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GLIBC_TUNABLES")


def env_variants(ctx: Context, cfg: ModelConfig, rounds: int,
                 envs: dict[str, dict[str, str]]) -> list[tuple[str, float]]:
    """Training passes of the baseline in child processes under different environments,
    alternated; (setting, median seconds per pass)."""
    import json
    import subprocess
    import sys

    times: dict[str, list[float]] = {k: [] for k in envs}
    widths = ",".join(map(str, cfg.widths))
    for i in range(rounds):
        for name, extra in envs.items():
            ctx.say(f"  child process, widths {widths}, round {i + 1}/{rounds}: {name}")
            env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("MALLOC_")}
            out = subprocess.run([sys.executable, "-m", "bench.compute", str(ctx.cache_dir), widths, "2"],
                                 env={**env, **extra}, capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parent.parent)
            times[name].extend(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return [(name, median(v)) for name, v in times.items()]


def run(ctx: Context) -> Section:
    sec = Section("2. Compute efficiency: achieved GFLOP/s of training against dense matmul")
    data = ctx.data()
    threads = torch.get_num_threads()
    n_classes = len(data.classes)
    ctx.say("  matmul reference")
    mm = {t: [matmul_gflops(t)] for t in sorted({1, threads})}
    models = [("default model", ModelConfig(n_classes=n_classes, widths=(16, 32, 64)))]
    if not ctx.quick:
        models.append(("large model", ModelConfig(n_classes=n_classes, widths=(32, 64, 128))))
    measured = [measure_model(ctx, label, cfg, data, threads) for label, cfg in models]
    for t, values in mm.items():
        values.append(matmul_gflops(t))
    peak = max(max(v) for v in mm.values())
    sec.add("Dense matmul (1024 x 1024 float32, best block; before / after the variants): "
            + ", ".join(f"{t} thread{'s' * (t > 1)} {' / '.join(f'{g:.1f}' for g in v)} GFLOP/s"
                        for t, v in mm.items())
            + f". Machine peak taken as **{peak:.1f} GFLOP/s**. Training noise {NOISE}; "
            "a pass = one training pass over the training split (no validation).", "")
    for m in measured:
        base_share, best_share, best_name = report_model(sec, m, peak, len(data.splits["train"]))
        sec.goal(f"2 compute ({m.label}): training GFLOP/s / matmul peak, as shipped",
                 f"{base_share:.1%}", ">= 25 %", base_share >= 0.25)
        sec.goal(f"2 compute ({m.label}): best variant ({best_name})", f"{best_share:.1%}",
                 ">= 25 %", best_share >= 0.25)

    ctx.say("  process settings (OpenMP, malloc) in child processes")
    rounds = 2 if ctx.quick else 3
    env_rows = []
    for i, (label, cfg) in enumerate(models):  # the large model: only the malloc pair
        envs = ENV_VARIANTS if i == 0 else {k: ENV_VARIANTS[k] for k in (SHIPPED, KEEP_FREED)}
        env_rows += [(label, name, t) for name, t in env_variants(ctx, cfg, rounds, envs)]
    shipped = {label: t for label, name, t in env_rows if name == SHIPPED}
    flops = {m.label: m.pass_flops for m in measured}
    sec.add("**Process settings** (each in its own process, since OpenMP reads its settings when "
            "torch loads and glibc's malloc reads its environment at start; processes alternated). The "
            "in-process variants above run with the suite's own settings.", "")
    sec.table(["model", "setting", "training pass (median)", "speed vs as shipped", "GFLOP/s", "of matmul peak"],
              [[label, name, fmt_s(t), f"{shipped[label] / t:.2f}x", f"{flops[label] / t / 1e9:.1f}",
                f"{flops[label] / t / 1e9 / peak:.1%}"] for label, name, t in env_rows])

    ctx.say("  evaluation: BatchNorm folded / inference_mode / no_grad / autograd on")
    # Each validation pass follows a training pass, as in `fit`: passes run back to back find the
    # memory of the pass before still mapped, which hides what folding BatchNorm saves.
    runner = Runner(Variant("eval", threads), models[0][1], data)
    modes = list(EVAL_MODES)
    eval_times: dict[str, list[float]] = {m: [] for m in modes}
    for m in modes:
        runner.train_pass()
        eval_pass(runner.model, data, m)
    for i in range(3 if ctx.quick else 6):
        for m in (modes if i % 2 == 0 else modes[::-1]):
            runner.train_pass()
            eval_times[m].append(eval_pass(runner.model, data, m))
    base = median(eval_times[modes[0]])
    sec.table([f"validation pass after a training pass (default model, {len(data.splits['val'])} clips)",
               "median", "time vs as shipped"],
              [[m, fmt_s(median(eval_times[m])), f"{median(eval_times[m]) / base:.2f}x"] for m in modes])
    return sec


if __name__ == "__main__":
    import sys

    child_passes(*sys.argv[1:3], int(sys.argv[3]))
