"""10. Preparation at scale (issue 16): a generated set of a few thousand 4-second clips at
22.05 kHz (each one resampled to 16 kHz), prepared into a fresh mel store by 1 and by 2
processes, alternated, medians of the rounds; the store's size against the audio's; the start-up
of a second run (a fresh process until the data are ready, from the store); the memory of 2
processes that map the store, each having read every clip, against one, and against 2 that hold
private copies of the mels (the per-clip .npy cache's way).

Each measurement is a fresh `python -c` process, so the workers' start-up counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import PYTHON, ROOT, Context, Section, fmt_s, load, median

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from sceneclf.data.audio import AudioConfig
from sceneclf.data.prepare import DataConfig, prepare
from sceneclf.model.frontend import FeatureConfig

def kib(lines, *keys):
    return sum(int(line.split()[1]) for line in lines if line.startswith(keys))

def store_kib():
    # resident and private KiB of the store's mapping (/proc/self/smaps: a header line, then fields)
    rss = private = 0
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if not line.split()[0].endswith(":"):
            inside = line.endswith("mels.f32")
        elif inside:
            rss += kib([line], "Rss:")
            private += kib([line], "Private_Clean:", "Private_Dirty:")
    return rss, private

mode, data, cache, workers = sys.argv[1:5]
import os
t1, c1 = time.perf_counter(), os.times()
prepared = prepare(DataConfig(data=data), AudioConfig(), FeatureConfig(), Path(cache), workers=int(workers) or None)
t2, c2 = time.perf_counter(), os.times()
out = {"ready_s": t2 - t0, "prepare_s": t2 - t1, "computed": prepared.computed,
       "clips": sum(len(s) for s in prepared.splits.values()),
       "cpu_s": c2.user - c1.user + c2.system - c1.system,  # this process
       "workers_cpu_s": c2.children_user - c1.children_user + c2.children_system - c1.children_system}
if mode != "prepare":
    mels = [m for s in prepared.splits.values() for m in s.mels]
    if mode == "copy":
        mels = [m.clone() for m in mels]
    out["checksum"] = sum(float(m.sum()) for m in mels)  # every page read, as an epoch does
    rollup = Path("/proc/self/smaps_rollup").read_text().splitlines()
    out.update(rss_kib=kib(rollup, "Rss:"), uss_kib=kib(rollup, "Private_Clean:", "Private_Dirty:"),
               mel_kib=sum(m.numel() for m in mels) * 4 // 1024)
    out["store_rss_kib"], out["store_private_kib"] = store_kib()
    print(json.dumps(out), flush=True)
    sys.stdin.readline()  # hold the memory until the bench has measured the others
else:
    print(json.dumps(out), flush=True)
"""


def child(mode: str, data: Path, cache: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", CHILD, mode, str(data), str(cache), str(workers)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child exited with {proc.wait()} before its result")
    return json.loads(line)


def prepare_once(data: Path, cache: Path, workers: int) -> tuple[float, dict]:
    """(wall seconds of the whole process, its result) for preparing `data` into `cache`."""
    t0 = time.perf_counter()
    proc = child("prepare", data, cache, workers)
    out = result(proc)
    proc.wait()
    return time.perf_counter() - t0, out


def memory(mode: str, data: Path, cache: Path) -> tuple[dict, list[dict]]:
    """One process alone, then two at once (the first still there): their RSS and USS."""
    first = child(mode, data, cache, 1)
    alone = result(first)
    second = child(mode, data, cache, 1)
    both = [result(second)]
    for proc in (first, second):
        proc.stdin.close()
        proc.wait()
    return alone, both


BARE = r"""
import json
from pathlib import Path
import torch, torchaudio
lines = Path("/proc/self/smaps_rollup").read_text().splitlines()
kib = lambda *keys: sum(int(line.split()[1]) for line in lines if line.startswith(keys))
print(json.dumps({"rss_kib": kib("Rss:"), "uss_kib": kib("Private_Clean:", "Private_Dirty:")}))
"""


def bare_torch() -> dict:
    """RSS and USS of a process that only imports torch and torchaudio."""
    return json.loads(subprocess.run([PYTHON, "-c", BARE], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout)


FRESH = [PYTHON, "-c", "from sceneclf.cli import cli; cli()"]  # workers started as new processes
FORKED = [PYTHON, "-m", "sceneclf"]  # the command's own process: workers forked by its zygote


def search_memory(data: Path, cache: Path, folder: Path, launcher: list[str], seconds: float) -> dict:
    """`sceneclf search --jobs 2` on the prepared data, sampled every few seconds for `seconds`
    once its worker has started: the most physical memory the search process held, and the most
    that its other processes (the worker; the zygote, where there is one) held beside it that the
    search process did not (`bench.frames`). Then the whole process group is killed."""
    from bench.frames import added, children, frames, mib

    folder.mkdir(parents=True, exist_ok=True)
    cmd = [*launcher, "search", "--data", str(data), "--cache-dir", str(cache), "--jobs", "2", "--trials", "50",
           "--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
           "--no-progress", "--device", "cpu"]
    with open(folder / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    first = extra = 0
    try:
        while proc.poll() is None and len(children(proc.pid)) < (2 if launcher is FORKED else 1):
            time.sleep(0.5)
        end = time.monotonic() + seconds
        while proc.poll() is None and time.monotonic() < end:
            main = frames(proc.pid)
            first = max(first, main.size)
            extra = max(extra, added(main, [frames(k) for k in children(proc.pid)]))
            time.sleep(2)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass  # the search ended first
        proc.wait()
    return {"first_mib": mib(first), "added_mib": mib(extra)}


def bench_synth(per_class: int):
    """The benchmark's data set: 4 s clips at 22.05 kHz, `per_class` of each scene."""
    from sceneclf.data.synth import SynthConfig

    return SynthConfig(clips_per_class=per_class, sample_rate=22050, min_seconds=4.0, max_seconds=4.0)


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def torch_version() -> str:
    import torch

    return torch.__version__


def run(ctx: Context) -> Section:
    from sceneclf.data.synth import default_dataset

    sec = Section("10. Preparation at scale: 1 and 2 processes, the mel store, a second run, memory")
    per_class, rounds = (40, 1) if ctx.quick else (150, 3)
    # TAU Urban Acoustic Scenes 2020 Mobile's clip count: BENCH_PREP_CLIPS_PER_CLASS=1536 BENCH_PREP_ROUNDS=1
    per_class = int(os.environ.get("BENCH_PREP_CLIPS_PER_CLASS", per_class))
    rounds = int(os.environ.get("BENCH_PREP_ROUNDS", rounds))
    synth = bench_synth(per_class)
    ctx.say(f"  data set: {per_class * 15} clips (generated once into the cache)")
    data = default_dataset(ctx.cache_dir / "datasets", synth, seed=0)
    audio_bytes = sum(f.stat().st_size for f in (data / "audio").glob("*.wav"))
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpus: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    clips = 0
    for r in range(rounds):
        for workers in (1, 2):  # alternated: the machine's load moves under both alike
            cache = ctx.tmp / f"prep-{workers}-{r}"
            wall, out = prepare_once(data, cache, workers)
            clips = out["computed"]
            walls[workers].append(out["prepare_s"])
            cpus[workers].append((out["cpu_s"], out["workers_cpu_s"]))
            ctx.say(f"  round {r + 1}, {workers} process(es): {clips} clips, prepare() {out['prepare_s']:.1f} s, "
                    f"process {fmt_s(wall)}; load {load()}")
            if not (r == rounds - 1 and workers == 2):
                shutil.rmtree(cache)
    store = next((cache / "mels").iterdir())
    store_bytes = sum(f.stat().st_size for f in store.iterdir())
    warm = [prepare_once(data, cache, 0) for _ in range(3)]
    assert all(out["computed"] == 0 for _, out in warm)
    start_up = median([out["ready_s"] for _, out in warm])
    load_s = median([out["prepare_s"] for _, out in warm])
    shared_alone, shared_both = memory("map", data, cache)
    copy_alone, copy_both = memory("copy", data, cache)

    one, two = median(walls[1]), median(walls[2])
    speedup = one / two
    sec.add(f"{clips} clips of 4 s at 22.05 kHz (synthetic, `SynthConfig(clips_per_class={per_class}, "
            "sample_rate=22050, min_seconds=4.0, max_seconds=4.0)`), resampled to 16 kHz, 40 mel bands. "
            f"`prepare()` into a fresh store, {rounds} round(s) of 1 then 2 processes (`workers=1`, `workers=2`: "
            "the calling process and one started for the purpose), each in a fresh process; the time is "
            "the call's, the workers' start included. The machine is shared: other users' processes "
            "ran at the same time (load averages in the log).", "")
    # CPU seconds of the calling process and of the worker it started: on an idle machine the
    # wall time would be the busier one's, so their ratio is the speed-up the load hid
    path = {w: median([max(c) for c in cpus[w]]) for w in (1, 2)}
    sec.table(["processes", "prepare() (s)", "median", "clips/s", "vs 1 process",
               "CPU s: caller + worker (median)", "busier process's CPU s, vs 1 process"],
              [[w, ", ".join(f"{t:.1f}" for t in walls[w]), fmt_s(median(walls[w])),
                f"{clips / median(walls[w]):.0f}", f"{one / median(walls[w]):.2f}x",
                f"{median([c[0] for c in cpus[w]]):.1f} + {median([c[1] for c in cpus[w]]):.1f}",
                f"{path[w]:.1f} ({path[1] / path[w]:.2f}x)"] for w in (1, 2)])
    sec.table(["what", "value"], [
        ["audio files", mib(audio_bytes // 1024)],
        ["mel store (data + index)", f"{mib(store_bytes // 1024)} ({store_bytes / audio_bytes:.2f}x the audio)"],
        ["second run: process start to data ready, imports included (median of 3)", fmt_s(start_up)],
        ["second run: prepare() from the store (median of 3)", fmt_s(load_s)],
    ])
    rows = []
    for label, alone, both in (("map the store", shared_alone, shared_both),
                               ("private copies", copy_alone, copy_both)):
        second = both[0]
        mel_private = second["store_private_kib"] if label == "map the store" else second["mel_kib"]
        rows.append([label, mib(alone["mel_kib"]), mib(alone["rss_kib"]), mib(second["uss_kib"]),
                     f"{second['uss_kib'] / alone['rss_kib']:.0%}", mib(mel_private)])
    sec.add("Memory: a process that prepared the data from the store and read every mel, alone; then a "
            "second such process beside it. What the second adds is its private memory (USS); the "
            "first's memory is its whole resident set (RSS). The last column is the mels' part of the "
            "second's private memory (its private pages of the store's mapping, or its copies).", "")
    bare = bare_torch()
    rows.append(["(none: `import torch, torchaudio` only)", "-", mib(bare["rss_kib"]), mib(bare["uss_kib"]),
                 f"{bare['uss_kib'] / bare['rss_kib']:.0%}", "-"])
    sec.table(["mels", "mels", "first: RSS", "second: USS (added)", "added / first's RSS",
               "second: mels private"], rows)
    sec.add(f"torch {torch_version()}: what a second process adds is what importing torch costs each "
            "process; the mels add nothing when mapped from the store.", "")
    added = shared_both[0]["uss_kib"] / shared_alone["rss_kib"]
    mel_added = shared_both[0]["store_private_kib"] / max(1, shared_both[0]["mel_kib"])
    sec.goal("10 preparation: 2 processes / 1, prepare() wall", f"{speedup:.2f}x", ">= 1.8x", speedup >= 1.8)
    sec.goal("10 preparation: 2 processes / 1, busier process's CPU time", f"{path[1] / path[2]:.2f}x",
             ">= 1.8x (what an idle machine's wall would show)", path[1] / path[2] >= 1.8)
    sec.goal("10 store size / audio size", f"{store_bytes / audio_bytes:.2f}", "<= 0.33",
             store_bytes / audio_bytes <= 0.33)
    sec.goal("10 second run: process start to data ready", fmt_s(start_up), "< 10 s", start_up < 10)
    sec.goal("10 memory an extra process adds / the first's RSS (whole process)", f"{added:.0%}", "< 30 %",
             added < 0.30)
    sec.goal("10 mels: an extra process's private copy / the mels' size", f"{mel_added:.0%}", "< 30 %",
             mel_added < 0.30)
    return sec


def main() -> None:
    import argparse
    import tempfile

    from sceneclf.data.prepare import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--search-memory", type=float, metavar="SECONDS", default=None,
                    help="only: `search --jobs 2`, workers fresh and forked, sampled this long; on the default "
                         "data, or with BENCH_PREP_CLIPS_PER_CLASS set on the benchmark's data set of that size")
    args = ap.parse_args()
    if args.search_memory:
        from bench.frames import readable
        from sceneclf.data.synth import SynthConfig, default_dataset

        if not readable():
            raise SystemExit("--search-memory: /proc/PID/pagemap gives no frame numbers here (needs root)")

        cache = (args.cache_dir or default_cache_dir()).resolve()
        per_class = os.environ.get("BENCH_PREP_CLIPS_PER_CLASS")
        synth = bench_synth(int(per_class)) if per_class else SynthConfig()
        data = default_dataset(cache / "datasets", synth, seed=0)
        with tempfile.TemporaryDirectory(prefix="sceneclf-mem-") as tmp:
            for name, launcher in (("fresh", FRESH), ("forked", FORKED)):
                m = search_memory(data, cache, Path(tmp) / name, launcher, args.search_memory)
                print(f"| {name} | {m['first_mib']:.0f} MiB | {m['added_mib']:.0f} MiB | "
                      f"{m['added_mib'] / m['first_mib']:.0%} |", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="sceneclf-prep-") as tmp:
        ctx = Context(quick=args.quick, cache_dir=(args.cache_dir or default_cache_dir()).resolve(), tmp=Path(tmp))
        print(run(ctx).markdown())


if __name__ == "__main__":
    main()
