"""What a `--jobs` worker would cost if forked from a process that has imported torch, by hand.

Prints one table: the resident and private dirty memory (what no other process can share: a
library's file pages become shared as soon as a second process maps them) of a fresh process after
`import torch, torchaudio` and sceneclf's training modules; of a child forked from it that then
trains a few steps on one thread; and whether a forked child can still use two threads once its parent has
run parallel work (GNU OpenMP cannot: the child hangs, so it is stopped after 30 s).

    python -m bench.fork_memory
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from pathlib import Path


def memory_mib(pid: int) -> tuple[int, int]:
    """(RSS, private dirty) in MiB from /proc/PID/smaps_rollup."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()

    def kib(*keys: str) -> int:
        return sum(int(x.split()[1]) for x in lines if x.startswith(keys))

    return kib("Rss:") // 1024, kib("Private_Dirty:") // 1024


def train_steps(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(2, 32, 3)
    x = torch.randn(64, 2, 40, 200)
    for _ in range(5):
        conv(x).sum().backward()


def fork(threads: int, timeout: float) -> tuple[str, tuple[int, int] | None]:
    """Fork a child that trains on `threads` threads; ('ok' | 'hung', its memory while alive)."""
    pid = os.fork()
    if pid == 0:
        train_steps(threads)
        time.sleep(2)  # stay alive to be measured
        os._exit(0)
    deadline = time.monotonic() + timeout
    mem = None
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok", mem
        mem = memory_mib(pid)
        time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung", mem


def main() -> None:
    for name in ("torch", "torchaudio", "sceneclf.train", "sceneclf.search.objective"):
        importlib.import_module(name)  # in this process, so that forked children share them

    rss, uss = memory_mib(os.getpid())
    print("| process | RSS | private dirty | result |\n|---|---|---|---|")
    print(f"| fresh, after the imports | {rss} MiB | {uss} MiB | - |")
    state, mem = fork(1, 30)
    print(f"| forked before any parallel work, trains on 1 thread | {mem[0]} MiB | {mem[1]} MiB | {state} |")
    train_steps(2)  # the parent's own parallel work, as data preparation and the reference do
    state, _ = fork(1, 30)
    print(f"| forked after the parent's parallel work, 1 thread | | | {state} |")
    state, _ = fork(2, 30)
    print(f"| forked after the parent's parallel work, 2 threads | | | {state} |")


if __name__ == "__main__":
    main()
