"""Queuing follows the transaction: sent after commit, never after abort.

The broker is replaced by a recording ``send_message`` (a unit test); the
integration tests do the same against real brokers and workers.
"""

import pytest
import transaction

from collective.plonecelery import dispatch
from collective.plonecelery.app import app
from collective.plonecelery.task import HEADER
from collective.plonecelery.task import ZopeTask
from collective.plonecelery.task import task


@pytest.fixture
def sent(monkeypatch):
    messages = []
    monkeypatch.setattr(ZopeTask, "send_message", lambda self, m, producer=None: messages.append(m))
    monkeypatch.setattr(dispatch, "_broker", dispatch.SimpleNamespace(unavailable_until=0.0))
    # No ZODB here: nothing to write an outbox record to.
    monkeypatch.setattr(ZopeTask, "_queuing_connection", staticmethod(lambda site: None))
    monkeypatch.setattr(
        ZopeTask,
        "_envelope_for_queuing",
        lambda self, site, run_as: {"site": "/plone", "user": run_as},
    )
    saved = {key: app.conf[key] for key in ("task_always_eager", "result_backend")}
    app.conf.update(task_always_eager=False, result_backend="cache+memory://")
    transaction.abort()
    yield messages
    transaction.abort()
    app.conf.update(saved)


@task()
def add(a, b):
    return a + b


def test_nothing_is_sent_before_commit(sent):
    result = add.delay(1, 2)
    assert sent == []
    transaction.commit()
    assert [m.task_id for m in sent] == [result.id]
    assert sent[0].args == [1, 2]
    assert sent[0].options["headers"][HEADER] == {"site": "/plone", "user": None}


def test_nothing_is_sent_after_abort(sent):
    add.delay(1, 2)
    transaction.abort()
    transaction.commit()  # a later, empty transaction sends nothing either
    assert sent == []


def test_failed_commit_sends_nothing(sent):
    class FailingDataManager:
        transaction_manager = transaction.manager

        def abort(self, txn):
            pass

        def tpc_begin(self, txn):
            pass

        def commit(self, txn):
            raise RuntimeError("storage said no")

        tpc_abort = abort

        def sortKey(self):
            return "failing"

    add.delay(1, 2)
    transaction.get().join(FailingDataManager())
    with pytest.raises(RuntimeError):
        transaction.commit()
    transaction.abort()
    assert sent == []


def test_every_call_is_its_own_task_in_order(sent):
    results = [add.delay(i, i) for i in range(5)]
    transaction.commit()
    assert [m.task_id for m in sent] == [r.id for r in results]
    assert len({r.id for r in results}) == 5


def test_dedupe_sends_identical_calls_once(sent):
    first = add.apply_async((1, 2), dedupe=True)
    second = add.apply_async((1, 2), dedupe=True)
    other = add.apply_async((1, 3), dedupe=True)
    plain = add.apply_async((1, 2))
    transaction.commit()
    assert first.id == second.id
    assert [m.task_id for m in sent] == [first.id, other.id, plain.id]


def test_dedupe_distinguishes_users(sent):
    first = add.apply_async((1, 2), dedupe=True, run_as="alice")
    second = add.apply_async((1, 2), dedupe=True, run_as="bob")
    transaction.commit()
    assert first.id != second.id
    assert len(sent) == 2


def test_without_transaction_sends_at_once(sent):
    result = add.apply_async((1, 2), without_transaction=True)
    assert [m.task_id for m in sent] == [result.id]
    transaction.abort()
    assert len(sent) == 1


def test_queuing_cost_does_not_grow_with_the_number_of_tasks(sent):
    pending = dispatch.PendingMessages.of(transaction.get())
    for i in range(1000):
        add.delay(i, i)
    assert len(pending.messages) == 1000
    assert pending._dedupe == {}  # nothing indexed unless dedupe is asked for
    transaction.commit()
    assert len(sent) == 1000


def test_broker_failure_after_commit_is_logged_not_raised(monkeypatch, sent, caplog):
    def refuse(self, message, producer=None):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(ZopeTask, "send_message", refuse)
    add.delay(1, 2)
    transaction.commit()  # the request still succeeds
    assert "Could not send 1 task message(s)" in caplog.text
    assert "1 had no outbox record and are lost" in caplog.text


def test_a_producer_means_send_now_as_celery_beat_does(sent):
    producer = object()
    result = add.apply_async((1, 2), producer=producer, site="/plone")
    assert [m.task_id for m in sent] == [result.id]
