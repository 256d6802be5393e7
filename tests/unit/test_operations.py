"""Status and metrics: queue lengths from a real (in-memory) kombu broker, outbox and
presence from a real in-memory ZODB, the metrics text parsed back."""

import os
import time
import unittest
from unittest import mock

import transaction
from celery import Celery
from plone.app.testing import TEST_USER_ID
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import login
from plone.app.testing import logout
from plone.app.testing import setRoles
from prometheus_client.parser import text_string_to_metric_families

from collective.plonecelery.operations import metrics
from collective.plonecelery.operations import status
from collective.plonecelery.outbox import records as outbox
from collective.plonecelery.restapi.operations import Metrics
from collective.plonecelery.testing import PLONECELERY_EAGER_FUNCTIONAL_TESTING
from collective.plonecelery.worker import presence


def samples(text: bytes) -> dict:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_queue_lengths_count_waiting_messages():
    app = Celery(broker="memory://", set_as_current=False)
    app.conf.task_routes = {"slow.*": {"queue": "slow"}}
    for _ in range(3):
        app.send_task("some.task")
    app.send_task("slow.task", queue="slow")
    found = status.queue_lengths(app)
    assert found["reachable"] is True
    assert {q["name"]: q["messages"] for q in found["queues"]} == {"celery": 3, "slow": 1}


def test_an_unreachable_broker_is_said_quickly():
    app = Celery(broker="redis://127.0.0.1:1/0", set_as_current=False)
    started = time.monotonic()
    found = status.queue_lengths(app)
    assert time.monotonic() - started < 2.0
    assert found["reachable"] is False and "Connection refused" in found["error"]


def test_collect_and_render(db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    outbox.add(conn, task_name="t", task_id="a", args=[], kwargs={}, options={})
    tm.commit()
    conn.close()
    beat = presence.Heartbeat(db, nodename="celery@here", pool="prefork", interval=60)
    presence.task_started("running-1", "t")
    try:
        beat.beat()
    finally:
        presence.task_ended("running-1")
    app = Celery(broker="memory://", set_as_current=False)
    app.conf.task_default_queue = "collect-test"  # kombu's memory broker is per process
    snapshot = status.collect(db=db, app=app)
    assert snapshot["workers"]["alive"] == 1 and snapshot["workers"]["running_tasks"] == 1
    assert snapshot["outbox"]["pending"] == 1 and snapshot["outbox"]["oldest_pending_age"] >= 0
    assert snapshot["outbox"]["last_relay_run"] is None
    values = samples(metrics.render(snapshot))
    assert values[("plonecelery_workers_alive", ())] == 1
    assert values[("plonecelery_tasks_running", ())] == 1
    assert values[("plonecelery_outbox_records", (("state", "pending"),))] == 1
    assert values[("plonecelery_queue_messages", (("queue", "collect-test"),))] == 0
    assert values[("plonecelery_broker_up", ())] == 1
    assert values[("plonecelery_dead_letters", ())] == 0


class TestMetricsAccess(unittest.TestCase):
    layer = PLONECELERY_EAGER_FUNCTIONAL_TESTING

    def test_metrics_view_wants_a_manager_or_the_token(self):
        portal, request = self.layer["portal"], self.layer["request"]
        view = Metrics(portal, request)
        logout()
        self.assertFalse(view.allowed())
        with mock.patch.dict(os.environ, {"PLONECELERY_METRICS_TOKEN": "s3cret-token"}):
            request.environ["HTTP_AUTHORIZATION"] = "Bearer wrong"
            self.assertFalse(view.allowed())
            request.environ["HTTP_AUTHORIZATION"] = "Bearer s3cret-token"
            self.assertTrue(view.allowed())
            del request.environ["HTTP_AUTHORIZATION"]
        login(portal, TEST_USER_NAME)
        self.assertFalse(view.allowed())  # a Member
        setRoles(portal, TEST_USER_ID, ["Manager"])
        self.assertTrue(view.allowed())
