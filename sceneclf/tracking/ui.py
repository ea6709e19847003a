"""`sceneclf ui`: the MLflow UI on the store the other commands use."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sceneclf.errors import ConfigError, first_line
from sceneclf.tracking.stores import check_store, experiment_url, local_artifact_root, mlflow_client


# -- the MLflow UI -------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                              "choose another --port") from None


def study_experiment_url(base: str, tracking_uri: str, experiment: str) -> str | None:
    """The URL of `experiment`'s runs table in the UI at `base`; None if there is no such
    experiment."""
    try:
        found = mlflow_client(tracking_uri).get_experiment_by_name(experiment)
    except Exception as exc:
        reason = first_line(exc)
        raise ConfigError(f"--tracking-uri {tracking_uri}: MLflow store not usable ({reason})") from None
    if found is None:
        return None
    return experiment_url(base, found.experiment_id)


@dataclass
class UiServer:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its workers (its own process group)."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    root = local_artifact_root(tracking_uri)
    if root is not None:  # new experiments' artifacts beside the store
        cmd += ["--default-artifact-root", root, "--no-serve-artifacts"]
    return cmd


def start_ui(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> UiServer:
    """Start `mlflow server` on the store in its own process group (not waiting for it). Its
    output goes to a log file, quoted in the error if it does not come up."""
    check_store(tracking_uri)
    check_port_free(host, port)
    log = Path(tempfile.mkstemp(prefix="sceneclf-ui-", suffix=".log")[1])
    # The UI needs no job runner (GenAI evaluation jobs): one process less to start.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    with open(log, "wb") as out:
        process = subprocess.Popen(server_command(tracking_uri, host, port), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    url_host = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    return UiServer(process, f"http://{url_host}:{port}", log)


def wait_ready(server: UiServer, timeout: float = 120.0) -> None:
    """Until the server answers /health; stops it and raises ConfigError if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = " | ".join(server.log.read_text(errors="replace").strip().splitlines()[-3:])
            raise ConfigError(f"the MLflow UI exited with code {server.process.returncode} "
                              f"({tail[:400]}; log: {server.log})")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    server.stop()
    raise ConfigError(f"the MLflow UI did not answer on {server.url} within {timeout:.0f} s (log: {server.log})")


def run_ui(tracking_uri: str, host: str, port: int, study: str, echo=print) -> int | None:
    """Start the UI, look up the study's experiment while it boots, print its URL once the UI
    answers, and wait. Ctrl-C or SIGTERM stops the server with its workers (None is returned and
    the log removed); if the server exits by itself its exit code is returned and the log kept."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    server = None
    try:
        server = start_ui(tracking_uri, host, port)
        url = study_experiment_url(server.url, tracking_uri, study)
        wait_ready(server)
        echo(f"MLflow UI: {url or server.url}" + ("" if url else f"  (no experiment {study!r} yet)"))
        echo(f"server log: {server.log}; press Ctrl-C to stop")
        return server.process.wait()
    except KeyboardInterrupt:
        if server is not None:
            server.stop()
            server.log.unlink(missing_ok=True)
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
