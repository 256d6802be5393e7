"""Zope-aware tasks end to end: real ZEO server, real Plone site, real worker.

Runs once per broker (PLONECELERY_TEST_BROKER=sqlite|redis|amqp, see Makefile).
"""

from __future__ import annotations

import time
import uuid

import pytest
import sample_tasks
import transaction
from conftest import BROKER
from plone import api

pytestmark = pytest.mark.timeout(300)

TIMEOUT = 60


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def member(harness):
    """A Member without permission to add content at the site root."""
    with harness.session(user="admin") as portal:
        if api.user.get(userid="bob") is None:
            api.user.create(email="bob@example.org", username="bob", password="secret-bob-1")
        transaction.commit()
        assert "Manager" not in api.user.get_roles(username="bob", obj=portal)
    return "bob"


@pytest.mark.core
def test_content_created_in_task_is_visible_after_commit(harness):
    doc_id = new_id("doc")
    with harness.session() as portal:
        result = sample_tasks.create_document.delay(portal, doc_id, "Made by a worker")
        assert result.id  # known before the transaction even commits
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == doc_id
    with harness.session() as portal:
        assert portal[doc_id].Title() == "Made by a worker"
        assert api.content.find(UID=portal[doc_id].UID())


@pytest.mark.core
def test_task_queued_in_aborted_transaction_never_runs(harness):
    doc_id = new_id("aborted")
    with harness.session() as portal:
        aborted = sample_tasks.create_document.delay(portal, doc_id, "never")
        transaction.abort()
    with harness.session() as portal:
        marker = sample_tasks.noop.delay()
        transaction.commit()
    # One worker, one queue: the marker runs after anything queued before it.
    assert marker.get(timeout=TIMEOUT) == "ok"
    assert aborted.state == "PENDING"
    with harness.session() as portal:
        assert doc_id not in portal


def test_task_sees_content_from_the_queuing_transaction(harness):
    doc_id = new_id("fresh")
    with harness.session() as portal:
        doc = api.content.create(container=portal, type="Document", id=doc_id, title="Fresh")
        result = sample_tasks.title_of.delay(doc)
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == "Fresh"


def test_task_writes_to_content_passed_by_reference(harness):
    doc_id = new_id("ref")
    with harness.session() as portal:
        doc = api.content.create(container=portal, type="Document", id=doc_id, title="Before")
        transaction.commit()
        result = sample_tasks.set_title.delay(doc, "After")
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == "After"
    with harness.session() as portal:
        assert portal[doc_id].Title() == "After"
        assert [b.Title for b in api.content.find(UID=portal[doc_id].UID())] == ["After"]


@pytest.mark.core
def test_task_runs_as_the_queuing_user_with_site_and_request(harness, member):
    with harness.session(user=member):
        result = sample_tasks.whoami.delay()
        transaction.commit()
    seen = result.get(timeout=TIMEOUT)
    assert seen["user"] == member
    assert seen["anonymous"] is False
    assert seen["site"] == harness.site_path
    assert seen["request"] is True
    # PLONECELERY_SERVER_URL gives the public URL to absolute_url().
    assert seen["url"] == "https://www.example.org" + harness.site_path


def test_anonymous_queues_a_task_that_runs_as_anonymous(harness):
    with harness.session(user=None):
        result = sample_tasks.whoami.delay()
        transaction.commit()
    seen = result.get(timeout=TIMEOUT)
    assert seen["anonymous"] is True
    assert seen["user"] is None


def test_run_as_picks_another_user(harness, member):
    with harness.session(user=None):
        result = sample_tasks.whoami.apply_async(run_as=member)
        transaction.commit()
    assert result.get(timeout=TIMEOUT)["user"] == member


def test_user_without_permission_gets_unauthorized_and_nothing_is_written(harness, member):
    doc_id = new_id("denied")
    with harness.session(user=member) as portal:
        result = sample_tasks.create_document.delay(portal, doc_id, "not allowed")
        transaction.commit()
    with pytest.raises(Exception) as raised:
        result.get(timeout=TIMEOUT)
    assert type(raised.value).__name__ == "Unauthorized"
    assert result.state == "FAILURE"
    with harness.session() as portal:
        assert doc_id not in portal


def test_unknown_user_fails_the_task(harness):
    with harness.session(user=None):
        result = sample_tasks.whoami.apply_async(run_as="nobody-of-that-name")
        transaction.commit()
    with pytest.raises(Exception) as raised:
        result.get(timeout=TIMEOUT)
    assert type(raised.value).__name__ == "UnknownUser"
    assert "nobody-of-that-name" in str(raised.value)


def test_as_admin_task_runs_unrestricted(harness, member):
    doc_id = new_id("admin")
    with harness.session(user=member) as portal:
        result = sample_tasks.create_document_as_admin.delay(portal, doc_id, "by admin task")
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == member
    with harness.session() as portal:
        assert portal[doc_id].Title() == "by admin task"


@pytest.mark.core
def test_conflict_error_is_retried_then_succeeds(harness):
    doc_id = new_id("conflict")
    with harness.session() as portal:
        result = sample_tasks.conflict_then_succeed.delay(portal, doc_id, 2)
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == 2
    with harness.session() as portal:
        # The writes of the two failed attempts were aborted: one document.
        assert doc_id in portal
        assert len(api.content.find(id=doc_id)) == 1


def test_conflict_retries_are_bounded(harness):
    doc_id = new_id("conflict-forever")
    with harness.session() as portal:
        result = sample_tasks.conflict_then_succeed.delay(portal, doc_id, 99)
        transaction.commit()
    with pytest.raises(Exception) as raised:
        result.get(timeout=TIMEOUT)
    assert type(raised.value).__name__ == "ConflictError"
    with harness.session() as portal:
        assert doc_id not in portal


@pytest.mark.core
def test_exception_aborts_everything_the_task_wrote(harness):
    doc_id = new_id("failed")
    with harness.session() as portal:
        result = sample_tasks.write_then_fail.delay(portal, doc_id)
        transaction.commit()
    with pytest.raises(ValueError, match="after writing"):
        result.get(timeout=TIMEOUT)
    with harness.session() as portal:
        assert doc_id not in portal


def test_reference_to_deleted_content_fails_clearly(harness):
    doc_id = new_id("gone")
    with harness.session() as portal:
        doc = api.content.create(container=portal, type="Document", id=doc_id, title="Gone")
        transaction.commit()
        result = sample_tasks.title_of.delay(doc)
        api.content.delete(obj=doc)
        transaction.commit()
    with pytest.raises(Exception) as raised:
        result.get(timeout=TIMEOUT)
    assert type(raised.value).__name__ == "UnresolvedReference"
    assert doc_id in str(raised.value)


def test_persistent_non_content_argument_is_refused_at_queue_time(harness):
    with harness.session() as portal, pytest.raises(TypeError, match="persistent"):
        sample_tasks.title_of.delay(portal.portal_catalog._catalog)


def test_dedupe_sends_identical_calls_once_and_every_caller_gets_a_result(harness):
    with harness.session():
        first = sample_tasks.whoami.apply_async(dedupe=True)
        second = sample_tasks.whoami.apply_async(dedupe=True)
        third = sample_tasks.whoami.apply_async()
        transaction.commit()
    assert first.id == second.id
    assert third.id != first.id
    assert first.get(timeout=TIMEOUT) == second.get(timeout=TIMEOUT)
    assert third.get(timeout=TIMEOUT)["user"] == "admin"


@pytest.mark.zeo
def test_zeo_restart_does_not_need_a_worker_restart(harness):
    worker_pid = harness.worker.pid
    harness.zeo.restart()
    doc_id = new_id("after-restart")
    with harness.session() as portal:
        result = sample_tasks.create_document.delay(portal, doc_id, "after ZEO restart")
        transaction.commit()
    assert result.get(timeout=TIMEOUT) == doc_id
    assert harness.worker.pid == worker_pid and harness.worker.poll() is None
    with harness.session() as portal:
        assert doc_id in portal


def recorded(harness, *keys) -> dict:
    with harness.session() as portal:
        runs = getattr(portal, "_plonecelery_test_runs", {})
        return {key: runs.get(key) for key in keys}


@pytest.mark.skipif(BROKER != "sqlite", reason="Celery's canvas does not depend on the broker")
def test_a_chain_and_a_link_callback_run_in_the_site_as_the_queuing_user(harness, member):
    first, second, callback = new_id("chain1"), new_id("chain2"), new_id("linked")
    with harness.session(user=member):
        chained = (sample_tasks.record_user.si(first) | sample_tasks.record_user.si(second))()
        linked = sample_tasks.record_user.apply_async(
            (new_id("head"),), link=sample_tasks.record_user.si(callback)
        )
        transaction.commit()
    assert chained.get(timeout=TIMEOUT) == second
    assert chained.parent.get(timeout=TIMEOUT) == first
    linked.get(timeout=TIMEOUT)
    assert_eventually = recorded(harness, callback)
    for _ in range(100):
        if assert_eventually[callback]:
            break
        time.sleep(0.2)
        assert_eventually = recorded(harness, callback)
    assert recorded(harness, first, second, callback) == dict.fromkeys(
        (first, second, callback), f"{member}:False"
    )


@pytest.mark.skipif(BROKER != "redis", reason="chords run natively on the Redis result backend")
def test_a_chord_body_runs_in_the_site_as_the_queuing_user(harness, member):
    from celery import chord

    # whoami, not record_user: the signing tests leave record_user's class bound to the
    # "auth" serializer in this process (Celery copies task_serializer into it once).
    with harness.session(user=member):
        result = chord(sample_tasks.whoami.si() for _ in range(3))(sample_tasks.whoami.si())
        transaction.commit()
    body = result.get(timeout=TIMEOUT)
    heads = result.parent.get(timeout=TIMEOUT)
    assert len(heads) == 3
    for seen in [body, *heads]:
        assert (seen["user"], seen["site"]) == (member, harness.site_path)
