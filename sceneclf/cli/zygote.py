"""`--jobs` workers forked from a zygote: a process forked from the command's own at its start,
before any parallel work, thread or connection, that forks each worker on request and reaps it.

A worker forked so shares the memory of every library the command imported (torch's above
all) instead of importing its own copy. Forking the command itself later would not do:
by then it has run OpenMP work (after which GNU OpenMP hangs a forked child that uses two threads)
and holds MLflow and storage connections a child must not share.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sceneclf.search.study import Worker

# What a search worker imports: imported before the fork, so that every worker shares them.
PRELOAD = ("torch", "torchaudio", "optuna", "sqlalchemy", "mlflow", "mlflow.tracking", "sklearn.linear_model",
           "sceneclf.cli.actions", "sceneclf.search.study", "sceneclf.search.objective",
           "sceneclf.tracking.tracker", "sceneclf.train", "sceneclf.data.prepare")
POLL_SECONDS = 0.1


def starter(args: list[str], zygote: Zygote | None) -> Callable[[int], Worker]:
    """Start the worker of an index: forked by the zygote, else a new `python -m sceneclf`."""
    def start(index: int) -> Worker:
        indexed = [*args, "--worker-index", str(index)]
        if zygote is not None:
            return zygote.spawn(indexed)
        return subprocess.Popen([sys.executable, "-m", "sceneclf", *indexed])
    return start


def can_fork() -> bool:
    """Forking is safe only from a process with a single thread."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Zygote:
    """The parent's end: ask for a worker (`spawn`), wait for one, close."""

    def __init__(self, pid: int, conn: Connection):
        self.pid, self.conn = pid, conn

    @classmethod
    def start(cls, preload: tuple[str, ...] = PRELOAD) -> Zygote:
        gc.disable()  # no collection leaves holes in the pages the fork shares
        for name in preload:
            with contextlib.suppress(ImportError):  # preloading only shares pages: a worker imports what it uses
                importlib.import_module(name)
        gc.freeze()  # so that no process's collections write to the pages of what is imported
        ours, theirs = Pipe()
        pid = os.fork()
        gc.enable()
        if pid == 0:  # the zygote
            ours.close()
            try:
                _serve(theirs)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours)

    def spawn(self, args: list[str]) -> Forked:
        """Fork a worker that runs `sceneclf ARGS` and exits with its exit code."""
        self.conn.send(("spawn", args))
        return Forked(self, self.conn.recv(), args)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        """The exit code of worker `pid` (minus the signal that killed it), or None at `timeout`."""
        try:
            self.conn.send(("wait", (pid, timeout)))
            return self.conn.recv()
        except (EOFError, OSError):  # the zygote is gone, and with it the worker's exit code
            return _gone(pid, timeout)

    def close(self) -> None:
        """End the zygote (workers still running go on, as children of init)."""
        self.conn.close()
        os.waitpid(self.pid, 0)


@dataclass
class Forked:
    """A worker forked by the zygote, used as a `subprocess.Popen`."""

    zygote: Zygote
    pid: int
    args: list[str]
    returncode: int | None = field(default=None, init=False)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _serve(conn: Connection) -> None:
    """The zygote's loop: fork workers, reap them, answer waits; end when the parent does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command and its workers
    codes: dict[int, int] = {}
    while True:
        _reap(codes)
        try:
            if not conn.poll(POLL_SECONDS):
                continue
            kind, arg = conn.recv()
        except (EOFError, OSError):
            return
        if kind == "spawn":
            conn.send(_fork(arg, conn))
        elif kind == "wait":
            pid, timeout = arg
            deadline = None if timeout is None else time.monotonic() + timeout
            while pid not in codes and (deadline is None or time.monotonic() < deadline):
                time.sleep(POLL_SECONDS)
                _reap(codes)
            conn.send(codes.get(pid))


def _reap(codes: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        codes[pid] = os.waitstatus_to_exitcode(status)


def _fork(args: list[str], conn: Connection) -> int:
    pid = os.fork()
    if pid:
        return pid
    conn.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 1
    try:
        from sceneclf.cli import cli

        cli.main(args=args, prog_name="sceneclf", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # noqa: BLE001  (told as a process's uncaught error would be)
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)  # not the command's exit handlers, which it registered before the fork


def _gone(pid: int, timeout: float | None) -> int | None:
    """Wait for a process that is not our child to go; its exit code is unknown (1)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 1
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)
