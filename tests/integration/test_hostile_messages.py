"""A message the worker cannot read is refused; the worker lives on.

Celery's own Request dies of a body that is not ``(args, kwargs, embed)`` ("Unrecoverable
error": the whole worker stops). Such messages reach a worker that does not sign when a
signing one sent them (a switch to signing), or when somebody forges them.
"""

from __future__ import annotations

import time
import uuid

import pytest
import sample_tasks
import transaction
from hostile_support import tally
from kombu import Connection
from kombu import Exchange
from kombu import Queue

pytestmark = pytest.mark.timeout(300)

BODIES = [
    ("application/data", "c2lnbmVkIGJ5IHNvbWVib2R5IGVsc2U="),  # what 'auth' sends: a string
    ("application/json", "[1, 2, 3, 4, 5]"),  # five values, not three
    ("application/json", '{"not": "a tuple"}'),
]


def publish(harness, *, task: str, content_type: str, body: str) -> None:
    url = harness.worker_env.get("CELERY_BROKER_URL") or harness.environment["CELERY_BROKER_URL"]
    name = harness.environment["CELERY_TASK_DEFAULT_QUEUE"]
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    task_id = uuid.uuid4().hex
    with Connection(url, connect_timeout=10) as connection:
        connection.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key=name,
            declare=[queue],
            headers={"id": task_id, "task": task, "lang": "py"},
            content_type=content_type,
            content_encoding="utf-8",
            serializer=None,
        )


@pytest.mark.parametrize(
    "task", [sample_tasks.count_run.name, "collective.plonecelery.outbox.relay_outbox"]
)
def test_unreadable_message_is_refused_and_the_worker_goes_on(harness, task):
    pid = harness.worker.pid
    refusal = "whose body is not Celery protocol 2"
    refused_before = harness.worker_log.read_text(errors="replace").count(refusal)
    runs_before = runs(harness)
    for content_type, body in BODIES:
        publish(harness, task=task, content_type=content_type, body=body)
    key = f"after-{uuid.uuid4().hex[:6]}"
    with harness.session():
        result = sample_tasks.count_run.delay(key)
        transaction.commit()
    assert result.get(timeout=120) == key
    time.sleep(1)
    # A write of a refused message: a task run recorded that is not the control's.
    written = {k: v for k, v in runs(harness).items() if k != key and runs_before.get(k) != v}
    tally("messages: unreadable bodies (forged)", inputs=len(BODIES), writes=len(written))
    assert not written, written
    assert harness.worker.poll() is None and harness.worker.pid == pid
    log = harness.worker_log.read_text(errors="replace")
    assert "Unrecoverable error" not in log
    assert log.count(refusal) - refused_before >= len(BODIES)


def runs(harness) -> dict:
    """What sample_tasks.count_run recorded: key -> runs."""
    with harness.session(user="admin") as portal:
        return dict(getattr(portal, "_plonecelery_test_runs", {}) or {})
