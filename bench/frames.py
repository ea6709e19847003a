"""The physical pages a set of processes holds, from /proc/PID/pagemap (needs root for the frame
numbers): what a group of processes adds to a machine is the pages it holds that no one else
does, which neither RSS (counts shared pages in full) nor USS (misses pages the group shares
among itself) says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PAGE = 4096
PRESENT = np.uint64(1 << 63)
PFN = np.uint64((1 << 55) - 1)


def frames(pid: int) -> np.ndarray:
    """The sorted frame numbers of the process's resident pages (empty when it is gone)."""
    found = []
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        with open(f"/proc/{pid}/pagemap", "rb") as f:
            for line in maps:
                if line.endswith("[vsyscall]"):
                    continue
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                f.seek(start // PAGE * 8)
                entries = np.frombuffer(f.read((end - start) // PAGE * 8), dtype=np.uint64)
                found.append(entries[(entries & PRESENT) != 0] & PFN)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)


def readable() -> bool:
    """Whether this process may read frame numbers (they read as 0 without CAP_SYS_ADMIN)."""
    import os

    f = frames(os.getpid())
    return bool(f.size) and bool(f.max())


def children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc/*/stat."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def mib(pages: int) -> float:
    return pages * PAGE / 2**20


def added(first: np.ndarray, others: list[np.ndarray]) -> int:
    """Pages the other processes hold together that the first does not: what they add."""
    if not others:
        return 0
    return int(np.setdiff1d(np.unique(np.concatenate(others)), first, assume_unique=True).size)
