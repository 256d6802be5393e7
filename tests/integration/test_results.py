"""The Redis result backend with real processes: ``.get()`` works though sending no longer
subscribes (tests/unit/test_results.py counts the subscriptions)."""

from __future__ import annotations

import time
import uuid

import pytest
import sample_tasks
import transaction
from conftest import BROKER

from collective.plonecelery.app import app
from collective.plonecelery.results import RedisBackend

pytestmark = pytest.mark.skipif(BROKER != "redis", reason="the Redis result backend")


def test_get_works_for_results_stored_before_it_waits(harness):
    assert isinstance(app.backend, RedisBackend)
    with harness.session():
        results = [sample_tasks.count_run.delay(f"res-{uuid.uuid4().hex[:6]}") for _ in range(20)]
        transaction.commit()
    deadline = time.monotonic() + 120
    while any(r.state != "SUCCESS" for r in results) and time.monotonic() < deadline:
        time.sleep(0.2)  # .state reads the stored result; it subscribes to nothing
    assert all(r.state == "SUCCESS" for r in results)
    # Waiting on a result that is stored already (before the subscription) returns at once.
    started = time.monotonic()
    assert results[0].get(timeout=10) == results[0].result
    assert time.monotonic() - started < 5


def test_get_waits_for_a_result_that_arrives_later(harness):
    with harness.session():
        result = sample_tasks.count_run.delay(f"late-{uuid.uuid4().hex[:6]}", 1.0)
        transaction.commit()
    assert result.get(timeout=60).startswith("late-")
