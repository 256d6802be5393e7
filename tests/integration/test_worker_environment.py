"""A worker started with the variables Celery's own CLI puts in the environment
(CELERY_LOG_FILE, CELERY_LOG_LEVEL, ...) logs no "Ignoring CELERY_..." warning."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import sample_tasks
import transaction

from collective.plonecelery.devtools import instance

pytestmark = pytest.mark.timeout(300)


def test_worker_logs_no_spurious_ignoring_warnings(harness, tmp_path):
    queue = f"env-{uuid.uuid4().hex[:6]}"
    log_file = tmp_path / "worker.log"
    env = {
        **os.environ,
        **harness.environment,
        **harness.worker_env,
        # What a Celery process leaves for the processes it starts (app.log.setup,
        # redirect_stdouts, `celery -C`): a worker started from one inherits them.
        "CELERY_LOG_FILE": "",
        "CELERY_LOG_LEVEL": "20",
        "CELERY_LOG_REDIRECT": "1",
        "CELERY_LOG_REDIRECT_LEVEL": "WARNING",
        "CELERY_SKIP_CHECKS": "true",
    }
    worker = instance.start_worker(
        zope_conf=harness.zope_conf,
        env=env,
        args=("-l", "info", "-c", "1", "-Q", queue, "-n", f"{queue}@%h"),
        log_file=log_file,
    )
    try:
        with harness.session() as portal:
            result = sample_tasks.whoami.apply_async(queue=queue)
            assert portal is not None
            transaction.commit()
        assert result.get(timeout=60)["user"] == "admin"
        deadline = time.monotonic() + 30
        while "ready." not in log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        instance.stop_process(worker)
    log = log_file.read_text()
    assert "ready." in log
    assert "Ignoring CELERY_" not in log, [
        line for line in log.splitlines() if "Ignoring CELERY_" in line
    ]
