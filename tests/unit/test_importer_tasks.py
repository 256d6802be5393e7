"""The import tasks in a Plone site, against a real HTTP server standing in for the blogs.

Tasks run eagerly at commit (PLONECELERY_EAGER_FUNCTIONAL_TESTING), each in a thread with its
own connection and transaction, as the source's import user, exactly as in a worker (eager
retries run at once, without their countdown). The blog APIs are a pytest-httpserver on
127.0.0.1, so the sources set ``allow_private=True``: the SSRF guard refuses loopback otherwise.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import time
import types
from pathlib import Path

import pytest
import transaction
from plone import api
from werkzeug import Response

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.importer import tasks as importer_tasks
from collective.plonecelery.content.remote_post import BEHAVIOR
from collective.plonecelery.content.remote_post import INDEX
from collective.plonecelery.content.remote_post import IRemotePost
from collective.plonecelery.devtools.demo_blog import png_bytes

pytestmark = pytest.mark.timeout(900)

DATA = Path(__file__).parent / "data"
GHOST_KEY = "22444f78447824223cefc48062"
POST_ID = "5c7ece47da174000c0c5c6d7"
USER = importer.IMPORT_USER
PNG = png_bytes(rgb=(200, 40, 40))
UTC = datetime.UTC


def fixture(name):
    return json.loads((DATA / name).read_text())


# -- the Plone layer, set up once for this module ----------------------------------------------


@pytest.fixture
def portal(layers):
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    try:
        with api.env.adopt_roles(["Manager"]):
            # plone.app.testing sites have no workflow; imports publish and retract.
            portal.portal_workflow.setChainForPortalTypes(
                ["News Item"], "simple_publication_workflow"
            )
            api.content.create(container=portal, type="Folder", id="news", title="News")
            importer.create_import_user(portal)
        transaction.commit()
        yield portal
    finally:
        transaction.abort()
        for layer in reversed(layers):
            layer.testTearDown()


# -- blogs on a real HTTP server -----------------------------------------------------------------


class FakeGhost:
    """A Ghost Content API whose posts the test changes between deliveries."""

    def __init__(self, httpserver):
        self.server = httpserver
        self.posts: dict[str, dict] = {}
        #: Statuses answered (one per request) before the real answer, e.g. [503, 503].
        self.failures: list[tuple[int, dict]] = []
        httpserver.expect_request(
            re.compile(r"^/ghost/api/content/posts/[^/]+/$")
        ).respond_with_handler(self.read)
        httpserver.expect_request("/ghost/api/content/posts/").respond_with_handler(self.browse)
        httpserver.expect_request("/content/images/feature.png").respond_with_data(
            PNG, content_type="image/png"
        )

    def add(self, post: dict) -> dict:
        self.posts[post["id"]] = post
        return post

    def read(self, request) -> Response:
        if request.args.get("key") != GHOST_KEY:
            return _json({"errors": [{"message": "Unknown Content API Key"}]}, status=401)
        if self.failures:
            status, headers = self.failures.pop(0)
            body = {"errors": [{"message": f"try again later ({status})"}]}
            return _json(body, status=status, headers=headers)
        post_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        if post_id not in self.posts:
            return _json({"errors": [{"message": "Resource not found error"}]}, status=404)
        return _json({"posts": [self.posts[post_id]]})

    def browse(self, request) -> Response:
        if request.args.get("key") != GHOST_KEY:
            return _json({"errors": [{"message": "Unknown Content API Key"}]}, status=401)
        wanted = request.args.get("filter", "")
        if wanted.startswith("id:"):  # how the reader asks for one post
            if self.failures:
                status, headers = self.failures.pop(0)
                body = {"errors": [{"message": f"try again later ({status})"}]}
                return _json(body, status=status, headers=headers)
            post = self.posts.get(wanted[3:])
            return _json({"posts": [post] if post else [], "meta": {"pagination": {}}})
        limit = 2
        page = int(request.args.get("page", "1"))
        posts = list(self.posts.values())
        pages = max(1, -(-len(posts) // limit))
        chunk = posts[(page - 1) * limit : page * limit]
        meta = {"pagination": {"page": page, "pages": pages, "total": len(posts)}}
        meta["pagination"]["next"] = page + 1 if page < pages else None
        return _json({"posts": chunk, "meta": meta})

    def requests_for(self, post_id: str) -> int:
        return sum(
            1
            for request, _ in self.server.log
            if request.path.endswith(f"/posts/{post_id}/")
            or request.args.get("filter") == f"id:{post_id}"
        )

    def image_url(self) -> str:
        return self.server.url_for("/content/images/feature.png")


def _json(data, *, status=200, headers=None) -> Response:
    return Response(
        json.dumps(data), status=status, headers=headers or {}, content_type="application/json"
    )


@pytest.fixture
def blog(httpserver):
    return FakeGhost(httpserver)


def ghost_post(**changes) -> dict:
    post = copy.deepcopy(fixture("ghost_content_api_v2_posts_with_tags_authors.json")["posts"][0])
    post.update(changes)
    return post


def add_source(portal, httpserver, **overrides) -> SourceConfig:
    data = {
        "id": "ghost",
        "title": "Ghost blog",
        "kind": "ghost",
        "api_url": httpserver.url_for("/"),
        "api_key": GHOST_KEY,
        "scheme": "ghost",
        "secret": "ghost-webhook-secret",
        "target": "news",
        # The test blog listens on 127.0.0.1, which the SSRF guard refuses otherwise.
        "allow_private": True,
    }
    data.update(overrides)
    with api.env.adopt_roles(["Manager"]):
        config = storage.add_source(SourceConfig.from_dict(data), portal=portal)
    transaction.commit()
    return config


@pytest.fixture
def ghost(portal, httpserver):
    return add_source(portal, httpserver)


def deliver(config, remote_id, action="upsert", *, delivery_id=None):
    """What the webhook endpoint does (record, queue), then wait for the import to end.

    Returns ``(result, delivery log entry)``.
    """
    delivery_id = delivery_id or f"d-{remote_id}-{action}-{datetime.datetime.now().timestamp()}"
    deliveries.record(
        delivery_id=delivery_id,
        source_id=config.id,
        event="test",
        remote_id=remote_id,
        status="queued",
    )
    result = importer.queue_import(
        config, remote_id=remote_id, action=action, delivery_id=delivery_id
    )
    transaction.commit()  # the task runs now
    result.get(timeout=60, propagate=False)
    transaction.begin()  # see what the task committed
    return result, deliveries.get(delivery_id)


def items(portal, config, remote_id):
    catalog = portal.portal_catalog
    key = f"{config.id}:{remote_id}"
    return [
        brain._unrestrictedGetObject()
        for brain in catalog.unrestrictedSearchResults(**{INDEX: key})
    ]


def allowed_roles(portal, item):
    catalog = portal.portal_catalog
    rid = catalog.getrid("/".join(item.getPhysicalPath()))
    return catalog.getIndexDataForRID(rid)["allowedRolesAndUsers"]


def only_item(portal, config, remote_id):
    found = items(portal, config, remote_id)
    assert len(found) == 1, found
    return found[0]


# -- publish, update, skip ---------------------------------------------------------------------


def test_published_ghost_post_becomes_a_news_item(portal, ghost, blog):
    blog.add(ghost_post(feature_image=blog.image_url()))
    result, delivery = deliver(ghost, POST_ID, delivery_id="d-1")
    assert result.state == "SUCCESS", result.result
    assert delivery["status"] == "imported"
    assert delivery["error"] is None
    assert result.result["status"] == "imported"
    item = only_item(portal, ghost, POST_ID)
    assert item.portal_type == "News Item"
    assert item.aq_parent.getPhysicalPath() == ("", "plone", "news")
    assert item.getId() == "welcome-short"
    assert item.Title() == "Welcome"
    assert item.Description() == "Welcome, it's great to have you here."
    assert item.text.raw == "<p>👋 Welcome, it's great to have you here.</p>"
    assert item.text.outputMimeType == "text/x-html-safe"
    assert item.Subject() == ("Getting Started",)
    assert item.listCreators() == ("Ghost",)
    assert item.effective().ISO8601() == "2012-11-27T15:30:00+00:00"
    assert item.modified().ISO8601() == "2019-03-26T19:45:31+00:00"
    remote = IRemotePost(item)
    assert remote.remote_source == "ghost"
    assert remote.remote_id == POST_ID
    assert remote.remote_url == "https://demo.ghost.io/welcome-short/"
    assert remote.remote_modified == datetime.datetime(2019, 3, 26, 19, 45, 31, tzinfo=UTC)
    assert api.content.get_state(obj=item) == "published"
    assert "Anonymous" in allowed_roles(portal, item)
    assert item.getOwner().getId() == USER
    # The lead image was downloaded from the blog's own host.
    assert item.image.data == PNG
    assert item.image.contentType == "image/png"
    assert item.image.filename == "feature.png"
    assert BEHAVIOR in portal.portal_types["News Item"].behaviors
    # Catalogued with the imported values (the 'modified' index too).
    brain = api.content.find(UID=item.UID())[0]
    assert brain.Title == "Welcome"
    assert brain.modified.ISO8601() == "2019-03-26T19:45:31+00:00"


def test_update_changes_the_same_item(portal, ghost, blog):
    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    uid = only_item(portal, ghost, POST_ID).UID()
    blog.add(
        ghost_post(
            title="Welcome back",
            html="<p>New text</p>",
            updated_at="2019-04-01T10:00:00.000+00:00",
            tags=[{"name": "News"}],
        )
    )
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported"
    item = only_item(portal, ghost, POST_ID)
    assert item.UID() == uid
    assert item.Title() == "Welcome back"
    assert item.text.raw == "<p>New text</p>"
    assert item.Subject() == ("News",)
    assert IRemotePost(item).remote_modified == datetime.datetime(2019, 4, 1, 10, tzinfo=UTC)
    assert uid == api.content.find(SearchableText="Welcome back")[0].UID


def test_redelivery_and_older_versions_are_skipped(portal, ghost, blog):
    blog.add(ghost_post(title="Current", updated_at="2019-04-01T10:00:00.000+00:00"))
    deliver(ghost, POST_ID)
    # The same delivery again: nothing changed on the blog.
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "skipped"
    assert result.result["note"] == "not newer than the imported version"
    # The API answering an older version (a stale cache) does not roll the item back.
    blog.add(ghost_post(title="Older", updated_at="2019-03-01T10:00:00.000+00:00"))
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "skipped"
    assert only_item(portal, ghost, POST_ID).Title() == "Current"


def test_update_arriving_before_the_create_still_gives_one_correct_item(portal, ghost, blog):
    # The post was published and then edited; the 'edited' webhook is processed first.
    blog.add(ghost_post(title="Edited", updated_at="2019-04-01T10:00:00.000+00:00"))
    _, edited = deliver(ghost, POST_ID, delivery_id="edited")
    _, published = deliver(ghost, POST_ID, delivery_id="published")
    assert (edited["status"], published["status"]) == ("imported", "skipped")
    item = only_item(portal, ghost, POST_ID)
    assert item.Title() == "Edited"
    assert api.content.get_state(obj=item) == "published"


def test_two_imports_of_one_post_in_one_transaction_give_one_item(portal, ghost, blog):
    blog.add(ghost_post())
    first = importer.queue_import(ghost, remote_id=POST_ID, action="upsert", delivery_id="a")
    second = importer.queue_import(ghost, remote_id=POST_ID, action="upsert", delivery_id="b")
    transaction.commit()
    assert first.get(timeout=60)["status"] == "imported"
    assert second.get(timeout=60)["status"] == "skipped"
    transaction.begin()
    assert len(items(portal, ghost, POST_ID)) == 1
    assert len(portal["news"].objectIds()) == 1


# -- unpublish, delete, 404 ----------------------------------------------------------------------


def test_unpublished_post_is_retracted_and_comes_back_when_republished(portal, ghost, blog):
    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    uid = only_item(portal, ghost, POST_ID).UID()
    del blog.posts[POST_ID]  # the Content API answers 404 for drafts
    result, delivery = deliver(ghost, POST_ID, "remove")
    assert delivery["status"] == "removed"
    item = only_item(portal, ghost, POST_ID)
    assert api.content.get_state(obj=item) == "private"
    # Anonymous visitors no longer find it.
    assert "Anonymous" not in allowed_roles(portal, item)
    blog.add(ghost_post(updated_at="2019-05-01T10:00:00.000+00:00"))
    _, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported"
    item = only_item(portal, ghost, POST_ID)
    assert item.UID() == uid
    assert api.content.get_state(obj=item) == "published"


def test_republished_post_without_changes_is_published_again(portal, ghost, blog):
    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    del blog.posts[POST_ID]
    deliver(ghost, POST_ID, "remove")
    blog.add(ghost_post())  # same updated_at as the imported version
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported"
    assert api.content.get_state(obj=only_item(portal, ghost, POST_ID)) == "published"


def test_removal_on_a_source_set_to_delete_deletes_the_item(portal, httpserver, blog):
    config = add_source(portal, httpserver, id="ghost-del", on_remove="delete")
    blog.add(ghost_post())
    deliver(config, POST_ID)
    path = only_item(portal, config, POST_ID).getPhysicalPath()
    del blog.posts[POST_ID]
    result, delivery = deliver(config, POST_ID, "remove")
    assert delivery["status"] == "removed"
    assert result.result["path"] == "/".join(path)
    assert items(portal, config, POST_ID) == []
    assert "welcome-short" not in portal["news"]


def test_a_gone_post_on_an_update_is_treated_as_unpublished(portal, ghost, blog):
    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    del blog.posts[POST_ID]
    # An 'edited' webhook, but the post is gone by the time the worker fetches it.
    result, delivery = deliver(ghost, POST_ID, "upsert")
    assert delivery["status"] == "removed"
    assert "publishes no post" in delivery["error"]
    # Asked without a 4xx (Ghost's brute-force guard counts those).
    assert all(response.status_code == 200 for _request, response in blog.server.log)
    assert api.content.get_state(obj=only_item(portal, ghost, POST_ID)) == "private"


def test_removal_webhook_for_a_post_the_api_still_publishes_keeps_it(portal, ghost, blog):
    # The API has the last word: a stale or forged 'deleted' does not retract a live post.
    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    _, delivery = deliver(ghost, POST_ID, "remove")
    assert delivery["status"] == "skipped"
    assert api.content.get_state(obj=only_item(portal, ghost, POST_ID)) == "published"


def test_404_for_a_post_never_imported_is_skipped(portal, ghost, blog):
    result, delivery = deliver(ghost, "000000000000000000000000", "remove")
    assert delivery["status"] == "skipped"
    assert portal["news"].objectIds() == []


# -- Ghost's brute-force guard: no 4xx for a gone post, pause on a long 429 ---------------------


def deliver_shown_gone(config, remote_id, *, as_of=None):
    delivery_id = f"gone-{remote_id}-{datetime.datetime.now().timestamp()}"
    deliveries.record(
        delivery_id=delivery_id,
        source_id=config.id,
        event="post.deleted",
        remote_id=remote_id,
        status="queued",
    )
    result = importer.queue_import(
        config,
        remote_id=remote_id,
        action="remove",
        delivery_id=delivery_id,
        shown_gone=True,
        as_of=as_of,
    )
    transaction.commit()
    result.get(timeout=60, propagate=False)
    transaction.begin()
    return result, deliveries.get(delivery_id, source_id=config.id)


def test_a_removal_the_signed_body_shows_is_not_fetched(portal, ghost, blog):
    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    before = blog.requests_for(POST_ID)
    _, delivery = deliver_shown_gone(ghost, POST_ID)
    assert delivery["status"] == "removed"
    assert "not fetched" in delivery["error"]
    assert blog.requests_for(POST_ID) == before
    assert api.content.get_state(obj=only_item(portal, ghost, POST_ID)) == "private"


def test_an_unpublish_older_than_the_imported_version_keeps_the_item(portal, ghost, blog):
    blog.add(ghost_post(updated_at="2024-05-01T10:00:00.000+00:00"))
    deliver(ghost, POST_ID)
    _, delivery = deliver_shown_gone(ghost, POST_ID, as_of="2024-04-30T10:00:00.000Z")
    assert delivery["status"] == "skipped"
    assert api.content.get_state(obj=only_item(portal, ghost, POST_ID)) == "published"
    _, delivery = deliver_shown_gone(ghost, POST_ID, as_of="2024-05-02T10:00:00.000Z")
    assert delivery["status"] == "removed"


@pytest.fixture
def deferred(monkeypatch):
    """Imports queued again for later (with a countdown) are noted, not run at once."""
    calls = []
    original = importer_tasks.import_post.apply_async

    def apply_async(*args, **kwargs):
        if "countdown" in kwargs:
            calls.append(kwargs)
            return types.SimpleNamespace(id=f"deferred-{len(calls)}")
        return original(*args, **kwargs)

    monkeypatch.setattr(importer_tasks.import_post, "apply_async", apply_async)
    return calls


def test_a_long_429_pauses_the_source_instead_of_retrying_into_it(portal, ghost, blog, deferred):
    blog.add(ghost_post())
    blog.failures = [(429, {"Retry-After": "3700"})] * 10
    result, delivery = deliver(ghost, POST_ID)
    assert result.state == "SUCCESS"
    assert result.result["status"] == "paused"
    assert blog.requests_for(POST_ID) == 1, "retried into Ghost's block"
    # The delivery log says why, and the import waits (one task, an hour later at most).
    assert delivery["status"] == "queued"
    assert "paused until" in delivery["error"] and "429" in delivery["error"]
    assert delivery["task_id"] == "deferred-1"
    assert [call["kwargs"]["deferrals"] for call in deferred] == [1]
    assert 3600 - 1 <= deferred[0]["countdown"] <= importer.MAX_BACKOFF
    pause = storage.pause_info(ghost.id)
    assert pause is not None and "Retry-After 3700" in pause["reason"]
    # While paused, other imports of the source fetch nothing and wait too.
    other = "5c7ece47da174000c0c5c6d8"
    result, delivery = deliver(ghost, other)
    assert result.result["status"] == "paused"
    assert blog.requests_for(other) == 0
    assert len(deferred) == 2


def test_a_short_429_is_retried_as_before(portal, ghost, blog, deferred):
    blog.add(ghost_post())
    blog.failures = [(429, {"Retry-After": "2"})]
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported"
    assert deferred == [] and storage.pause_info(ghost.id) is None


def test_an_import_that_waited_too_often_fails(portal, ghost, blog, deferred, monkeypatch):
    storage.pause_source(ghost.id, until=time.time() + 3600, reason="test")
    transaction.commit()
    result = importer.import_post.apply_async(
        args=(ghost.id, POST_ID, "upsert"),
        kwargs={"deferrals": importer_tasks.MAX_DEFERRALS},
        run_as=ghost.import_user,
    )
    transaction.commit()
    result.get(timeout=60, propagate=False)
    assert result.state == "FAILURE"
    assert "gave up" in str(result.result)


# -- retries and failures ------------------------------------------------------------------------


def test_5xx_is_retried_then_imported(portal, ghost, blog, monkeypatch):
    delays = []
    original = importer_tasks.backoff_seconds

    def recording_backoff(retries, *, retry_after=None):
        delays.append((retries, retry_after))
        return original(retries, retry_after=retry_after)

    monkeypatch.setattr(importer_tasks, "backoff_seconds", recording_backoff)
    blog.add(ghost_post())
    blog.failures = [(503, {}), (429, {"Retry-After": "7"})]
    result, delivery = deliver(ghost, POST_ID)
    assert result.state == "SUCCESS"
    assert delivery["status"] == "imported"
    assert blog.requests_for(POST_ID) == 3
    # Retry number, and the server's Retry-After honoured on the 429.
    assert delays == [(0, None), (1, 7.0)]
    assert len(items(portal, ghost, POST_ID)) == 1


def test_api_down_for_good_fails_after_max_retries(portal, ghost, blog):
    blog.add(ghost_post())
    blog.failures = [(502, {})] * 10
    result, delivery = deliver(ghost, POST_ID)
    assert result.state == "FAILURE"
    assert isinstance(result.result, importer.ImportFailed)
    assert "HTTP 502" in str(result.result)
    assert blog.requests_for(POST_ID) == importer.MAX_RETRIES + 1
    assert delivery["status"] == "failed"
    assert "502" in delivery["error"] and "try again later" in delivery["error"]
    assert items(portal, ghost, POST_ID) == []


def test_client_error_fails_at_once_with_the_api_message(portal, httpserver, blog):
    config = add_source(portal, httpserver, id="badkey", api_key="0" * 26)
    blog.add(ghost_post())
    result, delivery = deliver(config, POST_ID)
    assert result.state == "FAILURE"
    assert blog.requests_for(POST_ID) == 1
    assert delivery["status"] == "failed"
    assert "HTTP 401" in delivery["error"] and "Unknown Content API Key" in delivery["error"]
    assert "0000" not in delivery["error"]  # the key stays out of the log


def test_network_error_is_retried(portal, httpserver, blog):
    # A port nobody listens on: connection refused on every attempt.
    config = add_source(portal, httpserver, id="down", api_url="http://127.0.0.1:9/")
    result, delivery = deliver(config, POST_ID)
    assert result.state == "FAILURE"
    assert delivery["status"] == "failed"
    assert "network error" in delivery["error"]


def test_unknown_source_fails(portal, ghost):
    config = SourceConfig.from_dict({**ghost.to_dict(include_secrets=True), "id": "gone"})
    result, delivery = deliver(config, POST_ID)
    assert result.state == "FAILURE"
    assert "no blog source with id 'gone'" in delivery["error"]


def test_import_user_without_rights_on_the_folder_fails_with_a_hint(portal, ghost, blog):
    with api.env.adopt_roles(["Manager"]):
        portal["news"].manage_delLocalRoles([USER])
    transaction.commit()
    blog.add(ghost_post())
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "failed"
    assert "Contributor" in delivery["error"]
    assert portal["news"].objectIds() == []


# -- content safety ------------------------------------------------------------------------------


def test_hostile_html_is_stripped(portal, ghost, blog):
    blog.add(ghost_post(html=(DATA / "hostile.html").read_text()))
    _, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported"
    item = only_item(portal, ghost, POST_ID)
    stored, shown = item.text.raw, item.text.output
    for text in (stored, shown):
        assert "<script" not in text and "document.cookie" not in text
        assert "onclick" not in text and "onerror" not in text and "onload" not in text
        assert "javascript:" not in text
        assert "evil.example.com" not in text
        assert "<form" not in text and "<style" not in text
    assert "https://www.youtube.com/embed/dQw4w9WgXcQ" in stored
    assert "<blockquote>Quote</blockquote>" in stored


def test_feature_image_on_a_foreign_host_is_refused_and_the_post_imported(portal, ghost, blog):
    # The fixture's image is on casper.ghost.org, neither the API host nor a CDN host.
    blog.add(ghost_post())
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported"
    assert "imported without lead image" in delivery["error"]
    assert "casper.ghost.org" in delivery["error"] and "not allowed" in delivery["error"]
    item = only_item(portal, ghost, POST_ID)
    assert item.image is None
    assert item.Title() == "Welcome"


def test_feature_image_on_a_configured_cdn_host_is_fetched(portal, httpserver, blog):
    # 'localhost' is the test server under another name: a CDN origin of the source.
    config = add_source(
        portal,
        httpserver,
        id="cdn",
        api_url=f"http://127.0.0.1:{httpserver.port}/",
        cdn_hosts=[f"http://localhost:{httpserver.port}"],
    )
    blog.add(
        ghost_post(feature_image=f"http://localhost:{httpserver.port}/content/images/feature.png")
    )
    _, delivery = deliver(config, POST_ID)
    assert (delivery["status"], delivery["error"]) == ("imported", None)
    assert only_item(portal, config, POST_ID).image.data == PNG


# -- WordPress and feeds -------------------------------------------------------------------------


def test_wordpress_post_is_imported(portal, httpserver):
    data = fixture("wp_rest_v2_post_embedded.json")
    data["_embedded"]["wp:featuredmedia"][0]["source_url"] = httpserver.url_for("/up/a.png")
    httpserver.expect_request("/wp-json/wp/v2/posts/4").respond_with_json(data)
    httpserver.expect_request("/up/a.png").respond_with_data(PNG, content_type="image/png")
    config = add_source(
        portal,
        httpserver,
        id="wp",
        kind="wordpress",
        api_key="",
        scheme="hmac-sha256-base64",
        secret="wp-secret",
    )
    result, delivery = deliver(config, "4")
    assert delivery["status"] == "imported", delivery
    item = only_item(portal, config, "4")
    assert item.Title() == "Café “news”"
    assert item.Description() == "REST API Client Fixture: Post"
    assert "Updated post content." in item.text.raw
    assert "onerror" not in item.text.raw and "<script" not in item.text.raw
    assert set(item.Subject()) == {"Plone", "Rock & Roll"}
    assert item.listCreators() == ("Wendy Press",)
    assert item.effective().ISO8601() == "2017-02-14T00:00:00+00:00"
    assert IRemotePost(item).remote_url == data["link"]
    assert item.image.data == PNG


def test_feed_entries_are_imported_and_reimport_skips_them(portal, httpserver):
    httpserver.expect_request("/feed.json").respond_with_data(
        (DATA / "json_feed_1_1.json").read_bytes(), content_type="application/feed+json"
    )
    config = add_source(
        portal,
        httpserver,
        id="feed",
        kind="feed",
        api_key="",
        api_url=httpserver.url_for("/feed.json"),
        scheme="websub",
        secret="hub",
    )
    result, delivery = deliver(config, None)
    assert delivery["status"] == "imported"
    assert result.result["note"].startswith("2 of 2 entries imported")
    second = only_item(portal, config, "2")
    assert second.Title() == "Second item"
    assert second.Subject() == ("json", "feeds")
    assert second.listCreators() == ("Jay Son",)
    assert second.image is None  # cdn.example.org is not a host of this source
    first = only_item(portal, config, "1")
    assert first.listCreators() != ("old@example.org",)  # e-mail addresses are not authors
    _, delivery = deliver(config, None)
    assert delivery["status"] == "skipped"


# -- backfill, test, import user -----------------------------------------------------------------


def test_backfill_imports_every_page(portal, ghost, blog):
    for n in range(5):
        blog.add(ghost_post(id=f"{n:024x}", title=f"Post {n}", url=f"https://demo.ghost.io/p{n}/"))
    result = importer.queue_backfill(ghost, run="run1")
    transaction.commit()
    assert result.get(timeout=120) == {"run": "run1", "page": 1, "queued": 2, "next_page": 2}
    transaction.begin()
    titles = sorted(obj.Title() for obj in portal["news"].objectValues())
    assert titles == [f"Post {n}" for n in range(5)]
    log = {entry["delivery_id"]: entry for entry in deliveries.list_deliveries(source_id="ghost")}
    for page in (1, 2, 3):
        assert log[f"backfill:ghost:run1:{page}"]["status"] == "imported"
    assert log[f"backfill:ghost:run1:1:{0:024x}"]["status"] == "imported"
    assert log[f"backfill:ghost:run1:3:{4:024x}"]["remote_id"] == f"{4:024x}"
    assert len(log) == 3 + 5
    # Each page reported its progress; whose run it is (the import user it runs as) is in
    # its task id, no owner record written; the run reads as finished from the delivery log.
    from collective.plonecelery.blogs import backfills
    from collective.plonecelery.progress import owner_id
    from collective.plonecelery.taskids import is_owner

    assert is_owner(result.id, user=ghost.import_user, site="/plone")
    assert result.backend.get_task_meta(owner_id(result.id))["status"] == "PENDING"
    [run] = backfills.summarize(source_id="ghost")
    assert (run["run"], run["pages"], run["total"], run["done"], run["running"]) == (
        "run1",
        3,
        5,
        5,
        False,
    )


def test_backfill_of_a_feed_refetches_it_once(portal, httpserver):
    httpserver.expect_request("/feed.json").respond_with_data(
        (DATA / "json_feed_1_1.json").read_bytes(), content_type="application/feed+json"
    )
    config = add_source(
        portal,
        httpserver,
        id="feed",
        kind="feed",
        api_key="",
        api_url=httpserver.url_for("/feed.json"),
        scheme="websub",
        secret="hub",
    )
    result = importer.queue_backfill(config, run="r")
    transaction.commit()
    assert result.get(timeout=60) == {"run": "r", "page": 1, "queued": 1, "next_page": None}
    transaction.begin()
    assert sorted(obj.Title() for obj in portal["news"].objectValues()) == [
        "First item",
        "Second item",
    ]
    assert deliveries.get("backfill:feed:r:1:feed")["status"] == "imported"
    assert len(httpserver.log) == 1


def test_source_without_transition_leaves_items_in_their_initial_state(portal, httpserver, blog):
    config = add_source(portal, httpserver, id="drafts", transition="")
    blog.add(ghost_post())
    _, delivery = deliver(config, POST_ID)
    assert delivery["status"] == "imported"
    assert api.content.get_state(obj=only_item(portal, config, POST_ID)) == "private"


def test_test_source_reports_a_sample_or_the_error(portal, ghost, blog, httpserver):
    blog.add(ghost_post())
    result = importer.test_source.delay("ghost")
    transaction.commit()
    answer = result.get(timeout=60)
    assert answer["ok"] is True
    assert answer["sample"]["remote_id"] == POST_ID
    config = add_source(portal, httpserver, id="badkey", api_key="0" * 26)
    result = importer.test_source.delay(config.id)
    transaction.commit()
    answer = result.get(timeout=60)
    assert answer["ok"] is False
    assert "Unknown Content API Key" in answer["error"]


def test_import_user_is_a_plain_member(portal):
    user = api.user.get(userid=USER)
    assert user is not None
    assert set(api.user.get_roles(user=user)) == {"Member", "Authenticated"}
    assert importer.create_import_user(portal) is False  # exists already


def test_queue_import_refuses_bad_arguments(portal, ghost):
    with pytest.raises(ValueError, match="action must be one of"):
        importer.queue_import(ghost, remote_id=POST_ID, action="delete")
    with pytest.raises(ValueError, match="remote_id is required"):
        importer.queue_import(ghost, remote_id=None, action="upsert")


# -- Volto blocks ----------------------------------------------------------------------------


def enable_blocks(portal):
    fti = portal.portal_types["News Item"]
    with api.env.adopt_roles(["Manager"]):
        fti.manage_changeProperties(behaviors=(*fti.behaviors, "volto.blocks"))
    transaction.commit()


def block_texts(item) -> list:
    return [item.blocks[block_id].get("plaintext") for block_id in item.blocks_layout["items"]]


def test_volto_blocks_on_writes_text_and_blocks_and_replaces_the_blocks(portal, httpserver, blog):
    enable_blocks(portal)  # a type with both fields, on a site without plone.volto
    config = add_source(portal, httpserver, volto_blocks="on")
    blog.add(ghost_post(html="<h2>Hello</h2><p>One</p><p>Two</p>"))
    deliver(config, POST_ID)
    item = only_item(portal, config, POST_ID)
    assert item.text.raw == "<h2>Hello</h2><p>One</p><p>Two</p>"
    assert block_texts(item) == [None, "Hello", "One", "Two"]
    ids = item.blocks_layout["items"]
    blog.add(ghost_post(html="<p>Only</p>", updated_at="2019-04-01T10:00:00.000+00:00"))
    deliver(config, POST_ID)
    item = only_item(portal, config, POST_ID)
    assert item.text.raw == "<p>Only</p>"
    assert block_texts(item) == [None, "Only"]
    assert item.blocks_layout["items"] == ids[:2] and len(item.blocks) == 2
    assert item.UID() == api.content.find(SearchableText="Only")[0].UID


def test_volto_blocks_auto_writes_none_without_plone_volto(portal, httpserver, blog):
    enable_blocks(portal)
    config = add_source(portal, httpserver)
    blog.add(ghost_post(feature_image=None))
    result, delivery = deliver(config, POST_ID)
    assert (delivery["status"], result.result["note"]) == ("imported", None)
    assert only_item(portal, config, POST_ID).blocks == {}  # the field's default


def test_volto_blocks_on_for_a_type_without_blocks_says_so(portal, httpserver, blog):
    config = add_source(portal, httpserver, volto_blocks="on")
    blog.add(ghost_post(feature_image=None))
    result, _ = deliver(config, POST_ID)
    assert result.result["note"] == (
        "imported without Volto blocks: News Item lacks the volto.blocks behavior"
    )


# -- images of the body, kept in Plone ---------------------------------------------------------


def serve_image(httpserver, path: str, *, content_type: str = "image/png", data: bytes = PNG):
    httpserver.expect_request(path).respond_with_data(data, content_type=content_type)
    return httpserver.url_for(path)


def image_requests(httpserver, path: str) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


def test_body_images_are_downloaded_into_plone_and_linked_by_uid(portal, ghost, blog, httpserver):
    first = serve_image(httpserver, "/content/images/one.png")
    second = serve_image(httpserver, "/content/images/two.png", data=png_bytes(rgb=(1, 2, 3)))
    svg = serve_image(httpserver, "/content/images/bad.svg", content_type="image/svg+xml")
    elsewhere = "http://127.0.0.1:1/other-port.png"  # same host, another port: refused
    html = (
        f'<p>One <img src="{first}" alt="first"></p><figure><img src="{second}"></figure>'
        f'<p><img src="{svg}"><img src="{elsewhere}"></p>'
    )
    blog.add(ghost_post(html=html))
    result, delivery = deliver(ghost, POST_ID)
    assert delivery["status"] == "imported", delivery
    item = only_item(portal, ghost, POST_ID)
    folder = portal["news"]["images"][f"ghost-{POST_ID}"]
    images = {obj.plonecelery_source_url: obj for obj in folder.objectValues()}
    assert sorted(images) == sorted([first, second])
    assert images[first].image.data == PNG and images[first].image.contentType == "image/png"
    text = item.text.raw
    for url in (first, second):
        assert f'src="resolveuid/{images[url].UID()}/@@images/image"' in text
        assert url not in text
    # Refused images stay on the blog, with a note saying why.
    assert svg in text and elsewhere in text
    note = result.result["note"]
    assert "image/svg+xml" in note and "other-port.png" in note
    # Shown to anonymous visitors: the folders are published; rendered through resolveuid.
    assert api.content.get_state(obj=folder, default="published") == "published"
    assert images[first].absolute_url() + "/@@images/image" in item.text.output_relative_to(item)

    # The blog drops one image: it is deleted here; the other is not downloaded again.
    blog.add(ghost_post(html=f'<p><img src="{first}"></p>', updated_at="2030-01-01T00:00:00.000Z"))
    deliver(ghost, POST_ID)
    assert sorted(o.plonecelery_source_url for o in folder.objectValues()) == [first]
    assert image_requests(httpserver, "/content/images/one.png") == 1


def test_a_deleted_post_takes_its_images_with_it(portal, httpserver, blog):
    config = add_source(portal, httpserver, id="ghost-img-del", on_remove="delete")
    url = serve_image(httpserver, "/content/images/gone.png")
    blog.add(ghost_post(html=f'<p><img src="{url}"></p>'))
    deliver(config, POST_ID)
    assert f"ghost-img-del-{POST_ID}" in portal["news"]["images"]
    del blog.posts[POST_ID]
    deliver(config, POST_ID, "remove")
    assert f"ghost-img-del-{POST_ID}" not in portal["news"]["images"]


# -- Ghost pages -----------------------------------------------------------------------------


def test_ghost_pages_become_documents_from_the_pages_endpoint(portal, httpserver, blog):
    pages: dict[str, dict] = {}

    def browse_pages(request) -> Response:
        wanted = request.args.get("filter", "").removeprefix("id:")
        page = pages.get(wanted)
        return _json({"pages": [page] if page else [], "meta": {"pagination": {}}})

    httpserver.expect_request("/ghost/api/content/pages/").respond_with_handler(browse_pages)
    config = add_source(portal, httpserver, id="ghost-pages", ghost_pages=True)
    pages[POST_ID] = ghost_post(title="About us")
    result, delivery = deliver(config, f"page:{POST_ID}")
    assert delivery["status"] == "imported", result.result
    page = only_item(portal, config, f"page:{POST_ID}")
    assert (page.portal_type, page.Title()) == ("Document", "About us")
    assert items(portal, config, POST_ID) == []  # not mistaken for the post with that id
    asked = {request.path for request, _ in httpserver.log}
    assert asked == {"/ghost/api/content/pages/"}  # never the posts endpoint
    del pages[POST_ID]
    result, delivery = deliver(config, f"page:{POST_ID}", "remove")
    assert delivery["status"] == "removed"


# -- scheduled re-sync -------------------------------------------------------------------------


def test_resync_imports_what_is_missing_or_newer_and_at_most_sync_max_posts(
    portal, httpserver, blog
):
    config = add_source(portal, httpserver, id="ghost-sync", sync_hours=1.0, sync_max_posts=3)
    ids = [f"{n:024x}" for n in range(1, 5)]
    for post_id in ids:
        blog.add(ghost_post(id=post_id, slug=f"post-{post_id[-1]}"))
    deliver(config, ids[0])  # announced by a webhook: up to date

    def run(name):
        result = importer.tasks.queue_resync(config, run=name)
        transaction.commit()
        outcome = result.get(timeout=60, propagate=False)
        transaction.begin()
        return outcome, deliveries.get(f"sync:{config.id}:{name}")

    outcome, entry = run("r1")
    assert entry["event"] == "sync"
    assert entry["error"] == "read 3 of the newest posts, queued 2 missing or changed"
    assert [bool(items(portal, config, post_id)) for post_id in ids] == [True, True, True, False]
    assert deliveries.get(f"sync:{config.id}:r1:{ids[1]}")["status"] == "imported"
    outcome, entry = run("r2")
    assert (entry["status"], entry["error"]) == (
        "skipped",
        "read 3 of the newest posts, queued 0 missing or changed",
    )
    storage.pause_source(config.id, until=2e9, reason="HTTP 429")
    outcome, entry = run("r3")
    assert entry["error"] == "source paused (HTTP 429); not read"
