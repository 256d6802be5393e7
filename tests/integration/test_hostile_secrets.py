"""Secrets stay secret through whole imports (issue 9, at scale).

Known, unique secret values (a Ghost webhook secret and Content API key, a WordPress webhook
secret and application password) go into two sources, a third one subscribes to a real WebSub
hub (websub_hub.py) with the secret the worker makes for it; signed webhooks go to a real Plone
WSGI server, the real worker imports from real HTTP blogs (pytest-httpserver) that check the key
and the Basic credentials; one import fails for good (a dead letter) with a blog that echoes
the request's query string into its error message. Then every place an operator or another
user can read is searched for every secret, in the forms it travels in (as is, URL-quoted,
base64 of ``user:password``): the worker and instance logs (every file of the log directory),
the result backend and the broker (their SQLite files: task args, results, tracebacks), the
dead letters (``plonecelery deadletters list/show``), the answers of the webhook endpoint, of
``@blog-sources`` and ``@blog-deliveries``, and the control panel's HTML.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from urllib.parse import quote
from urllib.parse import quote_plus

import httpx
import pytest
from conftest import BROKER
from conftest import plonecelery_cli
from hostile_support import admin_client
from hostile_support import tally
from pytest_httpserver import HTTPServer
from test_import_e2e import fixture
from test_import_e2e import ghost_post
from test_import_e2e import new_id
from test_import_e2e import wait_for
from websub_hub import Hub
from werkzeug import Response

from collective.plonecelery.blogs.verify.signatures import sign

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        BROKER != "sqlite", reason="the SQLite run covers it (its files are greppable)"
    ),
]

RUN = uuid.uuid4().hex[:6]
GHOST_WEBHOOK_SECRET = f"ghost-webhook-{secrets.token_hex(12)}"
GHOST_KEY = secrets.token_hex(13)  # 26 hex digits, like Ghost's
WP_WEBHOOK_SECRET = f"wp-webhook-{secrets.token_hex(12)}"
WP_USER = "editor"
WP_APP_PASSWORD = " ".join(secrets.token_hex(2) for _ in range(6))  # 'abcd efgh ...'
SECRETS = {
    "ghost webhook secret": GHOST_WEBHOOK_SECRET,
    "ghost content api key": GHOST_KEY,
    "wordpress webhook secret": WP_WEBHOOK_SECRET,
    "wordpress application password": WP_APP_PASSWORD,
}
BASIC = base64.b64encode(f"{WP_USER}:{WP_APP_PASSWORD}".encode()).decode()
WP_ID = 4711
FAILING_ID = "f" * 24


def forms(value: str) -> set[str]:
    """The spellings a secret travels in."""
    return {value, quote(value, safe=""), quote_plus(value), value.replace(" ", "")}


NEEDLES = {f"{name} ({form!r})": form for name, value in SECRETS.items() for form in forms(value)}
NEEDLES["wordpress basic credentials"] = BASIC


def leaks(where: str, text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [f"{name} in {where}" for name, needle in NEEDLES.items() if needle.encode() in data]


class Blogs:
    """A Ghost Content API and a WordPress REST API on one real HTTP server."""

    def __init__(self, server: HTTPServer):
        self.server = server
        self.ghost_posts: dict[str, dict] = {}
        server.expect_request(re.compile(r"^/ghost/api/content/posts/.*")).respond_with_handler(
            self.ghost
        )
        server.expect_request(f"/wp-json/wp/v2/posts/{WP_ID}").respond_with_handler(self.wp)

    def ghost(self, request) -> Response:
        if request.args.get("key") != GHOST_KEY:
            return _json({"errors": [{"message": "Unknown Content API Key"}]}, 401)
        wanted = request.args.get("filter", "")[3:]
        if wanted == FAILING_ID:
            # A hostile (or just careless) blog echoes the whole request into its error.
            echoed = request.full_path
            return _json({"errors": [{"message": f"Forbidden: {echoed}"}]}, 403)
        post = self.ghost_posts.get(wanted)
        return _json({"posts": [post] if post else [], "meta": {"pagination": {}}})

    def wp(self, request) -> Response:
        if request.headers.get("Authorization") != f"Basic {BASIC}":
            return _json({"code": "rest_forbidden", "message": "Sorry"}, 401)
        data = fixture("wp_rest_v2_post_embedded.json")
        data["id"] = WP_ID
        data["_embedded"].pop("wp:featuredmedia", None)
        return _json(data)


def _json(data, status=200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


@pytest.fixture(scope="module")
def blogs():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield Blogs(server)
    server.clear()
    server.stop()


@pytest.fixture(scope="module")
def admin(harness, plone_http):
    with admin_client(harness, plone_http) as client:
        yield client


@pytest.fixture(scope="module")
def hub(blogs):
    """A real WebSub hub (websub_hub.py) and a feed on the blogs' server that names it."""
    hub = Hub(lease_seconds=600).start()
    feed_url = blogs.server.url_for("/websub.atom")
    blogs.server.expect_request("/websub.atom").respond_with_data(
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>S</title>'
        f'<id>urn:s</id><link rel="hub" href="{hub.url}"/><link rel="self" href="{feed_url}"/>'
        "<entry><id>tag:s,1</id><title>Pushed</title><updated>2024-05-01T09:00:00Z</updated>"
        '<content type="html">&lt;p&gt;P&lt;/p&gt;</content></entry></feed>',
        content_type="application/atom+xml",
    )
    hub.feed_url = feed_url
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def sources(harness, admin, blogs, hub):
    import transaction
    from plone import api

    from collective.plonecelery.blogs import importer

    target = f"secrets-{RUN}"
    with harness.session(user="admin") as portal:
        api.content.create(container=portal, type="Folder", id=target, title="Secrets")
        importer.create_import_user(portal)
        transaction.commit()
    api_url = blogs.server.url_for("/")
    definitions = {
        "ghost": {
            "kind": "ghost",
            "api_key": GHOST_KEY,
            "scheme": "ghost",
            "secret": GHOST_WEBHOOK_SECRET,
        },
        "wp": {
            "kind": "wordpress",
            "scheme": "hmac-sha256-base64",
            "secret": WP_WEBHOOK_SECRET,
            "username": WP_USER,
            "app_password": WP_APP_PASSWORD,
            "insecure": True,  # the test blog is plain http
        },
        # The worker subscribes to the hub with a secret of its own (test_websub.py).
        "websub": {"kind": "feed", "scheme": "websub", "websub": True, "api_url": hub.feed_url},
    }
    ids = {}
    for name, definition in definitions.items():
        data = {
            "id": f"sec{RUN}-{name}",
            "title": name,
            "target": target,
            "allow_private": True,
            "api_url": api_url,
            **definition,
        }
        response = admin.post("/@blog-sources", json=data)
        assert response.status_code == 201, response.text
        assert not leaks("the POST answer", response.text)
        ids[name] = data["id"]
    return ids


def webhook(plone_http, source_id: str, body: bytes, headers: dict) -> httpx.Response:
    # Ghost names no event but in the URL; WordPress bodies without one are upserts.
    event = "?event=post.published" if source_id.endswith("-ghost") else ""
    url = f"{plone_http}/plone/++api++/@blog-webhook/{source_id}{event}"
    return httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers})


def test_no_secret_anywhere_after_imports(harness, plone_http, admin, blogs, hub, sources):
    from collective.plonecelery.app import app

    answers = []
    post_id = new_id()
    blogs.ghost_posts[post_id] = ghost_post(post_id, title="Secret-free")
    outcomes = {}
    for name, remote_id in (("ghost", post_id), ("ghost", FAILING_ID), ("wp", str(WP_ID))):
        if name == "ghost":
            body = json.dumps({"post": {"current": {"id": remote_id}, "previous": {}}}).encode()
            headers = sign(scheme="ghost", secret=GHOST_WEBHOOK_SECRET, body=body)
        else:
            body = json.dumps({"post_id": int(remote_id)}).encode()
            headers = sign(scheme="hmac-sha256-base64", secret=WP_WEBHOOK_SECRET, body=body)
        response = webhook(plone_http, sources[name], body, headers)
        assert response.status_code == 202, response.text
        answers.append(response.text)
        try:
            outcomes[remote_id] = app.AsyncResult(response.json()["task"]).get(timeout=120)
        except Exception as exc:  # the failing import: a dead letter
            outcomes[remote_id] = repr(exc)
    for remote_id in (post_id, str(WP_ID)):
        assert isinstance(outcomes[remote_id], dict), outcomes
        assert outcomes[remote_id]["status"] == "imported", outcomes
    assert "403" in outcomes[FAILING_ID], outcomes

    dead = wait_for(
        lambda: (
            FAILING_ID in plonecelery_cli(harness, "deadletters", "list")
            and plonecelery_cli(harness, "deadletters", "list")
        ),
        timeout=60,
        what="the dead letter",
    )
    # The WebSub source: subscribed by the worker, the hub publishes with the secret it got.
    wait_for(lambda: hub.subscriptions, timeout=60, what="the WebSub subscription")
    feed = httpx.get(hub.feed_url).content
    assert hub.publish(hub.feed_url, feed, content_type="application/atom+xml") == [202]
    assert hub.secrets
    for number, value in enumerate(dict.fromkeys(hub.secrets)):
        for form in forms(value):
            NEEDLES[f"websub subscription secret {number} ({form!r})"] = form
    places: dict[str, str | bytes] = {"webhook answers": "\n".join(answers), "dead letters": dead}
    for line in dead.splitlines():
        words = line.split()
        if words and FAILING_ID in line:
            places[f"deadletters show {words[0]}"] = plonecelery_cli(
                harness, "deadletters", "show", words[0]
            )
    for path in sorted(harness.log_dir.iterdir()):
        places[f"log {path.name}"] = path.read_bytes()
    for path in sorted(harness.base_dir.glob("*.sqlite")):
        places[f"sqlite {path.name}"] = path.read_bytes()
    for path in ("/@blog-sources", *(f"/@blog-sources/{i}" for i in sources.values())):
        places[f"GET {path}"] = admin.get(path).text
    for query in ("", *(f"?source={i}" for i in sources.values())):
        places[f"GET /@blog-deliveries{query}"] = admin.get(f"/@blog-deliveries{query}").text
    with httpx.Client(auth=("admin", harness.admin_password), timeout=60) as client:
        panel = client.get(f"{plone_http}/plone/@@plonecelery-sources")
        assert panel.status_code == 200
        places["control panel HTML"] = panel.text

    found = [leak for where, text in places.items() for leak in leaks(where, text)]
    tally("secrets: places searched", inputs=len(places) * len(NEEDLES))
    # Controls: the searched places are the real ones (the import ran, the key was used).
    assert any(b"HTTP Request: GET" in t for w, t in places.items() if w.startswith("log worker"))
    assert any(request.args.get("key") == GHOST_KEY for request, _ in blogs.server.log)
    assert not found, "\n".join(found)
