"""Worker presence and the relay's verdict on started tasks, on a real in-memory ZODB."""

import time
from types import SimpleNamespace

import pytest
import transaction

from collective.plonecelery.config import ConfigurationError
from collective.plonecelery.config import addon_settings
from collective.plonecelery.outbox import records as outbox
from collective.plonecelery.outbox import relay as outbox_relay
from collective.plonecelery.worker import presence


class FakeTask:
    name = "tests.fake"

    def __init__(self):
        self.sent = []

    def send_message(self, message, producer=None):
        self.sent.append(message.task_id)


class StartedApp:
    """Every task's result says STARTED, by celery@dead pid 42."""

    def __init__(self, task):
        self.tasks = {task.name: task}

    def AsyncResult(self, task_id):
        return SimpleNamespace(state="STARTED", info={"hostname": "celery@dead", "pid": 42})


def queue_started(db, task_id):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    ref = outbox.add(conn, task_name=FakeTask.name, task_id=task_id, args=[], kwargs={}, options={})
    outbox.find(conn, ref).last_sent -= 600  # long past the grace period
    tm.commit()
    conn.close()


def relay(db, app, timeout):
    return outbox_relay.relay(db=db, app=app, grace=60, retention=3600, started_timeout=timeout)


def read(db, timeout=60.0):
    conn = db.open()
    try:
        return presence.read(conn, now=time.time(), timeout=timeout)
    finally:
        conn.close()


def age_presence(db, key, seconds):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    presence.get_registry(conn).processes[key].last_beat -= seconds
    tm.commit()
    conn.close()


def test_heartbeat_reports_running_tasks_and_its_stop(db):
    beat = presence.Heartbeat(db, nodename="celery@here", pool="prefork", interval=60).start()
    try:
        presence.task_started("t-1", "tests.fake")
        assert read(db)[0].running == {}  # written at the next beat, not per task
        assert beat.beat()
        (seen,) = read(db)
        assert seen.alive and seen.nodename == "celery@here" and seen.pool == "prefork"
        assert list(seen.running) == ["t-1"] and seen.running["t-1"][0] == "tests.fake"
        before = presence.processed_count()
        presence.task_ended("t-1")
        presence.task_ended("t-1")  # ended twice (a signal repeated): counted once
        assert presence.processed_count() == before + 1
    finally:
        beat.stop()
    (seen,) = read(db)
    assert seen.stopped is not None and not seen.alive and seen.running == {}
    assert seen.processed == presence.processed_count()


def test_a_silent_process_is_not_alive(db):
    beat = presence.Heartbeat(db, nodename="celery@here", pool="solo", interval=60)
    beat.beat()
    age_presence(db, beat.key, 30)
    assert read(db, timeout=60)[0].alive
    assert not read(db, timeout=10)[0].alive


def test_started_task_of_a_live_process_is_left_alone_past_the_timeout(db):
    queue_started(db, "long")
    beat = presence.Heartbeat(db, nodename="celery@here", pool="prefork", interval=60)
    presence.task_started("long", FakeTask.name)
    try:
        task = FakeTask()
        for _ in range(3):
            beat.beat()  # the process keeps beating while the task runs
            assert relay(db, StartedApp(task), timeout=0.2) == 0
            time.sleep(0.25)
        assert task.sent == []
    finally:
        presence.task_ended("long")


def test_started_task_of_a_process_that_stopped_beating_is_sent_at_once(db, caplog):
    queue_started(db, "orphan")
    beat = presence.Heartbeat(db, nodename="celery@dead", pool="prefork", interval=1)
    presence.task_started("orphan", FakeTask.name)
    beat.beat()
    presence.task_ended("orphan")
    age_presence(db, beat.key, 100)  # killed 100 s ago
    task = FakeTask()
    assert relay(db, StartedApp(task), timeout=30) == 1
    assert task.sent == ["orphan"]
    assert "stopped beating 100s ago: sending it again (attempt 2)" in caplog.text


def test_started_task_nobody_reports_is_sent_after_the_timeout(db):
    queue_started(db, "unreported")
    task = FakeTask()
    app = StartedApp(task)
    assert relay(db, app, timeout=0.5) == 0  # maybe it started after the last beat
    report = outbox_relay.started_report(db=db, app=app, timeout=0.5)
    assert [(r["task_id"], r["verdict"], r["worker"]) for r in report] == [
        ("unreported", "wait", "celery@dead")
    ]
    time.sleep(0.6)
    assert outbox_relay.started_report(db=db, app=app, timeout=0.5)[0]["verdict"] == "send"
    assert relay(db, app, timeout=0.5) == 1
    assert task.sent == ["unreported"]
    conn = db.open()
    try:
        assert "unreported" not in outbox.get_outbox(conn).unreported
    finally:
        conn.close()


def test_relay_forgets_long_gone_processes(db):
    beat = presence.Heartbeat(db, nodename="celery@old", pool="prefork", interval=1)
    beat.beat()
    age_presence(db, beat.key, 7200)
    relay(db, StartedApp(FakeTask()), timeout=30)
    assert read(db) == []


def test_started_timeout_must_cover_three_heartbeats():
    with pytest.raises(ConfigurationError, match="at least three heartbeats"):
        addon_settings(
            {"PLONECELERY_WORKER_HEARTBEAT": "10", "PLONECELERY_OUTBOX_STARTED_TIMEOUT": "20"}
        )
    settings = addon_settings({})
    assert (settings.worker_heartbeat, settings.outbox_started_timeout) == (10.0, 120.0)
