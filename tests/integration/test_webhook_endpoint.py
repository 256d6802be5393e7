"""The webhook endpoint over real HTTP: a Plone WSGI instance on ZEO, a real worker, httpx.

Sources are created through the REST API as a Manager. Their ``api_url`` points to a local
HTTP server (pytest-httpserver) that answers 404 to everything, so that the imports the
worker runs end quickly ("gone" posts); ``allow_private`` is set because that server is on
loopback. Webhooks are sent like real senders do: no ``Accept`` header.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import transaction
from plone import api
from pytest_httpserver import HTTPServer

from collective.plonecelery.blogs.verify.signatures import sign

pytestmark = pytest.mark.timeout(600)

RUN = uuid.uuid4().hex[:6]
TARGET = f"webhook-news-{RUN}"
IMPORT_USER = "plonecelery-importer"
GHOST_SECRET = "ghost-integration-secret"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WP_SECRET = "wp-integration-secret"
HUB_SECRET = "hub-integration-secret"
FINAL_STATUSES = {"imported", "skipped", "removed", "failed"}


def source_id(name: str) -> str:
    return f"w{RUN}-{name}"


@pytest.fixture(scope="module")
def blog_api():
    """A stand-in blog API that knows no post: every fetch is a 404."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request(re.compile(".*")).respond_with_json(
        {"errors": [{"message": "Resource not found", "type": "NotFoundError"}]}, status=404
    )
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture(scope="module")
def admin(harness, plone_http):
    with httpx.Client(
        base_url=f"{plone_http}/plone/++api++",
        auth=("admin", harness.admin_password),
        headers={"Accept": "application/json"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def sources(harness, admin, blog_api):
    """One source per signature scheme, created through POST @blog-sources."""
    with harness.session(user="admin") as portal:
        if TARGET not in portal:
            api.content.create(container=portal, type="Folder", id=TARGET, title="Webhook news")
        if portal.acl_users.getUserById(IMPORT_USER) is None:
            api.user.create(email="importer@example.org", username=IMPORT_USER)
        transaction.commit()
    base = blog_api.url_for("/").rstrip("/")
    common = {"target": TARGET, "allow_private": True, "import_user": IMPORT_USER}
    definitions = {
        "ghost": {
            "kind": "ghost",
            "api_url": base,
            "api_key": "0123456789abcdef01234567",
            "scheme": "ghost",
            "secret": GHOST_SECRET,
        },
        "std": {
            "kind": "ghost",
            "api_url": base,
            "api_key": "0123456789abcdef01234567",
            "scheme": "standard-webhooks",
            "secret": WHSEC,
        },
        "wp": {
            "kind": "wordpress",
            "api_url": base,
            "scheme": "hmac-sha256-base64",
            "header_name": "X-WP-Webhook-Signature",
            "secret": WP_SECRET,
        },
        "hub": {
            "kind": "feed",
            "api_url": f"{base}/feed.xml",
            "scheme": "websub",
            "secret": HUB_SECRET,
        },
    }
    created = {}
    for name, definition in definitions.items():
        data = {"id": source_id(name), "title": f"Source {name}", **common, **definition}
        response = admin.post("/@blog-sources", json=data)
        assert response.status_code == 201, response.text
        created[name] = response.json()
        assert created[name]["secret"] == {"set": True}
        assert definition["secret"] not in response.text
    return created


@pytest.fixture
def sender():
    """An HTTP client that sends no Accept header (Ghost sends none)."""
    with httpx.Client(timeout=60) as client:
        del client.headers["Accept"]
        yield client


def signed(name: str, *, body: bytes | None = None, **options) -> tuple[bytes, dict]:
    """A body (or ``body``) of source ``name``'s platform and the headers signing it.

    Each call makes a new body, hence a new delivery id.
    """
    unique = uuid.uuid4().int % 10**9
    bodies = {
        "ghost": {"post": {"current": {"id": f"p-{unique}"}, "previous": {}}},
        "std": {"type": "post.updated", "data": {"id": f"p-{unique}"}},
        "wp": {"post_id": unique, "post": {"ID": unique, "post_type": "post"}},
    }
    if body is None and name == "hub":
        # WebSub delivers the feed itself.
        body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>{unique}</title>'
        body = (body + "</channel></rss>").encode()
    elif body is None:
        body = json.dumps(bodies[name]).encode()
    scheme = {"ghost": "ghost", "std": "standard-webhooks", "wp": "hmac-sha256-base64"}.get(
        name, "websub"
    )
    secret = {"ghost": GHOST_SECRET, "std": WHSEC, "wp": WP_SECRET}.get(name, HUB_SECRET)
    headers = {
        "Content-Type": "application/json",
        **sign(scheme=scheme, secret=secret, body=body, **options),
    }
    if name == "hub":
        headers["Content-Type"] = "application/rss+xml"
    return body, headers


def url(plone_http: str, name: str, *, api_prefix: bool, query: str = "") -> str:
    prefix = "/plone/++api++" if api_prefix else "/plone"
    return f"{plone_http}{prefix}/@blog-webhook/{source_id(name)}{query}"


def log_of(admin, name: str) -> list[dict]:
    response = admin.get("/@blog-deliveries", params={"source": source_id(name), "limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def items_in_target(harness) -> int:
    with harness.session(user="admin") as portal:
        return len(portal[TARGET].objectIds())


# -- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_prefix", [True, False], ids=["++api++", "plain"])
@pytest.mark.parametrize("name", ["ghost", "std", "wp", "hub"])
def test_signed_delivery_without_accept_header_is_queued(
    plone_http, sources, admin, sender, name, api_prefix
):
    body, headers = signed(name)
    query = "?event=post.published" if name == "ghost" else ""
    started = time.monotonic()
    response = sender.post(
        url(plone_http, name, api_prefix=api_prefix, query=query), content=body, headers=headers
    )
    elapsed = time.monotonic() - started
    assert "accept" not in response.request.headers
    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["task"] and answer["delivery"]
    assert elapsed < 5, f"the endpoint took {elapsed:.2f} s"
    logged = {entry["delivery_id"]: entry for entry in log_of(admin, name)}
    assert logged[answer["delivery"]]["task_id"] == answer["task"]


def test_worker_picks_up_the_delivery(plone_http, sources, admin, sender):
    """The queued import runs in the worker and updates the delivery log (404: post gone)."""
    body, headers = signed("ghost")
    response = sender.post(
        url(plone_http, "ghost", api_prefix=False), content=body, headers=headers
    )
    assert response.status_code == 202, response.text
    delivery = response.json()["delivery"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = {e["delivery_id"]: e for e in log_of(admin, "ghost")}[delivery]
        if entry["status"] in FINAL_STATUSES:
            break
        time.sleep(0.5)
    assert entry["status"] in FINAL_STATUSES - {"failed"}, entry


def test_test_action_reports_what_the_worker_found(sources, admin):
    """POST .../test queues test_source; its result (the blog answers 404) is readable."""
    response = admin.post(f"/@blog-sources/{source_id('ghost')}/test")
    assert response.status_code == 202, response.text
    task_id = response.json()["task"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report = admin.get(f"/@blog-sources/{source_id('ghost')}/test/{task_id}").json()
        if report["state"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.5)
    assert report["state"] == "SUCCESS", report
    assert report["result"]["ok"] is False
    assert "404" in report["result"]["error"]


def test_duplicate_delivery(plone_http, sources, admin, sender):
    body, headers = signed("std", msg_id=f"msg_dup_{RUN}")
    first = sender.post(url(plone_http, "std", api_prefix=True), content=body, headers=headers)
    again = sender.post(url(plone_http, "std", api_prefix=False), content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["task"] == first.json()["task"]
    assert [e["delivery_id"] for e in log_of(admin, "std")].count(f"msg_dup_{RUN}") == 1


def test_unsupported_event_is_ignored(plone_http, sources, admin, sender):
    body, headers = signed("ghost")
    response = sender.post(
        url(plone_http, "ghost", api_prefix=False, query="?event=tag.added"),
        content=body,
        headers=headers,
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["ignored"] is True and answer["task"] is None
    entry = {e["delivery_id"]: e for e in log_of(admin, "ghost")}[answer["delivery"]]
    assert entry["status"] == "ignored"


def test_websub_verification_of_intent(plone_http, sources, sender):
    topic = sources["hub"]["api_url"]
    params = {"hub.mode": "subscribe", "hub.topic": topic, "hub.challenge": "ch-4242"}
    response = sender.get(url(plone_http, "hub", api_prefix=False), params=params)
    assert response.status_code == 200
    assert response.text == "ch-4242"
    params["hub.topic"] = "https://elsewhere.example/feed"
    refused = sender.get(url(plone_http, "hub", api_prefix=False), params=params)
    assert refused.status_code == 404
    assert refused.json()["type"] == "NotSubscribed"


# -- refused: JSON error, nothing written ---------------------------------------------------------


def _stale(name):
    return signed(name, now=time.time() - 3600)


def _wrong_secret(name):
    body, _ = signed(name)
    return body, {
        "Content-Type": "application/json",
        **sign(scheme="ghost", secret="wrong", body=body),
    }


def _unsigned(name):
    body, headers = signed(name)
    return body, {"Content-Type": "application/json"}


def _malformed(name):
    return signed(name, body=b'{"post": ')


def _huge(name):
    return signed(name, body=b'{"post": "' + b"x" * (1024 * 1024 + 10) + b'"}')


@pytest.mark.parametrize(
    ("make", "status", "error_type", "name"),
    [
        (_wrong_secret, 401, "SignatureInvalid", "ghost"),
        (_unsigned, 401, "SignatureMissing", "ghost"),
        (_stale, 401, "SignatureStale", "ghost"),
        (_stale, 401, "SignatureStale", "std"),
        (_malformed, 400, "MalformedPayload", "ghost"),
        (_huge, 413, "PayloadTooLarge", "ghost"),
        (_wrong_secret, 404, "UnknownSource", "nope"),
    ],
    ids=[
        "wrong-secret",
        "unsigned",
        "stale-ghost",
        "stale-standard",
        "malformed",
        "huge",
        "unknown",
    ],
)
@pytest.mark.parametrize("api_prefix", [True, False], ids=["++api++", "plain"])
def test_refused_with_json_error_and_nothing_written(
    harness, plone_http, sources, admin, sender, make, status, error_type, name, api_prefix
):
    before_log = admin.get("/@blog-deliveries").json()["log_size"]
    before_items = items_in_target(harness)
    body, headers = make(name if name != "nope" else "ghost")
    response = sender.post(
        url(plone_http, name, api_prefix=api_prefix), content=body, headers=headers
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["type"] == error_type
    assert error["message"]
    assert GHOST_SECRET not in response.text
    assert admin.get("/@blog-deliveries").json()["log_size"] == before_log
    assert items_in_target(harness) == before_items


# -- concurrency ----------------------------------------------------------------------------------


def test_twenty_concurrent_deliveries(plone_http, sources, admin):
    count = 20
    ids = [f"msg_{RUN}_concurrent_{number}" for number in range(count)]

    def deliver(msg_id):
        body = json.dumps({"type": "post.updated", "data": {"id": msg_id}}).encode()
        headers = {
            "Content-Type": "application/json",
            **sign(scheme="standard-webhooks", secret=WHSEC, body=body, msg_id=msg_id),
        }
        with httpx.Client(timeout=120) as client:
            del client.headers["Accept"]
            started = time.monotonic()
            response = client.post(
                url(plone_http, "std", api_prefix=True), content=body, headers=headers
            )
            return response.status_code, response.text, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(deliver, ids))
    statuses = [status for status, _text, _elapsed in results]
    assert statuses == [202] * count, [text for status, text, _ in results if status != 202]
    logged = {entry["delivery_id"]: entry for entry in log_of(admin, "std")}
    assert set(ids) <= set(logged)
    assert all(logged[msg_id]["task_id"] for msg_id in ids)
    durations = sorted(elapsed for _status, _text, elapsed in results)
    print(f"20 concurrent: median {durations[count // 2]:.3f} s, max {durations[-1]:.3f} s")


# -- duplicates ------------------------------------------------------------------------------------


def test_the_same_body_for_three_events_is_three_deliveries(plone_http, sources, admin, sender):
    """WP Webhooks' docs example: post_create, post_update, post_trash with one body."""
    body, headers = signed("wp")
    answers = []
    for event in ("post_create", "post_update", "post_trash"):
        response = sender.post(
            url(plone_http, "wp", api_prefix=False, query=f"?event={event}"),
            content=body,
            headers=headers,
        )
        assert response.status_code == 202, response.text
        answers.append(response.json())
    assert [answer["action"] for answer in answers] == ["upsert", "upsert", "remove"]
    assert len({answer["task"] for answer in answers}) == 3
    # A retry of the last one, seconds later, is a duplicate.
    retry = sender.post(
        url(plone_http, "wp", api_prefix=False, query="?event=post_trash"),
        content=body,
        headers=headers,
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["duplicate"] is True
    assert retry.json()["task"] == answers[-1]["task"]


def test_the_same_delivery_on_many_threads_at_once_is_accepted_once(plone_http, sources, admin):
    """Zope's four threads receive the same request at once: one import is queued."""
    body, headers = signed("wp")
    target = url(plone_http, "wp", api_prefix=True, query="?event=post_update")
    count = 8

    def deliver(_number):
        with httpx.Client(timeout=120) as client:
            del client.headers["Accept"]
            response = client.post(target, content=body, headers=headers)
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(deliver, range(count)))
    statuses = sorted(status for status, _answer in results)
    assert statuses == [200] * (count - 1) + [202], results
    tasks = {answer["task"] for _status, answer in results}
    assert len(tasks) == 1
    delivery = results[0][1]["delivery"]
    assert [e["delivery_id"] for e in log_of(admin, "wp")].count(delivery) == 1


def test_wp_webhooks_form_encoded_whole_post(plone_http, sources, admin, sender):
    """WP Webhooks with form data: PHP's http_build_query() of the whole post, signed."""
    from urllib.parse import urlencode

    unique = uuid.uuid4().int % 10**9
    fields = {
        "post_id": unique,
        "post[ID]": unique,
        "post[post_type]": "post",
        "post[post_title]": "Fish & Chips",
        "post[post_status]": "trash",
        "post_meta[key_0][0]": "0.00",
        "taxonomies[category][news][name]": "News",
        "post_thumbnail": "https://wp.example.org/a.jpg",
    }
    body = urlencode(fields).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **sign(scheme="hmac-sha256-base64", secret=WP_SECRET, body=body),
    }
    response = sender.post(
        url(plone_http, "wp", api_prefix=False, query="?event=post_trash"),
        content=body,
        headers=headers,
    )
    assert response.status_code == 202, response.text
    assert response.json()["action"] == "remove"
    assert response.json()["remote_id"] == str(unique)
