"""``@celery-tasks`` and ``@celery-backfills`` through the real publisher, and
``report_progress`` in eager tasks; results in a real (SQLite or in-memory) backend."""

from __future__ import annotations

import time

import pytest
import transaction
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_ID
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from plone.app.testing import login
from test_services_sources import client

from collective.plonecelery import report_progress
from collective.plonecelery import task
from collective.plonecelery.app import app
from collective.plonecelery.blogs import deliveries
from collective.plonecelery.progress import PROGRESS
from collective.plonecelery.progress import owner_id
from collective.plonecelery.progress import progress_meta
from collective.plonecelery.taskids import is_owner
from collective.plonecelery.taskids import owned_task_id

pytestmark = pytest.mark.timeout(300)

API = "/plone/++api++/@celery-tasks"
JSON = {"Accept": "application/json"}


@task()
def counted(context, steps):
    for done in range(1, steps + 1):
        report_progress(done, steps, message=f"step {done}")
    return {"steps": steps}


@task()
def broken(context):
    raise RuntimeError("broken on purpose")


@pytest.fixture
def database_backend(portal, tmp_path, monkeypatch):
    """Celery's database result backend on a SQLite file (the add-on's default kind)."""
    monkeypatch.setitem(app.conf, "result_backend", f"db+sqlite:///{tmp_path}/results.sqlite")
    # Celery caches the backend it made (per thread when it is not thread-safe).
    monkeypatch.setattr(app, "_backend_cache", None)
    monkeypatch.setattr(app._local, "backend", None, raising=False)
    return app.backend


def queue_as(portal, user, signature, *args):
    login(portal, user)
    result = signature.delay(portal, *args)
    transaction.commit()
    return result.id


def test_report_progress_outside_a_task_does_nothing():
    assert report_progress(1, 2) is False
    assert progress_meta(1, 4) == {"done": 1, "total": 4, "percent": 25.0, "message": None}
    assert progress_meta(3, None)["percent"] is None


def test_one_task_for_its_user_and_managers_only(layers, portal, database_backend):
    api.user.create(email="other@example.org", username="other", password="secret-other-1")
    transaction.commit()
    task_id = queue_as(portal, TEST_USER_NAME, counted, 3)
    owner = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    mine = owner.get(f"{API}/{task_id}", headers=JSON).json
    assert mine["state"] == "SUCCESS" and mine["result"] == {"steps": 3}
    assert mine["@id"].endswith(f"/@celery-tasks/{task_id}")
    # Whose task it is, is in its id: no owner record was written for it.
    assert is_owner(task_id, user=TEST_USER_ID, site="/plone")
    assert database_backend.get_task_meta(owner_id(task_id))["status"] == "PENDING"

    other = client(layers, auth=("other", "secret-other-1"))
    assert other.get(f"{API}/{task_id}", headers=JSON, status=404).json["type"] == "NotFound"
    anonymous = client(layers)
    assert anonymous.get(f"{API}/{task_id}", headers=JSON, status=401).json["type"] == (
        "Unauthorized"
    )
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    assert manager.get(f"{API}/{task_id}", headers=JSON).json["state"] == "SUCCESS"
    # A task that never reported progress is its user's too, and nobody else's.
    quiet = queue_as(portal, TEST_USER_NAME, broken)
    failed = owner.get(f"{API}/{quiet}", headers=JSON).json
    assert failed["state"] == "FAILURE" and "broken on purpose" in failed["error"]
    assert manager.get(f"{API}/{quiet}", headers=JSON).json["state"] == "FAILURE"
    other.get(f"{API}/{quiet}", headers=JSON, status=404)


def test_a_task_id_chosen_by_the_caller_gets_its_owner_stored(layers, portal, database_backend):
    login(portal, TEST_USER_NAME)
    counted.apply_async((portal, 2), task_id="chosen-by-caller-1")
    transaction.commit()
    stored = database_backend.get_task_meta(owner_id("chosen-by-caller-1"))["result"]
    assert stored == {"user": TEST_USER_ID, "site": "/plone", "task": counted.name}
    owner = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    assert owner.get(f"{API}/chosen-by-caller-1", headers=JSON).json["state"] == "SUCCESS"
    # Without a progress report such a task names nobody: only Managers see it.
    login(portal, TEST_USER_NAME)
    broken.apply_async((portal,), task_id="chosen-by-caller-2")
    transaction.commit()
    owner.get(f"{API}/chosen-by-caller-2", headers=JSON, status=404)


def test_owned_task_ids_name_one_user_in_one_site(portal):
    task_id = owned_task_id(user="jane", site="/plone")
    assert len(task_id) == 36 and task_id.count("-") == 4
    assert is_owner(task_id, user="jane", site="/plone")
    assert not is_owner(task_id, user="john", site="/plone")
    assert not is_owner(task_id, user="jane", site="/other")
    flipped = task_id[:-1] + ("0" if task_id[-1] != "0" else "1")
    assert not is_owner(flipped, user="jane", site="/plone")
    assert not is_owner("not-an-owned-id", user="jane", site="/plone")
    # Anonymous gets a plain random id, which names nobody.
    assert not is_owner(owned_task_id(user=None, site="/plone"), user="", site="/plone")
    assert owned_task_id(user="jane", site="/plone") != task_id


def test_progress_while_running(layers, portal, database_backend):
    database_backend.store_result("running-1", progress_meta(3, 10, "page 1"), PROGRESS)
    database_backend.store_result(
        owner_id("running-1"), {"user": TEST_USER_ID, "site": "/plone"}, "SUCCESS"
    )
    owner = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    answer = owner.get(f"{API}/running-1", headers=JSON).json
    assert answer["state"] == PROGRESS
    assert answer["progress"] == {"done": 3, "total": 10, "percent": 30.0, "message": "page 1"}
    assert answer["result"] is None


def test_listing_pages_filters_and_refuses_members(layers, portal, database_backend):
    for steps in range(1, 8):
        queue_as(portal, TEST_USER_NAME, counted, steps)
    queue_as(portal, TEST_USER_NAME, broken)
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    started = time.monotonic()
    page = manager.get(f"{API}?b_size=3", headers=JSON).json
    assert time.monotonic() - started < 2.0
    assert page["items_total"] == 8  # the owner records are not tasks
    assert len(page["items"]) == 3
    assert page["items"][0]["state"] == "FAILURE"  # newest first
    assert set(page["batching"]) == {"@id", "first", "last", "next"}
    assert "b_start=6" in page["batching"]["last"]
    second = manager.get(page["batching"]["next"].replace("http://localhost:80", ""), headers=JSON)
    assert "prev" in second.json["batching"] and len(second.json["items"]) == 3
    failed = manager.get(f"{API}?state=failure", headers=JSON).json
    assert failed["items_total"] == 1 and "broken on purpose" in failed["items"][0]["error"]
    assert "batching" not in failed
    named = manager.get(f"{API}?name={counted.name}&b_size=50", headers=JSON).json
    assert named["items_total"] == 7 and {i["name"] for i in named["items"]} == {counted.name}
    manager.get(f"{API}?b_size=lots", headers=JSON, status=400)
    # Found by schemathesis: past SQL's 64-bit OFFSET, SQLite raised OverflowError (a 500).
    huge = manager.get(f"{API}?b_start={10**34}", headers=JSON, status=400).json
    assert huge["type"] == "BadRequest" and "b_start" in huge["message"]
    assert manager.get(f"{API}?b_start={2**62}", headers=JSON).json["items"] == []

    member = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    assert member.get(API, headers=JSON, status=403).json["type"] == "Forbidden"
    client(layers).get(API, headers=JSON, status=401)


@pytest.mark.parametrize(
    "query",
    [
        "@celery-tasks?b_size=1&b_size=2",  # found by schemathesis: a TypeError, a 500
        "@celery-tasks?b_start=&b_start=x",
        "@celery-tasks?state=a&state=b",
        "@celery-tasks?name.x:record=1",
        "@celery-backfills?source=a&source=b",
        "@blog-deliveries?limit=1&limit=2",
        "@blog-deliveries?source:list=a",
    ],
)
def test_a_parameter_given_twice_is_a_bad_request(layers, portal, database_backend, query):
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    answer = manager.get(f"/plone/++api++/{query}", headers=JSON, status=400).json
    assert answer["type"] == "BadRequest" and "once" in answer["message"], answer


def test_zope_converters_still_work(layers, portal, database_backend):
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    assert manager.get(f"{API}?b_size:int=2", headers=JSON).json["items_total"] == 0


def test_listing_says_when_the_backend_cannot_page(layers, portal):
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    answer = manager.get(API, headers=JSON, status=501).json  # the layer's cache+memory://
    assert answer["type"] == "NotSupported" and "database result backend" in answer["message"]


def test_backfills_count_done_and_total(layers, portal):
    run = "backfill:blog:run1"
    entries = [(f"{run}:1", "imported")] + [
        (f"{run}:1:{n}", status)
        for n, status in enumerate(["imported", "skipped", "failed", "queued", "queued"])
    ]
    for delivery_id, status in entries:
        deliveries.record(
            delivery_id=delivery_id,
            source_id="blog",
            event="backfill",
            remote_id=None,
            status=status,
            portal=portal,
        )
    deliveries.record(
        delivery_id="hook-1", source_id="blog", event="post.published", remote_id="9",
        status="queued", portal=portal,
    )  # fmt: skip
    transaction.commit()
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    answer = manager.get("/plone/++api++/@celery-backfills", headers=JSON).json
    assert answer["items_total"] == 1
    item = answer["items"][0]
    assert {k: item[k] for k in ("source_id", "run", "pages", "total", "done", "failed")} == {
        "source_id": "blog",
        "run": "run1",
        "pages": 1,
        "total": 5,
        "done": 2,
        "failed": 1,
    }
    assert item["running"] is True
    member = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    member.get("/plone/++api++/@celery-backfills", headers=JSON, status=401)


def test_the_panels_are_listed_in_controlpanels(layers, portal):
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    listed = manager.get("/plone/++api++/@controlpanels", headers=JSON).json
    ours = {item["@id"].rsplit("/", 1)[1]: item for item in listed}
    assert ours["plonecelery-taskqueue"]["title"] == "Task queue"
    assert ours["plonecelery-sources"]["title"] == "Blog sources"
    assert ours["plonecelery-taskqueue"]["group"] == ours["plonecelery-sources"]["group"]
    one = manager.get("/plone/++api++/@controlpanels/plonecelery-taskqueue", headers=JSON).json
    assert one["url"] == "http://localhost:80/plone/@@plonecelery-taskqueue"
    assert "http://localhost:80/plone/++api++/@celery-tasks" in one["services"]


def fill(backend, count: int, *, failures_every: int = 100) -> None:
    """``count`` finished tasks in the result table, in one transaction (storing them
    one by one through the backend would commit 10,000 times)."""
    from celery.backends.database import session_cleanup

    session = backend.ResultSession()
    with session_cleanup(session):
        for n in range(count):
            task = backend.task_cls(f"filled-{n}")
            failed = n % failures_every == 0
            state = "FAILURE" if failed else "SUCCESS"
            # What store_result() writes, without a commit per task.
            value = backend.prepare_exception(RuntimeError(f"failed {n}")) if failed else {"n": n}
            backend._update_result(task, value, state)
            session.add(task)
        session.commit()


def test_10000_finished_tasks_are_paged_not_loaded(layers, portal, database_backend, request):
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    manager.get("/plone/@@plonecelery-taskqueue")  # its template compiled (~2 s, once)
    fill(database_backend, 10_000)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    # On every engine: Celery makes a new one per session outside forked workers.
    event.listen(Engine, "before_cursor_execute", seen)
    request.addfinalizer(lambda: event.remove(Engine, "before_cursor_execute", seen))
    timings = {}
    for label, url in {
        "listing": f"{API}?b_size=25",
        "last page": f"{API}?b_size=25&b_start=9975",
        "failures": f"{API}?state=failure&b_size=25",
    }.items():
        started = time.monotonic()
        answer = manager.get(url, headers=JSON).json
        timings[label] = time.monotonic() - started
        assert len(answer["items"]) == 25, label
        assert answer["items_total"] == (100 if label == "failures" else 10_000), label
    started = time.monotonic()
    html = manager.get("/plone/@@plonecelery-taskqueue").text
    timings["panel"] = time.monotonic() - started
    assert "filled-" in html
    print("10,000 results:", {label: f"{seconds:.3f} s" for label, seconds in timings.items()})
    assert max(timings.values()) < 2.0, timings
    # Every read of the result table asks for a count or for one page, never for all rows.
    reads = [" ".join(sql.split()) for sql in statements if "FROM celery_taskmeta" in sql]
    assert reads
    for sql in reads:
        assert "count(" in sql or "LIMIT" in sql, sql


def test_the_listing_says_who_queued_a_task_where_and_how_long_it_ran(
    layers, portal, database_backend
):
    task_id = queue_as(portal, TEST_USER_NAME, counted, 2)
    manager = client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))
    listed = manager.get(API, headers=JSON).json["items"]
    item = next(item for item in listed if item["task_id"] == task_id)
    assert (item["user"], item["site"], item["name"]) == (TEST_USER_ID, "/plone", counted.name)
    assert item["started"] <= item["date_done"] and 0 <= item["duration"] < 60
    one = manager.get(f"{API}/{task_id}", headers=JSON).json
    assert one["user"] == TEST_USER_ID and one["duration"] == item["duration"]
