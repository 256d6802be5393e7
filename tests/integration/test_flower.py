"""Flower against the broker of the run: its API, behind basic auth, lists the running
worker and a finished Zope task.

Flower reads Celery's broadcast (remote control) and the workers' events, which Redis and
RabbitMQ carry; kombu's SQLAlchemy transport (SQLite, PostgreSQL, MariaDB brokers) has no
broadcast, so the test runs in the Redis and RabbitMQ runs only. The worker was started
without ``-E``: Flower turns its events on by itself (``enable_events``).
"""

from __future__ import annotations

import os
import secrets
import time

import httpx
import pytest
import sample_tasks
import transaction
from conftest import BROKER

from collective.plonecelery.devtools import instance
from collective.plonecelery.devtools.instance.processes import spawn

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        BROKER not in ("redis", "amqp"), reason="Flower needs broadcast: Redis and RabbitMQ"
    ),
]

TIMEOUT = 90


@pytest.fixture(scope="module")
def flower(harness):
    """``celery -A collective.plonecelery.app flower`` as docs/deployment.rst shows it
    (no Zope: no ZOPE_CONF), with basic auth; its base URL and credentials."""
    port = instance.free_port()
    auth = ("ops", secrets.token_urlsafe(12))
    env = {**os.environ, **harness.environment, **harness.worker_env}
    env.pop("ZOPE_CONF", None)
    log_file = harness.log_dir / "flower.log"
    process = spawn(
        [instance.bin_path("celery"), "-A", "collective.plonecelery.app", "flower",
         "--address=127.0.0.1", f"--port={port}", f"--basic-auth={auth[0]}:{auth[1]}"],
        log_file=log_file,
        env=env,
    )  # fmt: skip
    try:
        instance.wait_for_port("127.0.0.1", port, timeout=60, process=process, log_file=log_file)
        yield f"http://127.0.0.1:{port}", auth
    finally:
        instance.stop_process(process)


def poll(what: str, fetch):
    deadline = time.monotonic() + TIMEOUT
    while True:
        value = fetch()
        if value:
            return value
        assert time.monotonic() < deadline, f"Flower did not show {what} within {TIMEOUT} s"
        time.sleep(1)


def test_flower_lists_the_worker_and_a_finished_zope_task(harness, flower):
    url, auth = flower
    # "INFO:celery.apps.worker:celery@host ready." -> "celery@host"
    node = harness.worker_log.read_text(errors="replace").split(" ready.")[0].rsplit(":", 1)[-1]
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        assert anonymous.get("/api/workers").status_code == 401

    with httpx.Client(base_url=url, auth=auth, timeout=30) as client:

        def worker():
            return client.get("/api/workers", params={"refresh": "true"}).json().get(node)

        def finished(task_id):
            response = client.get(f"/api/task/info/{task_id}")
            if response.status_code == 200 and response.json().get("state") == "SUCCESS":
                return response.json()
            return None

        def probe():
            with harness.session():
                sent = sample_tasks.noop.delay()
                transaction.commit()
            sent.get(timeout=TIMEOUT)
            time.sleep(1)
            return client.get(f"/api/task/info/{sent.id}").status_code == 200

        listed = poll(f"the worker {node}", worker)
        assert listed["stats"]["pool"]["max-concurrency"] >= 1, listed
        # Flower turns the worker's events on soon after it starts; a task run before
        # that sends none. Probe until one shows.
        poll("a probe task", probe)
        with harness.session() as portal:
            result = sample_tasks.title_of.delay(portal)
            title = portal.Title()
            transaction.commit()
        assert result.get(timeout=TIMEOUT) == title
        info = poll(f"task {result.id} succeeded", lambda: finished(result.id))
    assert info["name"] == "sample_tasks.title_of"
    assert info["worker"] == node
    print(f"flower: {node} listed; task {result.id} {info['state']} in {info.get('runtime')} s")
