"""collective.plonecelery.results against a real Redis: who subscribes, and when."""

from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest
from celery import Celery
from celery.backends.redis import RedisBackend as CeleryRedisBackend
from redis.client import PubSub

from collective.plonecelery.results import RedisBackend

URL = "redis://127.0.0.1:6379/11"


@pytest.fixture(scope="module", autouse=True)
def redis_running():
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
        pytest.skip("Redis is not running on 127.0.0.1:6379")


@pytest.fixture
def subscribed(monkeypatch):
    """Channels subscribed through redis-py (counts the SUBSCRIBE commands sent)."""
    channels = []
    original = PubSub.subscribe

    def subscribe(self, *args, **kwargs):
        channels.extend(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "subscribe", subscribe)
    return channels


def backend(cls):
    app = Celery("results-test", set_as_current=False)
    app.conf.result_backend = URL
    return cls(app=app, url=URL)


def test_celerys_backend_subscribes_for_every_task_sent(subscribed):
    # What this module changes: the stock backend subscribes at send time.
    stock = backend(CeleryRedisBackend)
    stock.on_task_call(None, uuid.uuid4().hex)
    assert len(subscribed) == 1


def test_sending_subscribes_to_nothing(subscribed):
    ours = backend(RedisBackend)
    for _ in range(20):
        ours.on_task_call(None, uuid.uuid4().hex)
    assert subscribed == []


def test_get_subscribes_and_sees_a_result_stored_before(subscribed):
    ours = backend(RedisBackend)
    task_id = uuid.uuid4().hex
    ours.on_task_call(None, task_id)
    ours.store_result(task_id, 42, "SUCCESS")  # the task finished before anyone waited
    result = ours.app.AsyncResult(task_id, backend=ours)
    assert result.get(timeout=5) == 42
    assert len(subscribed) == 1
    ours.forget(task_id)


def test_a_state_is_stored_in_one_round_trip(monkeypatch):
    ours = backend(RedisBackend)
    task_id = uuid.uuid4().hex

    def celerys_path(*args):
        raise AssertionError("Celery's GET, then SET + PUBLISH: two round trips")

    monkeypatch.setattr(ours, "get", celerys_path)
    monkeypatch.setattr(ours, "_set_with_state", celerys_path)
    ours.store_result(task_id, {"n": 1}, "SUCCESS")
    monkeypatch.undo()
    assert ours.get_task_meta(task_id)["result"] == {"n": 1}
    key = ours.get_key_for_task(task_id)
    assert 0 < ours.client.ttl(key) <= ours.expires
    ours.forget(task_id)


def test_a_waiting_get_sees_the_published_state():
    ours = backend(RedisBackend)
    task_id = uuid.uuid4().hex
    result = ours.app.AsyncResult(task_id, backend=ours)
    # Stored while .get() waits: it sees the state only through the PUBLISH.
    storer = threading.Timer(0.5, ours.store_result, (task_id, "late", "SUCCESS"))
    storer.start()
    try:
        assert result.get(timeout=5) == "late"
    finally:
        storer.join()
    ours.forget(task_id)


def test_the_stored_state_is_what_celery_stores():
    ours, stock = backend(RedisBackend), backend(CeleryRedisBackend)
    metas = []
    for store in (ours, stock):
        task_id = uuid.uuid4().hex
        store.store_result(task_id, [1, "two"], "STARTED")
        metas.append(stock.get_task_meta(task_id))
        stock.forget(task_id)
    for meta in metas:
        meta.pop("task_id")
        meta.pop("date_done")
    assert metas[0] == metas[1]


def test_a_stored_success_is_never_overwritten():
    # A redelivered task (a lost worker) must not replace the result of its first run.
    ours = backend(RedisBackend)
    task_id = uuid.uuid4().hex
    ours.store_result(task_id, "first", "SUCCESS")
    ours.store_result(task_id, None, "STARTED")
    ours.store_result(task_id, ValueError("again"), "FAILURE")
    meta = ours.get_task_meta(task_id)
    assert (meta["status"], meta["result"]) == ("SUCCESS", "first")
    ours.forget(task_id)


def test_a_started_state_is_replaced_by_the_outcome():
    ours = backend(RedisBackend)
    task_id = uuid.uuid4().hex
    ours.store_result(task_id, None, "STARTED")
    ours.store_result(task_id, ValueError("no"), "FAILURE")
    meta = ours.get_task_meta(task_id)
    assert meta["status"] == "FAILURE"
    assert isinstance(meta["result"], ValueError)
    ours.forget(task_id)
