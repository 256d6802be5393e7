"""Blog imports end to end: real ZEO, Plone site and worker; real HTTP servers as the blogs.

The blogs are pytest-httpserver instances in this process, on loopback, so every source sets
``allow_private=True`` (the SSRF guard refuses loopback otherwise). The worker reads them over
real sockets, retries with the real backoff (shortened below) and writes through ZEO; the
webhook test goes through a real Plone WSGI server.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
import transaction
from plone import api
from pytest_httpserver import HTTPServer
from werkzeug import Response

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.verify.signatures import sign
from collective.plonecelery.content.remote_post import INDEX
from collective.plonecelery.devtools.demo_blog import png_bytes

# Read by the worker (it inherits this environment when the session's harness starts it,
# after collection): retry delays of 0.25-0.5 s, 0.5-1 s, ... instead of 15-30 s, 30-60 s, ...
os.environ.setdefault("PLONECELERY_IMPORT_BACKOFF", "0.5")

pytestmark = pytest.mark.timeout(600)

DATA = Path(__file__).parent.parent / "unit" / "data"
TIMEOUT = 90
GHOST_KEY = "22444f78447824223cefc48062"
GHOST_SECRET = "ghost-webhook-secret"
PNG = png_bytes(rgb=(10, 120, 200))


def fixture(name):
    return json.loads((DATA / name).read_text())


def new_id() -> str:
    return uuid.uuid4().hex[:24]


def ghost_post(post_id: str, **changes) -> dict:
    post = copy.deepcopy(fixture("ghost_content_api_v2_posts_with_tags_authors.json")["posts"][0])
    post.update(id=post_id, url=f"https://demo.ghost.io/{post_id}/", **changes)
    return post


class GhostAPI:
    """A Ghost Content API on a real HTTP server; ``failures`` are answered first."""

    def __init__(self, server: HTTPServer):
        self.server = server
        self.posts: dict[str, dict] = {}
        self.failures: list[int] = []
        server.expect_request(
            re.compile(r"^/ghost/api/content/posts/([^/]+/)?$")
        ).respond_with_handler(self.read)
        server.expect_request("/content/images/lead.png").respond_with_data(
            PNG, content_type="image/png"
        )

    def read(self, request) -> Response:
        if request.args.get("key") != GHOST_KEY:
            return _json({"errors": [{"message": "Unknown Content API Key"}]}, 401)
        if self.failures:
            return _json({"errors": [{"message": "maintenance"}]}, self.failures.pop(0))
        wanted = request.args.get("filter", "")
        if wanted.startswith("id:"):  # one post, as the reader asks: 200, empty when gone
            post = self.posts.get(wanted[3:])
            return _json({"posts": [post] if post else [], "meta": {"pagination": {}}})
        post = self.posts.get(request.path.rstrip("/").rsplit("/", 1)[-1])
        if post is None:
            return _json({"errors": [{"message": "Resource not found"}]}, 404)
        return _json({"posts": [post]})

    def hits(self, post_id: str) -> int:
        return sum(
            1
            for request, _ in self.server.log
            if f"/posts/{post_id}/" in request.path or request.args.get("filter") == f"id:{post_id}"
        )


def _json(data, status=200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


@pytest.fixture
def ghost_api(httpserver):
    return GhostAPI(httpserver)


@pytest.fixture(scope="module")
def news(harness):
    """The target folder and the import user, once."""
    with harness.session(user="admin") as portal:
        if "news" not in portal:
            api.content.create(container=portal, type="Folder", id="news", title="News")
        importer.create_import_user(portal)
        transaction.commit()
    return "news"


def add_source(harness, news, **settings) -> SourceConfig:
    data = {
        "id": f"src-{uuid.uuid4().hex[:8]}",
        "title": "Blog",
        "kind": "ghost",
        "api_key": GHOST_KEY,
        "scheme": "ghost",
        "secret": GHOST_SECRET,
        "target": news,
        # The test blogs listen on loopback, which the SSRF guard refuses otherwise.
        "allow_private": True,
        **settings,
    }
    with harness.session(user="admin") as portal:
        config = storage.add_source(SourceConfig.from_dict(data), portal=portal)
        transaction.commit()
    return config


def queue(harness, config, remote_id, action="upsert"):
    """Queue import_post as the webhook endpoint would, from a Zope client; return ids."""
    delivery_id = f"e2e-{uuid.uuid4().hex}"
    with harness.session(user=None) as portal:  # the endpoint is anonymous
        deliveries.record(
            delivery_id=delivery_id,
            source_id=config.id,
            event="test",
            remote_id=remote_id,
            status="queued",
            portal=portal,
        )
        result = importer.queue_import(
            config, remote_id=remote_id, action=action, delivery_id=delivery_id
        )
        transaction.commit()
    return result, delivery_id


def delivery(harness, delivery_id) -> dict:
    with harness.session() as portal:
        return deliveries.get(delivery_id, portal=portal)


def item_state(harness, config, remote_id) -> list[dict]:
    """What the site holds for the post (read in a fresh connection)."""
    with harness.session() as portal:
        brains = portal.portal_catalog.unrestrictedSearchResults(
            **{INDEX: f"{config.id}:{remote_id}"}
        )
        found = []
        for brain in brains:
            obj = brain._unrestrictedGetObject()
            found.append(
                {
                    "path": brain.getPath(),
                    "title": obj.Title(),
                    "text": obj.text.raw if obj.text else None,
                    "state": api.content.get_state(obj=obj),
                    "owner": obj.getOwner().getId(),
                    "image": bytes(obj.image.data) if obj.image else None,
                    "subjects": obj.Subject(),
                    "remote_url": obj.remote_url,
                }
            )
        return found


def wait_for(predicate, *, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- imports queued from a Zope client ---------------------------------------------------------


def test_ghost_post_published_updated_and_retracted_by_the_worker(harness, news, ghost_api):
    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"))
    post_id = new_id()
    ghost_api.posts[post_id] = ghost_post(
        post_id,
        html='<p onclick="steal()">Hi<script>alert(1)</script></p>',
        feature_image=ghost_api.server.url_for("/content/images/lead.png"),
    )
    result, delivery_id = queue(harness, config, post_id)
    assert result.get(timeout=TIMEOUT)["status"] == "imported"
    [item] = item_state(harness, config, post_id)
    assert item["title"] == "Welcome"
    assert item["text"] == "<p>Hi</p>"
    assert item["state"] == "published"
    assert item["owner"] == importer.IMPORT_USER  # ran as the import user
    assert item["image"] == PNG
    assert item["subjects"] == ("Getting Started",)
    assert delivery(harness, delivery_id)["status"] == "imported"

    ghost_api.posts[post_id].update(title="Changed", updated_at="2030-01-01T00:00:00.000+00:00")
    result, _ = queue(harness, config, post_id)
    assert result.get(timeout=TIMEOUT)["status"] == "imported"
    [changed] = item_state(harness, config, post_id)
    assert (changed["path"], changed["title"]) == (item["path"], "Changed")

    del ghost_api.posts[post_id]
    result, delivery_id = queue(harness, config, post_id, "remove")
    assert result.get(timeout=TIMEOUT)["status"] == "removed"
    [retracted] = item_state(harness, config, post_id)
    assert retracted["state"] == "private"
    assert delivery(harness, delivery_id)["status"] == "removed"


def test_deleting_source_deletes_the_item(harness, news, ghost_api):
    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"), on_remove="delete")
    post_id = new_id()
    ghost_api.posts[post_id] = ghost_post(post_id)
    assert queue(harness, config, post_id)[0].get(timeout=TIMEOUT)["status"] == "imported"
    del ghost_api.posts[post_id]
    assert queue(harness, config, post_id, "remove")[0].get(timeout=TIMEOUT)["status"] == "removed"
    assert item_state(harness, config, post_id) == []


def test_wordpress_post_is_imported_by_the_worker(harness, news, httpserver):
    data = fixture("wp_rest_v2_post_embedded.json")
    data["id"] = 4711
    data["_embedded"]["wp:featuredmedia"][0]["source_url"] = httpserver.url_for("/up/f.png")
    httpserver.expect_request("/wp-json/wp/v2/posts/4711").respond_with_json(data)
    httpserver.expect_request("/up/f.png").respond_with_data(PNG, content_type="image/png")
    config = add_source(
        harness,
        news,
        kind="wordpress",
        api_url=httpserver.url_for("/"),
        api_key="",
        scheme="hmac-sha256-base64",
        secret="wp-secret",
    )
    result, _ = queue(harness, config, "4711")
    assert result.get(timeout=TIMEOUT)["status"] == "imported"
    [item] = item_state(harness, config, "4711")
    assert item["title"] == "Café “news”"
    assert "Updated post content." in item["text"] and "<script" not in item["text"]
    assert set(item["subjects"]) == {"Plone", "Rock & Roll"}
    assert item["image"] == PNG
    assert item["remote_url"] == data["link"]


# -- the blog API down, then up ----------------------------------------------------------------


def test_503_is_retried_by_the_worker_then_imported(harness, news, ghost_api):
    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"))
    post_id = new_id()
    ghost_api.posts[post_id] = ghost_post(post_id)
    ghost_api.failures = [503, 503]
    result, delivery_id = queue(harness, config, post_id)
    assert result.get(timeout=TIMEOUT)["status"] == "imported"
    assert ghost_api.hits(post_id) == 3
    assert len(item_state(harness, config, post_id)) == 1
    assert delivery(harness, delivery_id)["status"] == "imported"


def test_connection_refused_until_the_blog_starts_then_imported(harness, news):
    port = free_port()
    config = add_source(harness, news, api_url=f"http://127.0.0.1:{port}/")
    post_id = new_id()
    result, delivery_id = queue(harness, config, post_id)
    # The first attempt finds nobody listening and is scheduled for a retry...
    failed = wait_for(
        lambda: (delivery(harness, delivery_id) or {}).get("error"), what="a failed attempt"
    )
    assert re.search(r"attempt \d of 6 failed", failed) and "network error" in failed
    # ...then the blog comes up and the retry imports the post.
    server = HTTPServer(host="127.0.0.1", port=port)
    blog = GhostAPI(server)
    blog.posts[post_id] = ghost_post(post_id, title="After the outage")
    server.start()
    try:
        assert result.get(timeout=TIMEOUT)["status"] == "imported"
    finally:
        server.clear()
        server.stop()
    [item] = item_state(harness, config, post_id)
    assert item["title"] == "After the outage"
    assert delivery(harness, delivery_id)["status"] == "imported"


# -- a signed webhook through a real Plone server ------------------------------------------------


@pytest.mark.core
def test_signed_webhook_to_plone_is_imported_by_the_worker(harness, news, plone_http, ghost_api):
    from collective.plonecelery.app import app

    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"))
    post_id = new_id()
    # Another host: the webhook body and the API's image point there; nothing may fetch it.
    other = HTTPServer(host="127.0.0.1", port=0)
    other.expect_request(re.compile(".*")).respond_with_data(PNG, content_type="image/png")
    other.start()
    try:
        ghost_api.posts[post_id] = ghost_post(
            post_id, title="From the API", feature_image=other.url_for("/lead.png")
        )
        forged = {
            "id": post_id,
            "title": "From the webhook body",
            "html": "<script>alert(1)</script>",
            "url": other.url_for("/post/"),
            "feature_image": other.url_for("/forged.png"),
        }
        body = json.dumps({"post": {"current": forged, "previous": {}}}).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(sign(scheme="ghost", secret=GHOST_SECRET, body=body))
        url = f"{plone_http}/plone/++api++/@blog-webhook/{config.id}?event=post.published"
        started = time.monotonic()
        response = wait_for(
            lambda: _post_when_up(url, body, headers), timeout=120, what="Plone to answer"
        )
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["remote_id"] == post_id and answer["task"]
        assert time.monotonic() - started < 60
        outcome = app.AsyncResult(answer["task"]).get(timeout=TIMEOUT)
        assert outcome["status"] == "imported"
        assert "not allowed" in outcome["note"]  # the image on the other host was refused
        [item] = item_state(harness, config, post_id)
        assert item["title"] == "From the API"
        assert item["image"] is None
        assert item["remote_url"] == f"https://demo.ghost.io/{post_id}/"
        assert other.log == []  # neither the worker nor Plone fetched anything there
        assert delivery(harness, answer["delivery"])["status"] == "imported"
    finally:
        other.clear()
        other.stop()


def _post_when_up(url, body, headers):
    try:
        return httpx.post(url, content=body, headers=headers, timeout=30)
    except httpx.TransportError:
        return None  # the WSGI server is still starting


def test_demo_blog_and_its_curl_line_make_a_post_appear(harness, news, plone_http):
    """What ``make run`` and the README do: the demo blog, its source, the printed curl line."""
    from collective.plonecelery.app import app
    from collective.plonecelery.devtools import demo_blog as blog

    server = blog.serve(host="127.0.0.1", port=0)
    try:
        settings = blog.source_settings(
            blog_url=server.url,
            secret="demo-secret",
            target=news,
            source_id=f"demo-{uuid.uuid4().hex[:6]}",
        )
        with harness.session(user="admin") as portal:
            config = storage.add_source(storage.config_from_data(settings), portal=portal)
            transaction.commit()
        line = blog.curl_line(
            plone_url=f"{plone_http}/plone", source_id=config.id, secret="demo-secret"
        )
        words = shlex.split(line)
        headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
        body = words[words.index("--data-binary") + 1].encode()
        response = wait_for(
            lambda: _post_when_up(words[-1], body, headers), timeout=120, what="Plone to answer"
        )
        assert response.status_code == 202, response.text
        outcome = app.AsyncResult(response.json()["task"]).get(timeout=TIMEOUT)
        assert (outcome["status"], outcome["note"]) == ("imported", None)
        [item] = item_state(harness, config, blog.WELCOME_ID)
        assert item["title"] == "Welcome to the demo blog"
        assert item["state"] == "published"
        assert item["image"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.shutdown()


# -- Ghost's brute-force guard -------------------------------------------------------------------


class GuardedGhost:
    """A Ghost Content API with Ghost's brute-force guard: after ``limit`` consecutive 4xx
    on a key it answers 429 (Retry-After an hour and more) to that key. Ghost's limit is
    99; a smaller one keeps the test short and behaves the same."""

    def __init__(self, server: HTTPServer, *, limit: int = 5, blocked: bool = False):
        self.server = server
        self.limit = limit
        self.consecutive_4xx = limit if blocked else 0
        self.posts: dict[str, dict] = {}
        self.answered: list[int] = []
        server.expect_request(re.compile(r"^/ghost/api/content/posts/.*")).respond_with_handler(
            self.handle
        )

    def handle(self, request) -> Response:
        response = self._answer(request)
        self.answered.append(response.status_code)
        if 400 <= response.status_code < 500 and response.status_code != 429:
            self.consecutive_4xx += 1
        elif response.status_code < 400:
            self.consecutive_4xx = 0
        return response

    def _answer(self, request) -> Response:
        if self.consecutive_4xx >= self.limit:
            response = _json({"errors": [{"message": "Too many attempts."}]}, 429)
            response.headers["Retry-After"] = "3700"
            return response
        if request.args.get("key") != GHOST_KEY:
            return _json({"errors": [{"message": "Unknown Content API Key"}]}, 401)
        wanted = request.args.get("filter", "")
        if request.path.rstrip("/") == "/ghost/api/content/posts" and wanted.startswith("id:"):
            post = self.posts.get(wanted[3:])
            return _json({"posts": [post] if post else [], "meta": {"pagination": {}}})
        post = self.posts.get(request.path.rstrip("/").rsplit("/", 1)[-1])
        if post is None:
            return _json({"errors": [{"message": "Resource not found"}]}, 404)
        return _json({"posts": [post]})


def test_gone_posts_and_signed_removals_never_trip_ghosts_guard(
    harness, news, plone_http, httpserver
):
    from collective.plonecelery.app import app

    guarded = GuardedGhost(httpserver, limit=5)
    config = add_source(harness, news, api_url=httpserver.url_for("/"))
    # More gone posts than the guard allows 4xx: each is asked without a 4xx.
    for _ in range(guarded.limit + 2):
        result, _delivery = queue(harness, config, new_id())
        assert result.get(timeout=TIMEOUT)["status"] == "skipped"
    assert guarded.answered and set(guarded.answered) == {200}
    # A published post, then Ghost's signed post.deleted: removed without asking.
    post_id = new_id()
    guarded.posts[post_id] = ghost_post(post_id)
    assert queue(harness, config, post_id)[0].get(timeout=TIMEOUT)["status"] == "imported"
    asked = len(guarded.answered)
    body = json.dumps({"post": {"current": {}, "previous": {"id": post_id}}}).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(sign(scheme="ghost", secret=GHOST_SECRET, body=body))
    url = f"{plone_http}/plone/++api++/@blog-webhook/{config.id}?event=post.deleted"
    response = wait_for(lambda: _post_when_up(url, body, headers), what="Plone to answer")
    assert response.status_code == 202, response.text
    outcome = app.AsyncResult(response.json()["task"]).get(timeout=TIMEOUT)
    assert outcome["status"] == "removed"
    assert len(guarded.answered) == asked, "the removal was confirmed by a fetch"
    assert [item["state"] for item in item_state(harness, config, post_id)] == ["private"]


def test_a_blocked_key_pauses_the_source_instead_of_retrying(harness, news, httpserver):
    guarded = GuardedGhost(httpserver, blocked=True)
    config = add_source(harness, news, api_url=httpserver.url_for("/"))
    post_id = new_id()
    guarded.posts[post_id] = ghost_post(post_id)
    result, delivery_id = queue(harness, config, post_id)
    outcome = result.get(timeout=TIMEOUT)
    assert outcome["status"] == "paused"
    assert guarded.answered == [429], "retried into the block"
    entry = delivery(harness, delivery_id)
    assert entry["status"] == "queued"
    assert "paused until" in entry["error"] and "Retry-After 3700" in entry["error"]
    assert entry["task_id"] == outcome["task"]  # the import waits, queued for the end
    with harness.session() as portal:
        pause = storage.pause_info(config.id, portal=portal)
    assert pause is not None and "429" in pause["reason"]
    # Another post of the paused source: nothing is fetched, the import waits as well.
    result, delivery_id = queue(harness, config, new_id())
    assert result.get(timeout=TIMEOUT)["status"] == "paused"
    assert guarded.answered == [429]
