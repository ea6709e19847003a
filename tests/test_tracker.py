"""The MLflow seam against a real tracking server on loopback."""

from __future__ import annotations

import threading

from mlflow.tracking import MlflowClient

from sceneclf.tracking.tracker import MlflowTracker

RUNS = 20  # enough lockstep closes that a close without retries meets the race


def test_two_workers_closing_the_same_dead_runs_at_once_both_go_on(tracking_server):
    """Workers that recover the same dead trials at the same moment close their runs together;
    the store takes each tag once, and neither worker fails on the other's insert."""
    owner = MlflowTracker(tracking_server, "races")
    parent = owner.parent_run("races", {})
    runs = [owner.start_trial(parent, "races", n, {}, {}) for n in range(RUNS)]
    start, errors, closed = threading.Barrier(2), [], [[], []]

    def recover(k: int) -> None:
        tracker = MlflowTracker(tracking_server, "races")
        for run_id in runs:
            start.wait()  # both at the same run at the same moment
            try:
                closed[k].append(tracker.close_if_running(run_id, "FAIL", "worker died"))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                start.abort()
                return

    threads = [threading.Thread(target=recover, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    client = MlflowClient(tracking_server)
    for run_id in runs:
        run = client.get_run(run_id)
        assert (run.info.status, run.data.tags["state"], run.data.tags["reason"]) == ("FAILED", "FAIL",
                                                                                     "worker died")
    assert sum(closed[0]) + sum(closed[1]) >= RUNS  # each run closed by one of them at least
