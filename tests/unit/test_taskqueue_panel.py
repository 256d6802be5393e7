"""The "Task queue" control panel ``@@plonecelery-taskqueue``, driven through its HTML forms."""

from __future__ import annotations

import logging
import time

import pytest
import transaction
from celery.app.task import Context
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from test_services_sources import client

from collective.plonecelery import deadletters
from collective.plonecelery import task
from collective.plonecelery.controlpanel.taskqueue import age
from collective.plonecelery.controlpanel.taskqueue import local_time
from collective.plonecelery.dispatch import HEADER
from collective.plonecelery.dispatch import RESULT_STAMP
from collective.plonecelery.worker import presence

pytestmark = pytest.mark.timeout(300)

PANEL = "/plone/@@plonecelery-taskqueue"
#: 2026-07-01 10:00:00 UTC, in summer time in Berlin.
FAILED = 1782900000.0


@task()
def mended(value):
    """Registered, so that a retry from the panel finds it."""
    return value


@pytest.fixture
def portal(layers):
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    for task_id, value in (("t-1", "one"), ("t-2", "two"), ("t-3", "x" * 400)):
        deadletters.add(
            portal._p_jar,
            deadletters.DeadLetter(
                task_id=task_id,
                task_name=mended.name,
                args=[value],
                site="/plone",
                user=SITE_OWNER_NAME,
                headers={HEADER: {"site": "/plone", "user": SITE_OWNER_NAME}},
                error="RuntimeError: boom " + value,
                traceback="Traceback (most recent call last): ...",
                failed=FAILED,
            ),
        )
    transaction.commit()
    try:
        yield portal
    finally:
        for layer in reversed(layers):
            layer.testTearDown()


@pytest.fixture
def manager(layers, portal):
    return client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))


def letters(portal):
    portal._p_jar.sync()
    return [letter.task_id for letter in deadletters.list_dead_letters(portal._p_jar)]


def test_listed_in_site_setup(portal):
    configlets = {action.id: action for action in portal.portal_controlpanel.listActions()}
    configlet = configlets["plonecelery-taskqueue"]
    assert configlet.permissions == ("Manage portal",)
    assert configlet.category == "Products"
    assert "@@plonecelery-taskqueue" in configlet.getActionExpression()


@pytest.mark.parametrize("who", ["anonymous", "member"])
def test_managers_only(layers, portal, who):
    auth = None if who == "anonymous" else (TEST_USER_NAME, TEST_USER_PASSWORD)
    response = client(layers, auth=auth).get(PANEL, status="*")
    assert response.status_int in (302, 401, 403)
    assert "boom" not in response.text
    # Posting without being a Manager changes nothing either.
    client(layers, auth=auth).post(PANEL, {"form.buttons.purge_all": "1"}, status="*")
    assert letters(portal) == ["t-1", "t-2", "t-3"]


def test_no_worker_is_said_and_the_page_is_quick(manager, portal):
    manager.get(PANEL)  # the first rendering compiles Plone's templates
    started = time.monotonic()
    page = manager.get(PANEL)
    print(f"panel answered in {time.monotonic() - started:.2f} s")
    assert time.monotonic() - started < 2.0
    assert "No worker process has reported" in page.html.find(id="workers").text
    assert page.html.find(id="outbox").find(class_="outbox-pending").text.strip() == "0"


def test_a_worker_shows_with_host_pool_processed_and_current_task(manager, portal):
    beat = presence.Heartbeat(
        portal._p_jar.db(), nodename="celery@box", pool="prefork", interval=60
    )
    presence.task_started("before", "sample.before")
    presence.task_ended("before")
    presence.task_started("long-1", "sample.long_task")
    try:
        assert beat.beat()
        row = manager.get(PANEL).html.find(id="workers").find(class_="worker")
    finally:
        presence.task_ended("long-1")
    assert "celery@box" in row.text and beat.identity["host"] in row.text
    assert "prefork" in row.text
    assert int(row.find(class_="worker-processed").text) >= 1
    assert "sample.long_task" in row.text and "long-1" in row.text


def test_dead_letters_show_in_the_site_time_zone(manager, portal):
    api.portal.set_registry_record("plone.portal_timezone", "Europe/Berlin")
    transaction.commit()
    section = manager.get(PANEL).html.find(id="dead-letters")
    rows = section.find_all(class_="dead-letter")
    assert [row["data-task-id"] for row in rows] == ["t-3", "t-2", "t-1"]
    assert "2026-07-01 12:00:00 CEST" in rows[0].text
    assert "Traceback (most recent call last)" in rows[0].find("details").text
    assert "'two'" in rows[1].find("details").text


def test_retry_one_then_purge_the_ticked_then_all(manager, portal, caplog):
    caplog.set_level(logging.INFO)
    form = manager.get(PANEL).forms["dead-letters-form"]
    done = form.submit("form.buttons.retry_one", index=1, status=302).follow()  # rows: t-3, t-2
    assert "Queued again as" in done.text
    assert letters(portal) == ["t-1", "t-3"]
    assert f"{SITE_OWNER_NAME} retried the dead letter t-2 as" in caplog.text

    form = done.forms["dead-letters-form"]
    form.get("task_ids:list", index=0).checked = True  # t-3
    form.submit("form.buttons.purge", status=302)
    assert letters(portal) == ["t-1"]
    assert f"{SITE_OWNER_NAME} purged the dead letter t-3" in caplog.text

    form = manager.get(PANEL).forms["dead-letters-form"]
    page = form.submit("form.buttons.purge_all", status=302).follow()
    assert "1 dead letter(s) removed." in page.text
    assert letters(portal) == []
    assert "No dead letter." in page.text


def test_bulk_without_a_tick_says_so(manager, portal):
    form = manager.get(PANEL).forms["dead-letters-form"]
    page = form.submit("form.buttons.retry", status=302).follow()
    assert "Select at least one dead letter." in page.text
    assert letters(portal) == ["t-1", "t-2", "t-3"]


def test_posts_need_the_csrf_token(manager, portal):
    manager.post(PANEL, {"form.buttons.purge_all": "1"}, status=403)
    assert letters(portal) == ["t-1", "t-2", "t-3"]


def test_times_and_ages_read_as_people_read_them():
    from zoneinfo import ZoneInfo

    assert local_time(FAILED, ZoneInfo("Europe/Berlin")) == "2026-07-01 12:00:00 CEST"
    assert local_time(None, ZoneInfo("UTC")) == ""
    assert [age(s) for s in (5, 119, 120, 7200, 200000)] == ["5 s", "119 s", "2 min", "2 h", "2 d"]


def test_backfills_show_done_and_total_and_poll_the_service(manager, portal):
    from collective.plonecelery.blogs import deliveries

    assert "No backfill recorded." in manager.get(PANEL).text
    for delivery_id, status in (
        ("backfill:blog:r1:1", "imported"),
        ("backfill:blog:r1:1:a", "imported"),
        ("backfill:blog:r1:1:b", "queued"),
    ):
        deliveries.record(
            delivery_id=delivery_id,
            source_id="blog",
            event="backfill",
            remote_id=None,
            status=status,
            portal=portal,
        )
    transaction.commit()
    section = manager.get(PANEL).html.find(id="backfills")
    row = section.find(class_="backfill")
    assert row["data-run"] == "blog:r1"
    assert (row.find(class_="backfill-done").text, row.find(class_="backfill-total").text) == (
        "1",
        "2",
    )
    assert row.find(class_="progress-bar").text.strip() == "50%"
    assert section["data-poll"] == "http://localhost:80/plone/++api++/@celery-backfills"


def test_recent_tasks_filtered_by_state_and_name(manager, portal, tmp_path, monkeypatch):
    from collective.plonecelery.app import app

    assert "keeps no order to list tasks by" in manager.get(PANEL).text  # cache+memory://
    monkeypatch.setitem(app.conf, "result_backend", f"db+sqlite:///{tmp_path}/results.sqlite")
    monkeypatch.setattr(app, "_backend_cache", None)
    monkeypatch.setattr(app._local, "backend", None, raising=False)
    # What a Zope task stamps on its result as it starts (task.ZopeTask._stamp_result).
    run = {"user": "jane", "site": "/plone", "queued": time.time() - 5, "started": time.time() - 2}
    stamped = Context(task="sample", stamped_headers=[RESULT_STAMP], stamps={RESULT_STAMP: run})
    app.backend.store_result("ok-1", 1, "SUCCESS", request=stamped)
    app.backend.store_result("bad-1", RuntimeError("went wrong"), "FAILURE")
    section = manager.get(PANEL).html.find(id="recent-tasks")
    assert [row["data-task-id"] for row in section.find_all(class_="recent-task")] == [
        "bad-1",
        "ok-1",
    ]
    ok = section.find(attrs={"data-task-id": "ok-1"})
    assert ok.find(class_="recent-task-user").text.split() == ["jane", "/plone"]
    times = " ".join(ok.find(class_="recent-task-times").text.split())
    assert "queued" in times and "started" in times and "finished" in times
    took = float(times.split("took ")[1].split(" s")[0])
    assert 1.5 < took < 60
    failed = manager.get(f"{PANEL}?state=FAILURE").html.find(id="recent-tasks")
    [row] = failed.find_all(class_="recent-task")
    assert "RuntimeError: went wrong" in row.text and "UTC" in row.text
    named = manager.get(f"{PANEL}?name=no.such.task").html.find(id="recent-tasks")
    assert "No task result stored." in named.text
