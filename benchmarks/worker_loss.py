"""The issue-14 drill with the add-on's default timings: how long a task whose whole
worker was SIGKILLed takes to have its effect, on the default SQLite broker.

    .venv/bin/python benchmarks/worker_loss.py

Starts ZEO, a Plone site and a prefork worker (the integration harness), queues a task
that runs 4 s, kills the worker's main and pool processes mid-task, starts a new worker
and prints one JSON line: seconds from the kill to the effect, and the effect count.
Takes about 4 minutes (the default PLONECELERY_OUTBOX_GRACE, _STARTED_TIMEOUT and
_RELAY_INTERVAL are 60, 120 and 15 s).
"""

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests" / "integration"


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="worker-loss-"))
    env = {
        "CELERY_BROKER_URL": f"sqla+sqlite:///{base}/broker.sqlite",
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{base}/results.sqlite",
        "CELERY_IMPORTS": "sample_tasks",
        "PYTHONPATH": str(TESTS),
    }
    os.environ.update(env)
    sys.path.insert(0, str(TESTS))
    import sample_tasks
    import transaction
    from test_delivery import children_of
    from test_delivery import run_counts

    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(base_dir=base, environment=env, worker_env={})
    harness.start()
    try:
        with harness.session():
            result = sample_tasks.slow_count_run.delay("loss-0", 4)
            transaction.commit()
        harness.wait_for_log("slow task started loss-0", timeout=120)
        for pid in [harness.worker.pid, *children_of(harness.worker.pid)]:
            os.kill(pid, signal.SIGKILL)
        harness.worker.wait(timeout=30)
        killed = time.monotonic()
        harness.start_worker()
        ready = time.monotonic() - killed
        assert result.get(timeout=600) == "loss-0"
        took = time.monotonic() - killed
        counts = run_counts(harness, ["loss-0"])
    finally:
        harness.stop()
    print(
        json.dumps(
            {
                "broker": "sqlite",
                "timings": "defaults",
                "kill_to_effect_s": round(took, 1),
                "new_worker_ready_s": round(ready, 1),
                "effects": counts["loss-0"],
            }
        )
    )


if __name__ == "__main__":
    main()
