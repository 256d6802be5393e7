"""collective.plonecelery.results against a real Redis: who subscribes, and when."""

from __future__ import annotations

import os
import socket
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
