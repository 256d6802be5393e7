"""Named queues: tasks routed by ``CELERY_TASK_ROUTES`` to a queue of their own, consumed
by a worker of its own, do not hold up the other tasks.

Runs once, in the RabbitMQ run (routing is the broker's business; the SQLite and Redis
runs exercise the same Celery router). The harness's worker consumes the default queue
only; this test starts a second worker for the ``imports`` queue (conftest.py routes
``sample_tasks.routed_*`` there), as a worker host dedicated to imports would.
"""

from __future__ import annotations

import os
import time

import pytest
import sample_tasks
import transaction
from conftest import BROKER
from conftest import delete_queue

from collective.plonecelery.devtools import instance

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(BROKER != "amqp", reason="runs once, in the RabbitMQ run"),
]

SLOW = 3  # slow imports, one at a time on the imports worker (-c 1)...
SLOW_SECONDS = 4.0
FAST = 5  # ...while these run on the default queue's worker


@pytest.fixture
def imports_worker(harness):
    queue = harness.environment["CELERY_TASK_DEFAULT_QUEUE"] + "-imports"
    log_file = harness.log_dir / "worker-imports.log"
    worker = instance.start_worker(
        zope_conf=harness.zope_conf,
        env={**os.environ, **harness.environment, **harness.worker_env},
        args=("-l", "info", "-c", "1", "-P", "prefork", "-Q", queue, "-n", "imports@%h"),
        log_file=log_file,
    )
    try:
        deadline = time.monotonic() + 120
        while "ready." not in log_file.read_text(errors="replace"):
            assert worker.poll() is None, instance.tail(log_file, lines=40)
            assert time.monotonic() < deadline, instance.tail(log_file, lines=40)
            time.sleep(0.2)
        yield log_file
    finally:
        instance.stop_process(worker)
        delete_queue(
            harness.worker_env.get("CELERY_BROKER_URL") or harness.environment["CELERY_BROKER_URL"],
            queue,
        )


def test_a_slow_import_queue_does_not_hold_up_other_tasks(harness, imports_worker):
    run = time.time_ns()
    with harness.session():
        slow = [
            sample_tasks.routed_slow_import.delay(f"slow-{run}-{n}", SLOW_SECONDS)
            for n in range(SLOW)
        ]
        transaction.commit()
    with harness.session():
        fast = [sample_tasks.count_run.delay(f"fast-{run}-{n}") for n in range(FAST)]
        transaction.commit()
    queued = time.monotonic()
    for result in fast:
        result.get(timeout=60)
    fast_seconds = time.monotonic() - queued
    slow_done_meanwhile = sum(result.ready() for result in slow)
    for result in slow:
        result.get(timeout=120)
    print(f"queues: {FAST} fast tasks done in {fast_seconds:.1f} s, while {SLOW} slow "
          f"imports of {SLOW_SECONDS} s each ran ({slow_done_meanwhile} done by then)")  # fmt: skip

    # The fast tasks did not wait behind the slow ones (together 12 s on one process).
    assert slow_done_meanwhile < SLOW
    assert fast_seconds < SLOW * SLOW_SECONDS
    # Each kind ran on its own worker.
    imports_log = imports_worker.read_text(errors="replace")
    main_log = harness.worker_log.read_text(errors="replace")
    for result in slow:
        assert f"routed_slow_import[{result.id}] succeeded" in imports_log
        assert f"[{result.id}]" not in main_log
    for result in fast:
        assert f"[{result.id}]" not in imports_log
    with harness.session() as portal:
        runs = portal._plonecelery_test_runs
        keys = [f"slow-{run}-{n}" for n in range(SLOW)] + [f"fast-{run}-{n}" for n in range(FAST)]
        assert {key: runs.get(key) for key in keys} == dict.fromkeys(keys, 1)
