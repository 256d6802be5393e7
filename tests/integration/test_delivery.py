"""Delivery guarantees with real processes: nothing lost, nothing doubled.

Runs on Redis and RabbitMQ (PLONECELERY_TEST_BROKER=redis|amqp): the Plone
side reaches the broker through a proxy the tests stop, the worker directly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import sample_tasks
import transaction
from conftest import BROKER
from conftest import plonecelery_cli
from ZODB.POSException import ConflictError

from collective.plonecelery import deadletters
from collective.plonecelery.devtools import instance
from collective.plonecelery.dispatch import Message
from collective.plonecelery.dispatch import PendingMessages
from collective.plonecelery.outbox import records as outbox
from collective.plonecelery.outbox import relay as outbox_relay

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(BROKER == "sqlite", reason="delivery tests run on redis and amqp"),
]

TIMEOUT = 120


def keys(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(count)]


def run_counts(harness, wanted: list[str]) -> dict[str, int]:
    with harness.session() as portal:
        runs = getattr(portal, "_plonecelery_test_runs", {})
        return {key: runs.get(key, 0) for key in wanted}


def wait_all(results, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    return [result.get(timeout=max(1, deadline - time.monotonic())) for result in results]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_broker_down_at_commit_loses_nothing(harness, broker_proxy):
    wanted = keys("down", 100)
    broker_proxy.stop()
    try:
        results = []
        for key in wanted:
            with harness.session():
                results.append(sample_tasks.count_run.delay(key))
                transaction.commit()  # succeeds although the broker is unreachable
    finally:
        broker_proxy.start()
    assert wait_all(results) == wanted
    assert set(run_counts(harness, wanted).values()) == {1}


def test_worker_killed_mid_task_runs_it_to_the_end_once(harness):
    (key,) = keys("killed", 1)
    with harness.session():
        result = sample_tasks.slow_count_run.delay(key, 4)
        transaction.commit()
    harness.wait_for_log(f"slow task started {key}", timeout=60)
    children = children_of(harness.worker.pid)
    assert children, "the prefork worker has a pool process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=TIMEOUT) == key
    assert run_counts(harness, [key]) == {key: 1}
    assert harness.worker.poll() is None


def test_same_message_delivered_twice_has_its_effect_once(harness):
    (key,) = keys("twice", 1)
    with harness.session() as portal:
        result = sample_tasks.count_run.delay(key)
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == key
    with harness.session() as portal:
        records = [
            record
            for _, record in outbox.iter_records(outbox.get_outbox(portal._p_jar))
            if record.task_id == result.id
        ]
        assert [record.state for record in records] == ["done"]
        record = records[0]
        # Publish the very same message again, by hand.
        sample_tasks.count_run.send_message(
            Message(
                task=sample_tasks.count_run,
                task_id=record.task_id,
                args=list(record.args),
                kwargs=dict(record.kwargs),
                options=outbox_relay._plain(record.options),
            )
        )
    with harness.session():
        marker = sample_tasks.noop.delay()
        transaction.commit()
    assert marker.get(timeout=TIMEOUT) == "ok"
    harness.wait_for_log(f"Skipping {sample_tasks.count_run.name}[{result.id}]", timeout=30)
    assert run_counts(harness, [key]) == {key: 1}


def test_message_for_a_transaction_that_never_committed_is_discarded(harness):
    (key,) = keys("ghost", 1)
    with harness.session():
        result = sample_tasks.count_run.delay(key)
        message = PendingMessages.of(transaction.get()).messages[-1]
        transaction.abort()
    # Publish what the aborted transaction would have sent.
    sample_tasks.count_run.send_message(message)
    with harness.session():
        marker = sample_tasks.noop.delay()
        transaction.commit()
    assert marker.get(timeout=TIMEOUT) == "ok"
    harness.wait_for_log(f"Discarding {sample_tasks.count_run.name}[{result.id}]", timeout=30)
    assert run_counts(harness, [key]) == {key: 0}


def test_zeo_restart_while_tasks_run(harness):
    wanted = keys("zeo", 20)
    worker_pid = harness.worker.pid
    results = []
    with harness.session():
        for key in wanted:
            results.append(sample_tasks.count_run.delay(key, 0.2))
        transaction.commit()
    time.sleep(1)
    harness.zeo.restart()
    assert wait_all(results) == wanted
    assert set(run_counts(harness, wanted).values()) == {1}
    assert harness.worker.pid == worker_pid and harness.worker.poll() is None


def test_failing_task_ends_as_one_dead_letter_and_retry_reruns_it(harness):
    (key,) = keys("dead", 1)
    with harness.session():
        result = sample_tasks.fail_unless_flag.delay(key)
        transaction.commit()
    with pytest.raises(RuntimeError, match="no flag set"):
        result.get(timeout=TIMEOUT)

    def letters_for(task_id):
        with harness.session() as portal:
            return [
                letter.as_dict()
                for letter in deadletters.list_dead_letters(portal._p_jar)
                if letter.task_id == task_id
            ]

    # Celery stores the failure first, then calls on_failure (the dead letter).
    deadline = time.monotonic() + 30
    while not letters_for(result.id) and time.monotonic() < deadline:
        time.sleep(0.2)
    letters = letters_for(result.id)
    assert len(letters) == 1
    letter = SimpleNamespace(**letters[0])
    assert letter.task_name == sample_tasks.fail_unless_flag.name
    assert letter.args == [key]
    assert letter.site == harness.site_path
    assert "RuntimeError" in letter.error
    assert "Traceback" in letter.traceback
    assert letter.attempts == 1
    assert result.id in plonecelery_cli(harness, "deadletters", "list")
    assert key in plonecelery_cli(harness, "deadletters", "show", result.id)
    with harness.session() as portal:
        portal._plonecelery_test_flag = True
        transaction.commit()
    output = plonecelery_cli(harness, "deadletters", "retry", result.id)
    new_id = output.strip().rsplit(" ", 1)[-1]
    assert sample_tasks.fail_unless_flag.AsyncResult(new_id).get(timeout=TIMEOUT) == key
    assert run_counts(harness, [key]) == {key: 1}
    with harness.session() as portal:
        with pytest.raises(KeyError):
            deadletters.get(portal._p_jar, result.id)
        portal._plonecelery_test_flag = False
        transaction.commit()


def test_concurrent_queuing_from_threads_never_conflicts(harness):
    wanted = keys("threads", 200)
    results: list = []
    errors: list = []

    def queue_some(chunk):
        try:
            for key in chunk:
                with harness.session():
                    results.append(sample_tasks.count_run.delay(key))
                    transaction.commit()
        except ConflictError as exc:  # pragma: no cover - the failure we test for
            errors.append(exc)

    threads = [threading.Thread(target=queue_some, args=(wanted[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(wait_all(results, timeout=300)) == sorted(wanted)
    assert set(run_counts(harness, wanted).values()) == {1}


@pytest.mark.skipif(BROKER != "redis", reason="the visibility timeout is Redis's")
def test_long_task_is_not_redelivered_while_it_runs(harness, tmp_path):
    """Redis hands unacknowledged messages to other consumers after the
    visibility timeout; ours (3600 s by default) outlasts a long task."""
    (key,) = keys("long", 1)
    with harness.session():
        result = sample_tasks.slow_count_run.delay(key, 8)
        transaction.commit()
    harness.wait_for_log(f"slow task started {key}", timeout=60)
    # A second worker starting now restores every message whose visibility
    # timeout has passed: ours must not be among them.
    second_log = tmp_path / "second-worker.log"
    env = {**os.environ, **harness.environment, **harness.worker_env}
    second = instance.start_worker(
        zope_conf=harness.zope_conf,
        env=env,
        args=("-l", "info", "-c", "1", "-n", "second@%h"),
        log_file=second_log,
    )
    try:
        assert result.get(timeout=TIMEOUT) == key
    finally:
        instance.stop_process(second)
    assert "ready." in second_log.read_text()
    assert result.id not in second_log.read_text()
    assert run_counts(harness, [key]) == {key: 1}


def test_warm_shutdown_finishes_the_running_task(harness):
    (key,) = keys("warm", 1)
    with harness.session():
        result = sample_tasks.slow_count_run.delay(key, 3)
        transaction.commit()
    harness.wait_for_log(f"slow task started {key}", timeout=60)
    harness.worker.send_signal(signal.SIGTERM)
    assert harness.worker.wait(timeout=60) == 0
    harness.start_worker()  # back for the next tests: a deploy's restart
    assert result.get(timeout=TIMEOUT) == key
    assert run_counts(harness, [key]) == {key: 1}


def test_read_only_task_costs_no_commit_and_the_relay_closes_its_record(harness):
    with harness.session():
        result = sample_tasks.whoami.delay()
        transaction.commit()
    assert result.get(timeout=TIMEOUT)["user"] == "admin"

    def record_state():
        with harness.session() as portal:
            box = outbox.get_outbox(portal._p_jar)
            return [r.state for _, r in outbox.iter_records(box) if r.task_id == result.id]

    # The worker did not commit for it: the record is closed by the relay
    # (grace 2 s, runs every second), which reads the result, and not re-sent.
    deadline = time.monotonic() + 30
    while record_state() != ["done"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert record_state() == ["done"]
    assert f"whoami[{result.id}] received" in harness.worker_log.read_text()
    assert harness.worker_log.read_text().count(f"whoami[{result.id}] received") == 1
