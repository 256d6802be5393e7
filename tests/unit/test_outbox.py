"""The outbox's bookkeeping on a real (in-memory) ZODB; sending is recorded."""

import time
from types import SimpleNamespace

import pytest
import transaction
import ZODB
from ZODB.MappingStorage import MappingStorage

from collective.plonecelery.outbox import records as outbox
from collective.plonecelery.outbox import relay as outbox_relay


@pytest.fixture
def db():
    database = ZODB.DB(MappingStorage())
    outbox.ensure_outbox(database)
    yield database
    database.close()


class FakeTask:
    name = "tests.fake"

    def __init__(self):
        self.sent = []

    def send_message(self, message, producer=None):
        self.sent.append(message)


class FakeApp:
    def __init__(self, task, states=None):
        self.tasks = {task.name: task}
        self.states = states or {}

    def AsyncResult(self, task_id):
        return SimpleNamespace(state=self.states.get(task_id, "PENDING"))


def queue(db, task_id, *, created_ago=0.0):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    ref = outbox.add(
        conn, task_name=FakeTask.name, task_id=task_id, args=[1], kwargs={}, options={"headers": {}}
    )
    record = outbox.find(conn, ref)
    record.last_sent -= created_ago
    tm.commit()
    conn.close()
    return ref


def with_connection(db, work):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    try:
        result = work(conn)
        tm.commit()
        return result
    finally:
        conn.close()


def test_claim_marks_done_once(db):
    ref = queue(db, "t1")
    assert with_connection(db, lambda conn: outbox.claim(conn, ref)) == "pending"
    assert with_connection(db, lambda conn: outbox.claim(conn, ref)) == "done"
    missing = outbox.RecordRef(shard=ref.shard, created=ref.created, task_id="other")
    assert with_connection(db, lambda conn: outbox.claim(conn, missing)) == "missing"


def test_claim_is_undone_with_the_task_transaction(db):
    ref = queue(db, "t2")
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    assert outbox.claim(conn, ref) == "pending"
    tm.abort()  # the task failed: its claim goes with it
    conn.close()
    assert with_connection(db, lambda conn: outbox.claim(conn, ref)) == "pending"


def test_relay_sends_only_stale_pending_records(db):
    fresh = queue(db, "fresh")
    stale = queue(db, "stale", created_ago=120)
    done = queue(db, "done", created_ago=120)
    started = queue(db, "started", created_ago=120)
    with_connection(db, lambda conn: outbox.claim(conn, done))
    task = FakeTask()
    app = FakeApp(task, states={"started": "STARTED"})
    assert outbox_relay.relay(db=db, app=app, grace=60, retention=3600) == 1
    assert [m.task_id for m in task.sent] == ["stale"]
    # Sent just now: not again on the next run.
    assert outbox_relay.relay(db=db, app=app, grace=60, retention=3600) == 0
    assert fresh and stale and started


def test_relay_respects_another_relays_lease(db):
    queue(db, "stale", created_ago=120)

    def lease(conn):
        box = outbox.get_outbox(conn)
        box.lease_owner, box.lease_until = "someone-else", time.time() + 60

    with_connection(db, lease)
    task = FakeTask()
    assert outbox_relay.relay(db=db, app=FakeApp(task), grace=60, retention=3600) == 0
    assert task.sent == []


def test_watermark_skips_finished_records_and_sweep_removes_old_ones(db):
    refs = [queue(db, f"t{i}", created_ago=120) for i in range(5)]
    for ref in refs[:3]:
        with_connection(db, lambda conn, ref=ref: outbox.claim(conn, ref))
    task = FakeTask()
    assert outbox_relay.relay(db=db, app=FakeApp(task), grace=60, retention=3600) == 2

    def check(conn):
        box = outbox.get_outbox(conn)
        assert box.watermarks[refs[0].shard] == refs[2].key
        assert outbox.counts(conn) == {"pending": 2, "done": 3, "failed": 0}
        return outbox.sweep(box, now=time.time() + 7200, retention=3600)

    assert with_connection(db, check) == 3
    assert with_connection(db, outbox.counts) == {"pending": 2, "done": 0, "failed": 0}


def test_failed_records_are_not_relayed(db):
    ref = queue(db, "bad", created_ago=120)
    with_connection(db, lambda conn: outbox.mark_failed(conn, ref))
    task = FakeTask()
    assert outbox_relay.relay(db=db, app=FakeApp(task), grace=60, retention=3600) == 0


def test_delayed_task_is_not_relayed_before_it_is_due(db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    outbox.add(
        conn,
        task_name=FakeTask.name,
        task_id="later",
        args=[],
        kwargs={},
        options={},
        not_before=time.time() + 600,
    )
    tm.commit()
    conn.close()
    task = FakeTask()
    assert outbox_relay.relay(db=db, app=FakeApp(task), grace=60, retention=3600) == 0


def test_relay_closes_records_whose_result_says_they_ran(db):
    ok = queue(db, "read-only", created_ago=120)
    bad = queue(db, "failed", created_ago=120)
    task = FakeTask()
    app = FakeApp(task, states={"read-only": "SUCCESS", "failed": "FAILURE"})
    assert outbox_relay.relay(db=db, app=app, grace=60, retention=3600) == 0
    assert task.sent == []

    def states(conn):
        return [outbox.find(conn, ref).state for ref in (ok, bad)]

    assert with_connection(db, states) == ["done", "failed"]
