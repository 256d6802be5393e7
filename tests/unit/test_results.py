"""collective.plonecelery.results against a real Redis: who subscribes, and when."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import pytest
from celery import Celery
from celery.app.task import Context
from celery.backends.redis import RedisBackend as CeleryRedisBackend
from redis.client import PubSub

from collective.plonecelery import results
from collective.plonecelery.operations import recent_tasks
from collective.plonecelery.results import OWNER_SUFFIX
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


def indexed_backend(monkeypatch, **conf):
    """The add-on's backend with extended results and an index of the test's own."""
    ours = backend(RedisBackend)
    ours.app.conf.result_extended = True
    ours.app.conf.update(conf)
    ours.index_key = f"test-recent-{uuid.uuid4().hex}"
    monkeypatch.setattr(ours.app, "_backend_cache", ours, raising=False)
    monkeypatch.setattr(type(ours.app), "backend", property(lambda app: ours))
    return ours


def stored(ours, task_id, result, state, name="sample.task"):
    ours.store_result(task_id, result, state, request=Context(task=name, id=task_id))


def test_the_recent_tasks_are_paged_newest_first(monkeypatch):
    ours = indexed_backend(monkeypatch)
    ids = [f"t{n:02}-{uuid.uuid4().hex[:6]}" for n in range(7)]
    try:
        for n, task_id in enumerate(ids):
            outcome = (RuntimeError(f"no {n}"), "FAILURE") if n % 3 == 0 else (n, "SUCCESS")
            stored(ours, task_id, *outcome, name="a.odd" if n % 2 else "a.even")
        stored(ours, f"{ids[0]}{OWNER_SUFFIX}", {"user": "jane"}, "SUCCESS")  # not a task
        items, total = recent_tasks.page(ours.app, start=0, size=3)
        assert total == 7
        assert [item["task_id"] for item in items] == ids[::-1][:3]
        items, _ = recent_tasks.page(ours.app, start=6, size=3)
        assert [item["task_id"] for item in items] == [ids[0]]
        failed, total = recent_tasks.page(ours.app, start=0, size=10, state="failure")
        assert total == 3 and [item["task_id"] for item in failed] == [ids[6], ids[3], ids[0]]
        odd, total = recent_tasks.page(ours.app, start=1, size=1, name="a.odd")
        assert total == 3 and [item["task_id"] for item in odd] == [ids[3]]
        # A task that stores a later state moves to the top.
        stored(ours, ids[3], None, "RETRY")
        assert recent_tasks.page(ours.app, start=0, size=1)[0][0]["task_id"] == ids[3]
    finally:
        ours.client.delete(ours.index_key)
        for task_id in ids:
            ours.forget(task_id)


def test_the_index_forgets_expired_results_and_stays_bounded(monkeypatch):
    ours = indexed_backend(monkeypatch)
    monkeypatch.setattr(results, "MAX_INDEXED", 4)
    try:
        for n in range(6):
            stored(ours, f"bounded-{n}", n, "SUCCESS")
        assert ours.recent(0, -1) == [f"bounded-{n}" for n in (5, 4, 3, 2)]
        # An entry older than the results' expiry is trimmed as the next one arrives.
        ours.client.zadd(ours.index_key, {"ancient": time.time() - 10 * ours.expires})
        stored(ours, "bounded-6", 6, "SUCCESS")
        assert "ancient" not in ours.recent(0, -1) and ours.indexed() == 4
    finally:
        ours.client.delete(ours.index_key)
        for n in range(7):
            ours.forget(f"bounded-{n}")


def test_10000_results_in_redis_are_paged_not_loaded(monkeypatch):
    ours = indexed_backend(monkeypatch)
    pipe = ours.client.pipeline(transaction=False)
    now = time.time()
    for n in range(10_000):
        task_id = f"many-{n}"
        failed = n % 100 == 0
        error = {"exc_type": "RuntimeError", "exc_message": ["no"], "exc_module": "builtins"}
        meta = {
            "status": "FAILURE" if failed else "SUCCESS",
            "result": error if failed else n,
            "task_id": task_id,
            "name": "many.task",
            "date_done": None,
        }
        pipe.set(ours.get_key_for_task(task_id), json.dumps(meta), ex=600)
        pipe.zadd(ours.index_key, {task_id: now + n})
    pipe.execute()
    fetched = []
    metas = RedisBackend.metas
    monkeypatch.setattr(
        RedisBackend, "metas", lambda self, ids: fetched.append(len(ids)) or metas(self, ids)
    )
    try:
        started = time.perf_counter()
        items, total = recent_tasks.page(ours.app, start=0, size=25)
        first = time.perf_counter() - started
        assert total == 10_000 and items[0]["task_id"] == "many-9999" and fetched == [25]
        items, total = recent_tasks.page(ours.app, start=9_975, size=25)
        assert items[-1]["task_id"] == "many-0" and fetched[-1] == 25
        fetched.clear()
        started = time.perf_counter()
        failed, total = recent_tasks.page(ours.app, start=0, size=25, state="FAILURE")
        filtered = time.perf_counter() - started
        assert total == 100 and failed[0]["task_id"] == "many-9900"
        assert max(fetched) <= recent_tasks.SCAN_CHUNK  # read in chunks, never whole
        print(
            f"\nredis recent tasks, 10,000 results: first page {first:.3f} s, "
            f"failures filter {filtered:.3f} s"
        )
        assert first < 2 and filtered < 2
    finally:
        ours.client.delete(ours.index_key)
        for start in range(0, 10_000, 1000):
            ours.client.delete(
                *[ours.get_key_for_task(f"many-{n}") for n in range(start, start + 1000)]
            )
