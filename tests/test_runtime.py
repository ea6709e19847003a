"""Process-wide settings made on `import sceneclf`: freed tensor memory is reused (no fresh pages
per batch), and a user's own malloc settings are left alone."""

import os
import subprocess
import sys

import pytest

# Allocate and free a 64 MiB tensor again and again, as every training step does with its
# activations; print the page faults of the last rounds (the first ones grow the heap).
PROBE = """
import resource, sys
import sceneclf
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(12):
    before = faults()
    x = torch.ones(16 << 20)
    del x
    counts.append(faults() - before)
print(sum(counts[-4:]))
"""
PAGES_PER_ROUND = (64 << 20) // os.sysconf("SC_PAGE_SIZE")


def last_rounds_faults(env_extra: dict[str, str]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **env_extra},
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_import_keeps_freed_tensor_memory_for_reuse():
    # glibc's defaults serve a 64 MiB block with its own mmap and unmap it on free: every round
    # faults in all its pages again. After `import sceneclf` the block is reused.
    assert last_rounds_faults({}) < PAGES_PER_ROUND // 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_a_users_malloc_settings_are_kept():
    # Any malloc setting in the environment (here one that changes nothing) means hands off:
    # glibc's default behaviour, fresh pages every round.
    assert last_rounds_faults({"GLIBC_TUNABLES": ""}) >= 4 * PAGES_PER_ROUND * 0.9
