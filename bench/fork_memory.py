"""What a `--jobs` worker would cost if forked from a process that has imported torch, by hand.

Prints one table: the resident and private memory of a fresh process after `import torch,
torchaudio` and sceneclf's training modules; of a child forked from it that then trains a few
steps on one thread; and whether a forked child can still use two threads once its parent has
run parallel work (GNU OpenMP cannot: the child hangs, so it is stopped after 30 s).

    python -m bench.fork_memory
"""

from __future__ import annotations

import os
import signal
import time


def memory_mib(pid: int) -> tuple[int, int]:
    """(RSS, USS) in MiB from /proc/PID/smaps_rollup."""
    lines = open(f"/proc/{pid}/smaps_rollup").read().splitlines()  # noqa: SIM115
    kib = lambda *keys: sum(int(x.split()[1]) for x in lines if x.startswith(keys))  # noqa: E731
    return kib("Rss:") // 1024, kib("Private_Clean:", "Private_Dirty:") // 1024


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
    import torch  # noqa: F401
    import torchaudio  # noqa: F401

    import sceneclf.search.objective  # noqa: F401
    import sceneclf.train  # noqa: F401

    rss, uss = memory_mib(os.getpid())
    print("| process | RSS | private (USS) | result |\n|---|---|---|---|")
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
