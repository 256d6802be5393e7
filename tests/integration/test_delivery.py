"""Delivery guarantees with real processes: nothing lost, nothing doubled.

Runs on every broker (PLONECELERY_TEST_BROKER=sqlite|redis|amqp). On Redis and
RabbitMQ the Plone side reaches the broker through a proxy the tests stop, the
worker directly; on SQLite the broker's database file is locked instead.

The drills that kill workers print the time from the kill to the task's effect
(``pytest -s``), for docs/delivery.rst.
"""

from __future__ import annotations

import json
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

pytestmark = [pytest.mark.timeout(600)]
needs_proxy = pytest.mark.skipif(BROKER == "sqlite", reason="the SQLite broker has no TCP proxy")

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


@needs_proxy
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


def measured(drill: str, seconds: float) -> None:
    print(f"\n[delivery drill] broker={BROKER} {drill}: kill -> effect {seconds:.1f} s")


@pytest.mark.skipif(BROKER != "sqlite", reason="the SQLite broker's own outage")
def test_broker_database_locked_at_commit_loses_nothing(harness):
    """The SQLite broker down another way: its database file locked by another
    process's write transaction while Plone commits."""
    import sqlite3

    wanted = keys("locked", 3)
    broker_file = harness.environment["CELERY_BROKER_URL"].split("sqlite:///", 1)[1]
    lock = sqlite3.connect(broker_file, timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        results = []
        for key in wanted:
            with harness.session():
                results.append(sample_tasks.count_run.delay(key))
                transaction.commit()  # succeeds although the broker cannot be written
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert wait_all(results) == wanted
    assert set(run_counts(harness, wanted).values()) == {1}


def kill_whole_worker(harness) -> None:
    pids = [harness.worker.pid, *children_of(harness.worker.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    harness.worker.wait(timeout=30)


@pytest.mark.core
def test_whole_worker_killed_mid_task_is_run_again_once(harness):
    """A worker host dies: main process and pool process SIGKILLed mid-task; a new
    worker on the same configuration runs the task to the end, once."""
    (key,) = keys("host-died", 1)
    with harness.session():
        result = sample_tasks.slow_count_run.delay(key, 4)
        transaction.commit()
    harness.wait_for_log(f"slow task started {key}", timeout=60)
    kill_whole_worker(harness)
    killed = time.monotonic()
    harness.start_worker()
    assert result.get(timeout=TIMEOUT) == key
    measured("whole worker killed mid-task", time.monotonic() - killed)
    # The first run had counted before it was killed, uncommitted: one effect.
    assert run_counts(harness, [key]) == {key: 1}


def test_workers_command_shows_an_orphaned_task_and_when_it_is_sent_again(harness):
    (key,) = keys("orphan-cli", 1)
    with harness.session():
        result = sample_tasks.slow_count_run.delay(key, 15)
        transaction.commit()
    harness.wait_for_log(f"slow task started {key}", timeout=60)
    pool_pid = children_of(harness.worker.pid)[0]
    time.sleep(2.5)  # a beat or two: the pool process has reported the task
    running = json.loads(plonecelery_cli(harness, "workers", "--json"))
    (entry,) = [e for e in running["started"] if e["task_id"] == result.id]
    assert entry["verdict"] == "running" and entry["pid"] == pool_pid
    kill_whole_worker(harness)
    try:
        time.sleep(6)  # past the started timeout (5 s): the presence is stale
        text = plonecelery_cli(harness, "workers", "--all")
        assert f"slow_count_run[{result.id}]" in text
        assert "orphaned: sent again at the next relay run" in text
        assert f"(pid {pool_pid}) stopped beating" in text
        assert "0 worker process(es) alive" in text
    finally:
        harness.start_worker()
    assert result.get(timeout=TIMEOUT) == key
    assert run_counts(harness, [key]) == {key: 1}


def test_worker_killed_after_commit_before_ack_has_its_effect_once(harness, tmp_path):
    """Killed between the task's commit and the acknowledgement: whatever comes back
    (RabbitMQ's redelivery, Redis's after its visibility timeout, the relay's copy)
    finds the claim committed with the effect and does nothing."""
    (key,) = keys("after-commit", 1)
    marker = tmp_path / "died"
    with harness.session():
        sample_tasks.count_then_die.delay(key, str(marker))
        transaction.commit()
    deadline = time.monotonic() + 60
    while harness.worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists() and harness.worker.poll() is not None, "the worker killed itself"
    for pid in children_of(harness.worker.pid):
        os.kill(pid, signal.SIGKILL)
    harness.start_worker()
    # Longer than the started timeout (5 s) and several relay runs (1 s).
    with harness.session():
        marker_task = sample_tasks.noop.delay()
        transaction.commit()
    assert marker_task.get(timeout=TIMEOUT) == "ok"
    time.sleep(12)
    assert run_counts(harness, [key]) == {key: 1}
    log = harness.worker_log.read_text()
    assert "sending it again" not in log
    if BROKER == "amqp":
        # RabbitMQ gave the unacknowledged message back at once: skipped.
        assert f"Skipping {sample_tasks.count_then_die.name}" in log


def test_long_task_is_not_sent_again_while_it_runs(harness):
    """A task that runs for longer than the started timeout (5 s in the tests) is
    left alone: its worker process keeps reporting it."""
    (key,) = keys("lease", 1)
    with harness.session():
        result = sample_tasks.slow_count_run.delay(key, 14)
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == key
    log = harness.worker_log.read_text()
    assert log.count(f"slow task started {key}") == 1
    assert "sending it again" not in log
    assert run_counts(harness, [key]) == {key: 1}


@pytest.mark.core
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
    killed = time.monotonic()
    assert result.get(timeout=TIMEOUT) == key
    measured("pool process killed mid-task", time.monotonic() - killed)
    assert run_counts(harness, [key]) == {key: 1}
    assert harness.worker.poll() is None


@pytest.mark.core
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


@pytest.mark.core
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


@pytest.mark.zeo
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


@pytest.mark.skipif(
    BROKER == "sqlite",
    reason="tests the outbox shards, not the broker; the SQLite broker only makes 200 tasks slow",
)
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
