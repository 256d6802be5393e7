"""The Manager REST API: @blog-sources and @blog-deliveries through the real publisher."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import transaction
import webtest
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from plone.testing._z2_testbrowser import Zope2Caller

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs import subscriptions
from collective.plonecelery.blogs.importer import websub
from collective.plonecelery.blogs.verify.signatures import sign

pytestmark = pytest.mark.timeout(900)

DATA = Path(__file__).parent / "data"

IMPORT_USER = "plonecelery-importer"
SOURCE = {
    "id": "blog",
    "title": "Blog",
    "kind": "ghost",
    "api_url": "https://blog.example.org",
    "api_key": "content-key",
    "scheme": "ghost",
    "secret": "s3cret-webhook-key",
    "target": "news",
}


@pytest.fixture
def queued(monkeypatch):
    """Calls of the importer's queuing functions (the importer has tests of its own)."""
    calls = []

    def fake(name):
        def queue(*args, **kwargs):
            calls.append((name, args, kwargs))
            return types.SimpleNamespace(id=f"task-{len(calls)}")

        return queue

    monkeypatch.setattr(importer, "queue_import", fake("import"))
    monkeypatch.setattr(importer, "queue_backfill", fake("backfill"))
    monkeypatch.setattr(importer.test_source, "delay", fake("test"))
    monkeypatch.setattr(websub.subscribe, "delay", fake("subscribe"))
    monkeypatch.setattr(websub.send_request, "delay", fake("send"))
    return calls


@pytest.fixture
def portal(layers, queued):
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    with api.env.adopt_roles(["Manager"]):
        api.content.create(container=portal, type="Folder", id="news", title="News")
        if api.user.get(userid=IMPORT_USER) is None:
            api.user.create(email="importer@example.org", username=IMPORT_USER)
    transaction.commit()
    try:
        yield portal
    finally:
        for layer in reversed(layers):
            layer.testTearDown()


def client(layers, *, auth=None):
    caller = Zope2Caller(types.SimpleNamespace(handleErrors=True), layers[-1]["app"])
    app = webtest.TestApp(caller)
    if auth:
        app.authorization = ("Basic", auth)
    return app


@pytest.fixture
def manager(layers, portal):
    return client(layers, auth=(SITE_OWNER_NAME, SITE_OWNER_PASSWORD))


API = "/plone/++api++"


def test_crud(manager, portal):
    assert manager.get(f"{API}/@blog-sources").json["items"] == []
    created = manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    site = "http://localhost:80/plone"  # as the request saw it
    assert created.headers["Location"] == f"{site}/@blog-sources/blog"
    data = created.json
    assert data["secret"] == {"set": True}
    assert data["api_key"] == {"set": True}
    assert data["app_password"] == {"set": False}
    assert data["webhook_urls"] == {
        "api": f"{site}/++api++/@blog-webhook/blog",
        "plain": f"{site}/@blog-webhook/blog",
    }
    assert "s3cret" not in created.text

    listed = manager.get(f"{API}/@blog-sources").json
    assert [item["id"] for item in listed["items"]] == ["blog"]
    assert "s3cret" not in manager.get(f"{API}/@blog-sources").text
    one = manager.get(f"{API}/@blog-sources/blog").json
    assert one["title"] == "Blog" and one["secret"] == {"set": True}

    # PATCH: what GET shows can be sent back; secrets stay unless given.
    patched = manager.patch_json(
        f"{API}/@blog-sources/blog", {**one, "title": "Our blog"}, status=200
    ).json
    assert patched["title"] == "Our blog"
    portal._p_jar.sync()
    assert storage.get_source("blog", portal=portal).secret == "s3cret-webhook-key"
    manager.patch_json(f"{API}/@blog-sources/blog", {"secret": "rotated"}, status=200)
    portal._p_jar.sync()
    assert storage.get_source("blog", portal=portal).secret == "rotated"

    manager.delete(f"{API}/@blog-sources/blog", status=204)
    error = manager.get(f"{API}/@blog-sources/blog", status=404).json
    assert error["type"] == "NotFound"
    assert "no blog source with id 'blog'" in error["message"]


def test_add_with_accept_header_instead_of_api_prefix(manager, portal):
    response = manager.post_json(
        "/plone/@blog-sources", SOURCE, headers={"Accept": "application/json"}, status=201
    )
    assert response.json["id"] == "blog"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**SOURCE, "kind": "medium"}, "unknown source kind 'medium'"),
        ({**SOURCE, "colour": "red"}, "unknown source field(s) 'colour'"),
        ({**SOURCE, "secret": ""}, "needs the webhook secret"),
        ({**SOURCE, "target": "nowhere"}, "is not a folder of the site"),
        ({**SOURCE, "tolerance": "5"}, "tolerance must be an integer"),
        ({key: value for key, value in SOURCE.items() if key != "api_url"}, "missing 'api_url'"),
    ],
)
def test_add_validation_errors(manager, portal, data, message):
    error = manager.post_json(f"{API}/@blog-sources", data, status=400).json
    assert error["type"] == "BadRequest"
    assert message in error["message"]
    portal._p_jar.sync()
    assert storage.list_sources(portal=portal) == []


def test_add_twice(manager, portal):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    error = manager.post_json(f"{API}/@blog-sources", SOURCE, status=400).json
    assert "exists already" in error["message"]


def test_body_must_be_json(manager, portal):
    response = manager.post(
        f"{API}/@blog-sources",
        params=b"not json",
        headers={"Content-Type": "application/json"},
        status=400,
    )
    assert response.json["type"] == "BadRequest"


def test_patch_errors(manager, portal):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    error = manager.patch_json(f"{API}/@blog-sources/blog", {"id": "other"}, status=400).json
    assert "cannot change" in error["message"]
    error = manager.patch_json(f"{API}/@blog-sources/blog", {"scheme": "rot13"}, status=400).json
    assert "unknown webhook scheme" in error["message"]
    manager.patch_json(f"{API}/@blog-sources/nope", {"title": "x"}, status=404)
    error = manager.patch_json(f"{API}/@blog-sources/blog", {"poll_minutes": 5}, status=400).json
    assert "poll_minutes applies to feed sources only" in error["message"]
    portal._p_jar.sync()
    assert storage.get_source("blog", portal=portal).scheme == "ghost"


def test_patch_the_schedule(manager, portal):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    assert manager.get(f"{API}/@blog-sources/blog").json["sync_hours"] == 0.0
    patched = manager.patch_json(
        f"{API}/@blog-sources/blog", {"sync_hours": 6, "sync_max_posts": 50}, status=200
    ).json
    assert (patched["sync_hours"], patched["sync_max_posts"]) == (6.0, 50)
    portal._p_jar.sync()
    assert storage.get_source("blog", portal=portal).sync_interval == 6 * 3600


def test_unknown_paths(manager, portal):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    manager.get(f"{API}/@blog-sources/blog/extra", status=404)
    error = manager.post_json(f"{API}/@blog-sources/blog/explode", {}, status=404).json
    assert "unknown action 'explode'" in error["message"]


def test_test_and_backfill_actions_queue_tasks(manager, portal, queued):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    tested = manager.post(f"{API}/@blog-sources/blog/test", status=202).json
    assert tested == {"task": "task-1", "source": "blog", "action": "test"}
    backfill = manager.post(f"{API}/@blog-sources/blog/backfill", status=202).json
    assert backfill["task"] == "task-2"
    assert queued[0] == ("test", ("blog",), {})
    assert queued[1][0] == "backfill" and queued[1][1][0].id == "blog"
    manager.post(f"{API}/@blog-sources/nope/test", status=404)
    assert len(queued) == 2


def test_test_action_runs_in_a_worker_and_reports(manager, portal, monkeypatch, httpserver):
    """The real test task (eager: at commit) against a local Ghost Content API."""
    monkeypatch.delattr(importer.test_source, "delay")  # the real one again
    with open(DATA / "ghost_content_api_v2_posts_with_tags_authors.json", "rb") as posts:
        httpserver.expect_request("/ghost/api/content/posts/").respond_with_data(
            posts.read(), content_type="application/json"
        )
    source = {**SOURCE, "api_url": httpserver.url_for("/").rstrip("/"), "allow_private": True}
    manager.post_json(f"{API}/@blog-sources", source, status=201)
    task_id = manager.post(f"{API}/@blog-sources/blog/test", status=202).json["task"]
    report = manager.get(f"{API}/@blog-sources/blog/test/{task_id}").json
    assert report["state"] == "SUCCESS"
    assert report["result"]["ok"] is True
    assert report["source"] == "blog"
    manager.post_json(f"{API}/@blog-sources", {**source, "id": "other"}, status=201)
    manager.get(f"{API}/@blog-sources/other/test/{task_id}", status=404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "@blog-sources"),
        ("get", "@blog-sources/blog"),
        ("get", "@blog-deliveries"),
        ("delete", "@blog-sources/blog"),
    ],
)
@pytest.mark.parametrize("who", ["anonymous", "member"])
def test_managers_only(layers, manager, portal, method, path, who):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    auth = None if who == "anonymous" else (TEST_USER_NAME, TEST_USER_PASSWORD)
    other = client(layers, auth=auth)
    response = getattr(other, method)(f"{API}/{path}", status="*")
    assert response.status_int == 401
    assert "s3cret" not in response.text
    portal._p_jar.sync()
    assert storage.get_source("blog", portal=portal)


def test_managers_only_for_writes(layers, manager, portal):
    other = client(layers, auth=(TEST_USER_NAME, TEST_USER_PASSWORD))
    assert other.post_json(f"{API}/@blog-sources", SOURCE, status="*").status_int == 401
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    assert (
        other.patch_json(f"{API}/@blog-sources/blog", {"title": "x"}, status="*").status_int == 401
    )
    assert other.post(f"{API}/@blog-sources/blog/backfill", status="*").status_int == 401
    portal._p_jar.sync()
    assert storage.get_source("blog", portal=portal).title == "Blog"


def test_deliveries(layers, manager, portal, queued):
    manager.post_json(f"{API}/@blog-sources", SOURCE, status=201)
    manager.post_json(f"{API}/@blog-sources", {**SOURCE, "id": "other"}, status=201)
    anonymous = client(layers)
    body = b'{"post": {"current": {"id": "p1"}, "previous": {}}}'
    for source in ("blog", "other"):
        headers = {
            "Content-Type": "application/json",
            **sign(scheme="ghost", secret=SOURCE["secret"], body=body),
        }
        anonymous.post(f"/plone/@blog-webhook/{source}", params=body, headers=headers, status=202)
    listed = manager.get(f"{API}/@blog-deliveries").json
    assert [item["source_id"] for item in listed["items"]] == ["other", "blog"]
    assert listed["log_size"] == 2
    only = manager.get(f"{API}/@blog-deliveries", params={"source": "blog"}).json
    assert [item["source_id"] for item in only["items"]] == ["blog"]
    item = only["items"][0]
    assert item["status"] == "queued" and item["remote_id"] == "p1" and item["task_id"]
    assert manager.get(f"{API}/@blog-deliveries", params={"limit": "1"}).json["items_total"] == 1
    manager.get(f"{API}/@blog-deliveries", params={"source": "nope"}, status=404)
    manager.get(f"{API}/@blog-deliveries", params={"limit": "many"}, status=400)
    portal._p_jar.sync()
    assert deliveries.count(portal=portal) == 2


WEBSUB_SOURCE = {
    **SOURCE,
    "id": "feed",
    "kind": "feed",
    "api_url": "https://blog.example.org/feed.xml",
    "api_key": "",
    "scheme": "websub",
    "secret": "",
    "websub": True,
}


def test_websub_sources_subscribe_unsubscribe_and_show_their_state(manager, portal, queued):
    manager.post_json(f"{API}/@blog-sources", WEBSUB_SOURCE, status=201)
    assert queued == [("subscribe", ("feed",), {})]
    answer = manager.get(f"{API}/@blog-sources/feed").json
    assert answer["websub_state"]["status"] == "queued"
    # The worker asked, the hub verified (what restapi/webhook.py records).
    portal._p_jar.sync()
    hub, topic = "https://hub.example.org/", WEBSUB_SOURCE["api_url"]
    callback = "https://www.example.org/plone/@blog-webhook/feed"
    secret = subscriptions.request(
        "feed", mode="subscribe", hub=hub, topic=topic, callback=callback, portal=portal
    )
    subscriptions.verify("feed", mode="subscribe", topic=topic, lease_seconds=600, portal=portal)
    transaction.commit()
    answer = manager.get(f"{API}/@blog-sources/feed")
    state = answer.json["websub_state"]
    assert state["status"] == "subscribed" and state["hub"] == hub and state["expires"]
    assert secret not in answer.text
    panel = manager.get("/plone/@@plonecelery-sources")
    assert "WebSub: subscribed until" in panel.text and secret not in panel.text
    # GET output sent back unchanged: no new subscription.
    queued.clear()
    manager.patch_json(f"{API}/@blog-sources/feed", answer.json, status=200)
    assert queued == []
    # WebSub turned off (a manual subscription then needs its own secret): the hub gets an
    # unsubscribe; hub, topic and callback in the task's args.
    refused = manager.patch_json(f"{API}/@blog-sources/feed", {"websub": False}, status=400)
    assert "needs the webhook secret" in refused.json["message"]
    changes = {"websub": False, "secret": "manual-hub-secret"}
    manager.patch_json(f"{API}/@blog-sources/feed", changes, status=200)
    assert queued == [
        (
            "send",
            ("feed", "unsubscribe"),
            {"allow_private": False, "hub": hub, "topic": topic, "callback": callback},
        )
    ]
    portal._p_jar.sync()
    assert subscriptions.get("feed", portal=portal)["leaving"]["topic"] == topic
    # On again, then removed while nothing was verified: nothing to unsubscribe from.
    queued.clear()
    manager.patch_json(f"{API}/@blog-sources/feed", {"websub": True}, status=200)
    assert queued == [("subscribe", ("feed",), {})]


def test_removing_a_websub_source_unsubscribes(manager, portal, queued):
    manager.post_json(f"{API}/@blog-sources", WEBSUB_SOURCE, status=201)
    portal._p_jar.sync()
    hub, topic, callback = "https://hub.example.org/", WEBSUB_SOURCE["api_url"], "https://cb/x"
    subscriptions.request(
        "feed", mode="subscribe", hub=hub, topic=topic, callback=callback, portal=portal
    )
    transaction.commit()
    queued.clear()
    manager.delete(f"{API}/@blog-sources/feed", status=204)
    assert [call[:2] for call in queued] == [("send", ("feed", "unsubscribe"))]
    portal._p_jar.sync()
    state = subscriptions.get("feed", portal=portal)
    assert state["leaving"]["hub"] == hub and "pending" not in state
