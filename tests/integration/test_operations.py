"""Seeing the queue over real HTTP: ``@celery-status`` and ``@@plonecelery-metrics``
against a real WSGI instance, a real worker and the broker of the run."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import sample_tasks
import transaction
from conftest import BROKER
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def admin(harness, plone_http):
    with httpx.Client(
        base_url=f"{plone_http}/plone", auth=("admin", harness.admin_password), timeout=30
    ) as client:
        yield client


def status(admin) -> dict:
    response = admin.get("++api++/@celery-status", headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def metrics(admin) -> dict[tuple, float]:
    response = admin.get("@@plonecelery-metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_status_and_metrics_follow_the_queue(harness, admin):
    queue = harness.environment["CELERY_TASK_DEFAULT_QUEUE"]
    depth_key = ("plonecelery_queue_messages", (("queue", queue),))
    before = status(admin)
    assert before["workers"]["alive"] >= 1 and before["broker"]["reachable"] is True
    assert before["workers"]["nodes"] and before["workers"]["processes"][0]["pool"] == "prefork"
    assert metrics(admin)[("plonecelery_workers_alive", ())] >= 1

    harness.stop_worker()
    try:
        assert status(admin)["workers"]["alive"] == 0  # a clean stop says so at once
        keys = [f"ops-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
        with harness.session():
            results = [sample_tasks.count_run.delay(key) for key in keys]
            transaction.commit()
        waiting = metrics(admin)
        assert waiting[depth_key] >= 3
        assert waiting[("plonecelery_outbox_records", (("state", "pending"),))] >= 3
        assert waiting[("plonecelery_outbox_oldest_pending_seconds", ())] >= 0
        assert waiting[("plonecelery_workers_alive", ())] == 0
        assert waiting[("plonecelery_broker_up", ())] == 1
    finally:
        harness.start_worker()
    assert [r.get(timeout=120) for r in results] == keys
    # Drained; the worker's relay ticks (one small message a second here) come and go.
    deadline = time.monotonic() + 30
    while not metrics(admin).get(depth_key, 99) <= 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = metrics(admin)
    assert after.get(depth_key, 99) <= 1, status(admin)["broker"]
    assert after[("plonecelery_workers_alive", ())] >= 1
    assert after[("plonecelery_outbox_last_relay_run_timestamp_seconds", ())] > time.time() - 60


def test_anonymous_and_members_are_refused(harness, plone_http):
    with httpx.Client(base_url=f"{plone_http}/plone", timeout=30) as anonymous:
        response = anonymous.get("++api++/@celery-status", headers={"Accept": "application/json"})
        assert response.status_code == 401
        assert response.json()["type"] == "Unauthorized"
        metrics_response = anonymous.get("@@plonecelery-metrics")
        assert metrics_response.status_code == 401
        assert "Bearer" in metrics_response.headers["www-authenticate"]
        assert "plonecelery_" not in metrics_response.text


@pytest.mark.skipif(BROKER == "sqlite", reason="the SQLite broker has no TCP proxy")
def test_status_and_panel_answer_quickly_with_the_broker_down(admin, broker_proxy):
    admin.get("@@plonecelery-taskqueue")  # its template compiled, with the broker up
    broker_proxy.stop()
    try:
        started = time.monotonic()
        body = status(admin)
        took = time.monotonic() - started
        started = time.monotonic()
        panel = admin.get("@@plonecelery-taskqueue")
        panel_took = time.monotonic() - started
    finally:
        broker_proxy.start()
    assert body["broker"]["reachable"] is False and body["broker"]["error"]
    assert took < 2.0, f"@celery-status took {took:.2f}s with the broker down"
    assert panel.status_code == 200, panel.text[-2000:]
    assert panel_took < 2.0, f"the Task queue panel took {panel_took:.2f}s with the broker down"
    print(f"broker down: @celery-status {took:.2f} s, Task queue panel {panel_took:.2f} s")


def test_recent_tasks_list_a_worker_run_task_with_its_user_and_times(harness, admin):
    # Redis run: the add-on's Redis backend and its index; the others: the database backend.
    key = f"recent-{uuid.uuid4().hex[:6]}"
    with harness.session(user="admin"):
        result = sample_tasks.count_run.delay(key, 0.2)
        transaction.commit()
    assert result.get(timeout=120) == key
    response = admin.get(
        "++api++/@celery-tasks",
        params={"name": sample_tasks.count_run.name, "b_size": 50},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    [item] = [item for item in response.json()["items"] if item["task_id"] == result.id]
    assert (item["state"], item["user"], item["site"]) == ("SUCCESS", "admin", harness.site_path)
    assert item["queued"] <= item["started"] <= item["date_done"].replace(" ", "T")
    assert 0.2 <= item["duration"] < 60
    print(f"\nrecent tasks on {BROKER}: {result.id} took {item['duration']} s")
