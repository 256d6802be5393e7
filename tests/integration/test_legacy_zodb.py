"""A ZODB written before the package layout change still works with today's code.

``data/legacy-1.0.0a1.dev0.zexp`` holds the outbox (two pending records) and the dead
letters (one) exactly as the code of 1.0.0a1.dev0 pickled them, old class paths included
(``collective.plonecelery.outbox.OutboxRecord``); ``data/make_legacy_export.py`` made it
with that code. The test imports them into a live site, then lets today's relay and worker
run the pending tasks, and lists and retries the dead letter.

The broker does not change what this shows: it runs on the default (SQLite) broker only.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sample_tasks
import transaction
from conftest import BROKER
from conftest import plonecelery_cli

from collective.plonecelery import deadletters
from collective.plonecelery.outbox import records as outbox

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(BROKER != "sqlite", reason="class paths do not depend on the broker"),
]

EXPORT = Path(__file__).parent / "data" / "legacy-1.0.0a1.dev0.zexp"
PENDING = {"legacy-task-1": "legacy-1", "legacy-task-2": "legacy-2"}


def runs(harness) -> dict[str, int]:
    with harness.session() as portal:
        return dict(getattr(portal, "_plonecelery_test_runs", {}))


def wait_for(predicate, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    return predicate()


def test_the_export_holds_the_old_class_paths():
    data = EXPORT.read_bytes()
    assert b"collective.plonecelery.outbox\nOutboxRecord" in data
    assert b"collective.plonecelery.outbox\nOutbox\n" in data
    assert b"collective.plonecelery.deadletters\nDeadLetter" in data


def test_legacy_outbox_is_relayed_and_dead_letters_retried(harness):
    for task_id in PENDING:  # a result from an earlier local run would close the records
        sample_tasks.count_run.AsyncResult(task_id).forget()
    with harness.session() as portal:
        connection = portal._p_jar
        with EXPORT.open("rb") as export:
            bundle = connection.importFile(export)
        legacy_outbox = bundle["outbox"]
        assert type(legacy_outbox) is outbox.Outbox
        live = outbox.get_outbox(connection)
        for name, shard in legacy_outbox.shards.items():
            for record in shard.values():
                assert type(record) is outbox.OutboxRecord
                assert record.state == outbox.PENDING
            live.shards[name] = shard
        letters = connection.root().setdefault(deadletters.ROOT_KEY, type(bundle)())
        for task_id, letter in bundle["deadletters"].items():
            assert type(letter) is deadletters.DeadLetter
            letters[task_id] = letter
        transaction.commit()

    # Today's relay sends the legacy records; today's worker runs each once.
    done = wait_for(lambda: all(runs(harness).get(key) for key in PENDING.values()))
    assert done, f"legacy outbox records not run: {runs(harness)}"
    assert {key: runs(harness)[key] for key in PENDING.values()} == {"legacy-1": 1, "legacy-2": 1}
    with harness.session() as portal:
        states = {
            record.task_id: record.state
            for _, record in outbox.iter_records(outbox.get_outbox(portal._p_jar))
            if record.task_id in PENDING
        }
    assert states == dict.fromkeys(PENDING, outbox.DONE)

    # The legacy dead letter: listed, shown, retried.
    assert "legacy-dead-1" in plonecelery_cli(harness, "deadletters", "list")
    assert "no flag set for legacy-dead" in plonecelery_cli(
        harness, "deadletters", "show", "legacy-dead-1"
    )
    with harness.session() as portal:
        portal._plonecelery_test_flag = True
        transaction.commit()
    try:
        output = plonecelery_cli(harness, "deadletters", "retry", "legacy-dead-1")
        new_id = output.strip().rsplit(" ", 1)[-1]
        assert sample_tasks.fail_unless_flag.AsyncResult(new_id).get(timeout=90) == "legacy-dead"
        assert runs(harness).get("legacy-dead") == 1
    finally:
        with harness.session() as portal:
            portal._plonecelery_test_flag = False
            transaction.commit()
