"""``@celery-deadletters`` through the real publisher: list, show, retry, purge; Managers only."""

from __future__ import annotations

import logging

import pytest
import transaction
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from test_services_sources import client

from collective.plonecelery import deadletters
from collective.plonecelery import task
from collective.plonecelery.dispatch import HEADER
from collective.plonecelery.operations.status import outbox_status
from collective.plonecelery.outbox import records as outbox

pytestmark = pytest.mark.timeout(300)

API = "/plone/++api++/@celery-deadletters"


@task()
def flaky(value):
    """Registered, so that a retry finds it (tests/integration runs retried tasks)."""
    return value


@pytest.fixture
def portal(layers):
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    for task_id, value in (("t-1", "one"), ("t-2", "two")):
        deadletters.add(
            portal._p_jar,
            deadletters.DeadLetter(
                task_id=task_id,
                task_name=flaky.name,
                args=[value],
                site="/plone",
                user=SITE_OWNER_NAME,
                headers={HEADER: {"site": "/plone", "user": SITE_OWNER_NAME}},
                error="RuntimeError: boom",
                traceback="Traceback (most recent call last): ...",
            ),
        )
    transaction.commit()
    try:
        yield portal
    finally:
        for layer in reversed(layers):
            layer.testTearDown()


def test_list_show_retry_purge(layers, portal, caplog):
    caplog.set_level(logging.INFO)
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    listed = manager.get(API, headers={"Accept": "application/json"}).json
    assert [item["task_id"] for item in listed["items"]] == ["t-1", "t-2"]
    assert "traceback" not in listed["items"][0] and listed["items_total"] == 2
    one = manager.get(f"{API}/t-1", headers={"Accept": "application/json"}).json
    assert one["traceback"].startswith("Traceback") and one["args"] == ["one"]

    retried = manager.post(f"{API}/t-1/retry", headers={"Accept": "application/json"}).json
    assert retried["task_id"] and retried["task_id"] != "t-1"
    portal._p_jar.sync()
    assert [letter.task_id for letter in deadletters.list_dead_letters(portal._p_jar)] == ["t-2"]
    assert f"{SITE_OWNER_NAME} retried the dead letter t-1 as {retried['task_id']}" in caplog.text
    manager.post(f"{API}/t-2/purge", headers={"Accept": "application/json"})
    portal._p_jar.sync()
    assert deadletters.list_dead_letters(portal._p_jar) == []

    missing = manager.get(f"{API}/t-1", headers={"Accept": "application/json"}, status=404)
    assert missing.json["type"] == "NotFound" and "t-1" in missing.json["message"]
    bad = manager.post(f"{API}/t-1/explode", headers={"Accept": "application/json"}, status=404)
    assert bad.json["type"] == "NotFound"


def test_purge_all_and_who_may(layers, portal):
    member = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    refused = member.get(API, headers={"Accept": "application/json"}, status=401)
    assert refused.json["type"] == "Unauthorized"
    member.post(f"{API}/purge", headers={"Accept": "application/json"}, status=401)
    anonymous = client(layers)
    anonymous.get(API, headers={"Accept": "application/json"}, status=401)
    portal._p_jar.sync()
    assert len(deadletters.list_dead_letters(portal._p_jar)) == 2
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    assert manager.post(f"{API}/purge", headers={"Accept": "application/json"}).json == {
        "removed": 2
    }


def test_a_retried_dead_letter_no_longer_counts_as_a_failed_outbox_record(layers, portal):
    connection = portal._p_jar
    ref = outbox.add(
        connection, task_name=flaky.name, task_id="t-3", args=["three"], kwargs={}, options={}
    )
    outbox.mark_failed(connection, ref)
    deadletters.add(
        connection,
        deadletters.DeadLetter(
            task_id="t-3",
            task_name=flaky.name,
            args=["three"],
            site="/plone",
            user=SITE_OWNER_NAME,
            headers={"site": "/plone", "user": SITE_OWNER_NAME, "outbox": ref.to_json()},
            error="RuntimeError: boom",
        ),
    )
    transaction.commit()
    assert outbox_status(connection, now=0)["failed"] == 1
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    manager.post(f"{API}/t-3/retry", headers={"Accept": "application/json"})
    connection.sync()
    counted = outbox_status(connection, now=0)
    assert (counted["failed"], counted["retried"]) == (0, 1)
