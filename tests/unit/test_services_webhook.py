"""The webhook endpoint in a Plone site (plone.app.testing, requests through the real publisher).

Tasks run eagerly at commit (PLONECELERY_EAGER_FUNCTIONAL_TESTING). The importer's
``queue_import`` is replaced by one queuing ``fake_import``, a real task that notes its calls:
an error answer must leave no delivery, no task and no ZODB transaction behind.
"""

from __future__ import annotations

import io
import json
import time
import types

import pytest
import transaction
import webtest
from AccessControl.SecurityManagement import getSecurityManager
from plone import api
from plone.testing._z2_testbrowser import Zope2Caller

from collective.plonecelery import task
from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs import subscriptions
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.verify.signatures import sign
from collective.plonecelery.exceptions import ServiceError
from collective.plonecelery.restapi import webhook as services

pytestmark = pytest.mark.timeout(900)

GHOST_SECRET = "ghost-webhook-secret"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WP_SECRET = "wp-webhooks-secret"
HUB_SECRET = "hub-secret"
IMPORT_USER = "plonecelery-importer"
BLOG_URL = "https://blog.example.org"
FEED_URL = "https://blog.example.org/feed.xml"

CALLS: list[dict] = []


@task()
def fake_import(source_id, remote_id, action, delivery_id=None, **extra):
    """Stands in for importer.import_post: notes who ran it with what."""
    CALLS.append(
        {
            "source_id": source_id,
            "remote_id": remote_id,
            "action": action,
            "delivery_id": delivery_id,
            "user": getSecurityManager().getUser().getId(),
            **extra,
        }
    )
    return "done"


def fake_queue_import(config, *, remote_id, action, delivery_id=None, **extra):
    return fake_import.apply_async(
        args=(config.id, remote_id, action),
        kwargs={"delivery_id": delivery_id, **extra},
        run_as=config.import_user,
    )


# -- the Plone layer, set up once for this module ----------------------------------------------


@pytest.fixture
def portal(layers, monkeypatch):
    for layer in layers:
        layer.testSetUp()
    CALLS.clear()
    monkeypatch.setattr(importer, "queue_import", fake_queue_import)
    portal = layers[-1]["portal"]
    try:
        yield portal
    finally:
        for layer in reversed(layers):
            layer.testTearDown()


@pytest.fixture
def app(layers, portal):
    """A WebTest client on the Zope publisher; sends no Accept header unless told."""
    caller = Zope2Caller(types.SimpleNamespace(handleErrors=True), layers[-1]["app"])
    return webtest.TestApp(caller)


def make_source(portal, **overrides) -> SourceConfig:
    with api.env.adopt_roles(["Manager"]):
        if "news" not in portal:
            api.content.create(container=portal, type="Folder", id="news", title="News")
        if api.user.get(userid=IMPORT_USER) is None:
            api.user.create(email="importer@example.org", username=IMPORT_USER)
        data = {
            "id": "ghost",
            "title": "Ghost blog",
            "kind": "ghost",
            "api_url": "https://blog.example.org",
            "api_key": "22444f78447824223cefc48062",
            "scheme": "ghost",
            "secret": GHOST_SECRET,
            "target": "news",
        }
        data.update(overrides)
        config = storage.add_source(SourceConfig.from_dict(data), portal=portal)
    transaction.commit()
    return config


GHOST_BODY = json.dumps(
    {"post": {"current": {"id": "5c7ece47da174000c0c5c6d7", "title": "Hello"}, "previous": {}}}
).encode()


def last_tid(portal):
    return portal._p_jar.db().lastTransaction()


def post(app, url, body, headers, *, status):
    headers = {"Content-Type": "application/json", **headers}
    return app.post(url, params=body, headers=headers, status=status)


# -- accepted deliveries -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/plone/++api++", "/plone"])
def test_ghost_webhook_without_accept_header_is_queued(app, portal, prefix):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY)
    response = post(
        app, f"{prefix}/@blog-webhook/ghost?event=post.published", GHOST_BODY, headers, status=202
    )
    assert "Accept" not in response.request.headers
    assert response.content_type == "application/json"
    answer = response.json
    assert answer["task"] and answer["delivery"]
    assert answer["action"] == "upsert"
    assert answer["remote_id"] == "5c7ece47da174000c0c5c6d7"
    # The task ran at commit, as the source's import user, with what the body named.
    assert [
        {
            "source_id": "ghost",
            "remote_id": "5c7ece47da174000c0c5c6d7",
            "action": "upsert",
            "delivery_id": answer["delivery"],
            "user": IMPORT_USER,
        }
    ] == CALLS
    entry = deliveries.get(answer["delivery"], portal=portal)
    assert entry["status"] == "queued"
    assert entry["task_id"] == answer["task"]
    assert entry["event"] == "post.published"


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html"])
def test_any_accept_header_reaches_the_endpoint(app, portal, accept):
    make_source(portal)
    headers = {"Accept": accept, **sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY)}
    response = post(app, "/plone/@blog-webhook/ghost", GHOST_BODY, headers, status=202)
    assert response.json["task"]
    assert len(CALLS) == 1


def test_standard_webhooks_delivery(app, portal):
    make_source(portal, id="std", scheme="standard-webhooks", secret=WHSEC)
    body = b'{"type": "post.deleted", "data": {"id": "abc"}}'
    headers = sign(scheme="standard-webhooks", secret=WHSEC, body=body, msg_id="msg_1")
    answer = post(app, "/plone/++api++/@blog-webhook/std", body, headers, status=202).json
    assert answer["delivery"] == "msg_1"
    assert answer["action"] == "remove"
    assert [call["remote_id"] for call in CALLS] == ["abc"]


def test_wordpress_hmac_base64_with_renamed_header(app, portal):
    make_source(
        portal,
        id="wp",
        kind="wordpress",
        api_key="",
        scheme="hmac-sha256-base64",
        header_name="X-WC-Webhook-Signature",
        secret=WP_SECRET,
    )
    body = b'{"post_id": 42, "post": {"ID": 42, "post_type": "post"}}'
    headers = sign(
        scheme="hmac-sha256-base64",
        secret=WP_SECRET,
        body=body,
        header_name="X-WC-Webhook-Signature",
    )
    answer = post(app, "/plone/@blog-webhook/wp?event=post_update", body, headers, status=202).json
    assert answer["remote_id"] == "42"
    assert CALLS[0]["action"] == "upsert"


def test_websub_feed_delivery_refetches_the_feed(app, portal):
    make_source(
        portal,
        id="feed",
        kind="feed",
        api_key="",
        api_url="https://blog.example.org/feed.xml",
        scheme="websub",
        secret=HUB_SECRET,
    )
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>B</title></channel></rss>'
    headers = {
        **sign(scheme="websub", secret=HUB_SECRET, body=body),
        "Content-Type": "application/rss+xml",
    }
    answer = app.post("/plone/@blog-webhook/feed", params=body, headers=headers, status=202).json
    assert answer["remote_id"] is None
    assert CALLS[0]["remote_id"] is None and CALLS[0]["action"] == "upsert"


def test_duplicate_delivery_queues_nothing_new(app, portal):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY)
    first = post(app, "/plone/@blog-webhook/ghost", GHOST_BODY, headers, status=202).json
    again = post(app, "/plone/@blog-webhook/ghost", GHOST_BODY, headers, status=200).json
    assert again["duplicate"] is True
    assert again["delivery"] == first["delivery"]
    assert again["task"] == first["task"]
    assert len(CALLS) == 1
    assert deliveries.count(portal=portal) == 1


def test_unsupported_event_is_acknowledged_and_ignored(app, portal):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY)
    answer = post(
        app, "/plone/@blog-webhook/ghost?event=member.added", GHOST_BODY, headers, status=202
    ).json
    assert answer["ignored"] is True
    assert answer["event"] == "member.added"
    assert answer["task"] is None
    assert CALLS == []
    assert deliveries.get(answer["delivery"], portal=portal)["status"] == "ignored"


def test_woocommerce_ping_gets_200_and_writes_nothing(app, portal):
    make_source(
        portal,
        id="wc",
        kind="wordpress",
        api_key="",
        scheme="hmac-sha256-base64",
        secret=WP_SECRET,
    )
    before = last_tid(portal)
    response = app.post(
        "/plone/@blog-webhook/wc",
        params=b"webhook_id=17",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        status=200,
    )
    assert response.json["ignored"] is True
    assert last_tid(portal) == before
    assert CALLS == []


# -- refused requests: JSON error, nothing written -----------------------------------------------


def assert_refused(app, portal, *, url, body, headers, status, error_type):
    before = last_tid(portal)
    response = post(app, url, body, headers, status=status)
    assert response.content_type == "application/json"
    assert response.json["type"] == error_type
    assert response.json["message"]
    assert GHOST_SECRET not in response.text
    assert last_tid(portal) == before, "an error answer committed a transaction"
    assert CALLS == []
    assert deliveries.count(portal=portal) == 0
    assert not api.content.find(portal_type="News Item")
    return response.json


def test_wrong_signature(app, portal):
    make_source(portal)
    headers = sign(scheme="ghost", secret="not-the-secret", body=GHOST_BODY)
    assert_refused(
        app,
        portal,
        url="/plone/@blog-webhook/ghost",
        body=GHOST_BODY,
        headers=headers,
        status=401,
        error_type="SignatureInvalid",
    )


def test_missing_signature_header(app, portal):
    make_source(portal)
    assert_refused(
        app,
        portal,
        url="/plone/++api++/@blog-webhook/ghost",
        body=GHOST_BODY,
        headers={},
        status=401,
        error_type="SignatureMissing",
    )


def test_stale_timestamp(app, portal):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY, now=time.time() - 3600)
    answer = assert_refused(
        app,
        portal,
        url="/plone/@blog-webhook/ghost",
        body=GHOST_BODY,
        headers=headers,
        status=401,
        error_type="SignatureStale",
    )
    assert "tolerance 300" in answer["message"]


def test_altered_body(app, portal):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY)
    assert_refused(
        app,
        portal,
        url="/plone/@blog-webhook/ghost",
        body=GHOST_BODY.replace(b"Hello", b"Hallo"),
        headers=headers,
        status=401,
        error_type="SignatureInvalid",
    )


def test_malformed_json_correctly_signed(app, portal):
    make_source(portal)
    body = b'{"post": {"current": '
    assert_refused(
        app,
        portal,
        url="/plone/@blog-webhook/ghost",
        body=body,
        headers=sign(scheme="ghost", secret=GHOST_SECRET, body=body),
        status=400,
        error_type="MalformedPayload",
    )


def test_unknown_source(app, portal):
    make_source(portal)
    assert_refused(
        app,
        portal,
        url="/plone/++api++/@blog-webhook/nope",
        body=GHOST_BODY,
        headers=sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY),
        status=404,
        error_type="UnknownSource",
    )


def test_missing_source_id(app, portal):
    make_source(portal)
    assert_refused(
        app,
        portal,
        url="/plone/@blog-webhook",
        body=GHOST_BODY,
        headers={},
        status=404,
        error_type="UnknownSource",
    )


def test_body_over_the_limit(app, portal, monkeypatch):
    make_source(portal)
    monkeypatch.setenv("PLONECELERY_WEBHOOK_MAX_BYTES", "1000")
    body = json.dumps({"post": {"current": {"id": "x", "html": "a" * 2000}}}).encode()
    answer = assert_refused(
        app,
        portal,
        url="/plone/@blog-webhook/ghost",
        body=body,
        headers=sign(scheme="ghost", secret=GHOST_SECRET, body=body),
        status=413,
        error_type="PayloadTooLarge",
    )
    assert "1000 bytes" in answer["message"]


def test_default_limit_is_one_megabyte(app, portal):
    make_source(portal)
    body = b'{"post": {"current": {"id": "x", "html": "' + b"a" * (1024 * 1024) + b'"}}}'
    assert_refused(
        app,
        portal,
        url="/plone/++api++/@blog-webhook/ghost",
        body=body,
        headers=sign(scheme="ghost", secret=GHOST_SECRET, body=body),
        status=413,
        error_type="PayloadTooLarge",
    )


def test_errors_are_logged_without_the_secret(app, portal, caplog):
    make_source(portal)
    headers = sign(scheme="ghost", secret="wrong", body=GHOST_BODY)
    with caplog.at_level("WARNING", logger="collective.plonecelery"):
        post(app, "/plone/@blog-webhook/ghost", GHOST_BODY, headers, status=401)
    messages = [
        r.getMessage() for r in caplog.records if r.name.startswith("collective.plonecelery")
    ]
    assert any("401 SignatureInvalid" in message and "'ghost'" in message for message in messages)
    assert not any(GHOST_SECRET in message for message in messages)


def test_other_methods_are_refused(app, portal):
    make_source(portal)
    response = app.put("/plone/@blog-webhook/ghost", params=b"{}", status=405)
    assert response.json["type"] == "MethodNotAllowed"


# -- the body is read with a bound, whatever Content-Length says ---------------------------------


def fake_request(body: bytes, content_length: str | None):
    environ = {} if content_length is None else {"CONTENT_LENGTH": content_length}
    return types.SimpleNamespace(environ=environ, stdin=io.BytesIO(body))


def test_read_body_checks_the_bytes_read_not_only_content_length():
    with pytest.raises(ServiceError) as refused:
        services.read_body(fake_request(b"x" * 101, "10"), limit=100)
    assert refused.value.status == 413
    with pytest.raises(ServiceError):
        services.read_body(fake_request(b"x" * 101, None), limit=100)
    with pytest.raises(ServiceError):
        services.read_body(fake_request(b"", "101"), limit=100)
    assert services.read_body(fake_request(b"x" * 100, None), limit=100) == b"x" * 100


def test_max_body_bytes_setting():
    assert services.max_body_bytes({}) == 1024 * 1024
    assert services.max_body_bytes({"PLONECELERY_WEBHOOK_MAX_BYTES": "5"}) == 5
    with pytest.raises(ValueError, match="PLONECELERY_WEBHOOK_MAX_BYTES"):
        services.max_body_bytes({"PLONECELERY_WEBHOOK_MAX_BYTES": "1MB"})


# -- WebSub verification of intent ---------------------------------------------------------------


def websub_source(portal):
    return make_source(
        portal,
        id="hub",
        kind="feed",
        api_key="",
        api_url="https://blog.example.org/feed.xml",
        scheme="websub",
        secret=HUB_SECRET,
    )


def test_websub_verification_of_intent_echoes_the_challenge(app, portal):
    websub_source(portal)
    response = app.get(
        "/plone/@blog-webhook/hub",
        params={
            "hub.mode": "subscribe",
            "hub.topic": "https://blog.example.org/feed.xml",
            "hub.challenge": "c-12345",
            "hub.lease_seconds": "864000",
        },
        status=200,
    )
    assert response.text == "c-12345"
    assert response.content_type == "text/plain"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.topic": "https://evil.example/feed", "hub.challenge": "c"},
        {"hub.mode": "subscribe", "hub.topic": "https://blog.example.org/feed.xml"},
        {
            "hub.mode": "publish",
            "hub.topic": "https://blog.example.org/feed.xml",
            "hub.challenge": "c",
        },
        {},
    ],
)
def test_websub_verification_for_another_topic_is_refused(app, portal, params):
    websub_source(portal)
    response = app.get("/plone/@blog-webhook/hub", params=params, status=404)
    assert response.json["type"] == "NotSubscribed"


def test_no_verification_of_intent_for_other_schemes(app, portal):
    make_source(portal)
    params = {
        "hub.mode": "subscribe",
        "hub.topic": "https://blog.example.org",
        "hub.challenge": "c",
    }
    app.get("/plone/@blog-webhook/ghost", params=params, status=404)


# -- trimming runs as a task, not in the request -----------------------------------------------


def test_log_over_its_bound_is_trimmed_by_a_task(app, portal, monkeypatch):
    make_source(portal, id="std", scheme="standard-webhooks", secret=WHSEC)
    monkeypatch.setenv("PLONECELERY_DELIVERY_MAX_ENTRIES", "3")
    monkeypatch.setattr(deliveries, "_last_trim_queued", 0.0)
    for number in range(4):
        body = json.dumps({"type": "post.updated", "data": {"id": str(number)}}).encode()
        headers = sign(scheme="standard-webhooks", secret=WHSEC, body=body, msg_id=f"m{number}")
        post(app, "/plone/@blog-webhook/std", body, headers, status=202)
    # The fourth delivery went over the bound: a trim task ran after its commit.
    portal._p_jar.sync()
    kept = [entry["delivery_id"] for entry in deliveries.list_deliveries(portal=portal)]
    assert kept == ["m3", "m2", "m1"]
    assert deliveries.count(portal=portal) == 3


# -- duplicates: only the same delivery, only while its import still covers it -----------------

GITHUB_SECRET = "github-secret"
WP_EXAMPLE = b'{"post_id": 4, "post": {"ID": 4, "post_type": "post"}}'
RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>B</title></channel></rss>'
# One source per signature scheme, and what its sender posts.
SCHEMES = {
    "ghost": ({}, GHOST_BODY, ("post.published", "post.published.edited", "post.unpublished")),
    "standard-webhooks": (
        {"scheme": "standard-webhooks", "secret": WHSEC},
        b'{"type": "post.updated", "data": {"id": "abc"}}',
        ("a", "b", "c"),
    ),
    "hmac-sha256-base64": (
        {"kind": "wordpress", "api_key": "", "scheme": "hmac-sha256-base64", "secret": WP_SECRET},
        WP_EXAMPLE,
        ("post_create", "post_update", "post_trash"),
    ),
    "websub": (
        {"kind": "feed", "api_key": "", "api_url": FEED_URL, "scheme": "websub"},
        RSS,
        ("a", "b", "c"),
    ),
    "github": (
        {"kind": "wordpress", "api_key": "", "scheme": "github", "secret": GITHUB_SECRET},
        WP_EXAMPLE,
        ("post_create", "post_update", "post_trash"),
    ),
    "none": (
        {"kind": "wordpress", "api_key": "", "scheme": "none", "secret": "", "insecure": True},
        WP_EXAMPLE,
        ("post_create", "post_update", "post_trash"),
    ),
}
SECRETS = {
    "ghost": GHOST_SECRET,
    "standard-webhooks": WHSEC,
    "hmac-sha256-base64": WP_SECRET,
    "websub": HUB_SECRET,
    "github": GITHUB_SECRET,
    "none": "",
}
#: Schemes whose senders tell deliveries apart (a message id, a signed timestamp).
DISTINCT = ("ghost", "standard-webhooks")


def scheme_source(portal, scheme, **overrides):
    settings, _body, _events = SCHEMES[scheme]
    source = {"id": scheme.replace("-", "_"), "secret": SECRETS[scheme], **settings}
    return make_source(portal, **{**source, **overrides})


def signed_headers(scheme, body, **options):
    if scheme == "none":
        return {}
    return sign(scheme=scheme, secret=SECRETS[scheme], body=body, **options)


def send(app, source, body, headers, *, event=None, status=None):
    query = f"?event={event}" if event else ""
    response = post(app, f"/plone/@blog-webhook/{source}{query}", body, headers, status="*")
    if status is not None:
        assert response.status_code == status, response.text
    return response.json


def finish(portal, source, delivery, *, status="imported", ago=0.0):
    """What the worker does when the import ends (and the clock moving on by ``ago`` s)."""
    deliveries.update(delivery, source_id=source, status=status, portal=portal)
    if ago:
        backdate(portal, source, delivery, ago)
    transaction.commit()


def backdate(portal, source, delivery, seconds):
    """Move the entry's received time ``seconds`` back (in the entry and the time index)."""
    log = portal.__annotations__[deliveries.ANNOTATION_KEY]
    key = deliveries.entry_key(source, delivery)
    shard = log["shards"][deliveries._index_slot(log, key)[key]]
    entry = shard["by_id"][key]
    shard["by_time"].remove((-entry["received"], key))
    entry["received"] -= seconds
    shard["by_time"].insert((-entry["received"], key))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_same_body_for_another_event_is_queued(app, portal, scheme):
    """WP Webhooks' post_create, post_update, post_trash may carry the very same body."""
    config = scheme_source(portal, scheme)
    _settings, body, events = SCHEMES[scheme]
    headers = signed_headers(scheme, body)  # Ghost: the same timestamp, too
    answers = []
    for event in events:
        if scheme == "standard-webhooks":
            headers = signed_headers(scheme, body)  # one message id per notification
        answers.append(send(app, config.id, body, headers, event=event, status=202))
    assert [answer.get("duplicate") for answer in answers] == [None] * 3
    assert len({answer["delivery"] for answer in answers}) == 3
    assert len(CALLS) == 3
    if scheme in ("hmac-sha256-base64", "github", "none"):
        assert [call["action"] for call in CALLS] == ["upsert", "upsert", "remove"]


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_true_retry_is_a_duplicate_with_one_task(app, portal, scheme):
    config = scheme_source(portal, scheme)
    _settings, body, events = SCHEMES[scheme]
    headers = signed_headers(scheme, body)
    first = send(app, config.id, body, headers, event=events[1], status=202)
    again = send(app, config.id, body, headers, event=events[1], status=200)
    assert again["duplicate"] is True
    assert (again["delivery"], again["task"]) == (first["delivery"], first["task"])
    # Seconds later, once the import has run: still the sender's retry.
    finish(portal, config.id, first["delivery"], ago=5)
    again = send(app, config.id, body, headers, event=events[1], status=200)
    assert again["duplicate"] is True and again["status"] == "imported"
    assert len(CALLS) == 1


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_same_body_minutes_later_after_a_change_is_queued(app, portal, scheme):
    """The post changed at the blog; the sender notifies again (thin senders: same body)."""
    config = scheme_source(portal, scheme)
    _settings, body, events = SCHEMES[scheme]
    first = send(app, config.id, body, signed_headers(scheme, body), event=events[1], status=202)
    finish(portal, config.id, first["delivery"], ago=600)
    # Ghost signs a new timestamp and Standard Webhooks sends a new id; the others the same.
    headers = signed_headers(scheme, body)
    again = send(app, config.id, body, headers, event=events[1], status=202)
    assert again["task"] != first["task"]
    assert len(CALLS) == 2
    if scheme not in DISTINCT:
        assert again["delivery"] == first["delivery"]
        # Both deliveries are in the log.
        logged = deliveries.list_deliveries(source_id=config.id, portal=portal)
        assert [entry["delivery_id"] for entry in logged] == [first["delivery"]] * 2


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s not in DISTINCT])
def test_the_repeat_window_setting(app, portal, scheme, monkeypatch):
    monkeypatch.setenv("PLONECELERY_DELIVERY_REPEAT_WINDOW", "0.5")
    config = scheme_source(portal, scheme)
    _settings, body, events = SCHEMES[scheme]
    headers = signed_headers(scheme, body)
    first = send(app, config.id, body, headers, event=events[1], status=202)
    finish(portal, config.id, first["delivery"])
    send(app, config.id, body, headers, event=events[1], status=200)
    time.sleep(0.6)
    send(app, config.id, body, headers, event=events[1], status=202)
    assert len(CALLS) == 2


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_pending_import_covers_a_late_repeat(app, portal, scheme):
    """The first import has not run yet: it fetches the post after the repeat anyway."""
    config = scheme_source(portal, scheme)
    _settings, body, events = SCHEMES[scheme]
    headers = signed_headers(scheme, body)
    first = send(app, config.id, body, headers, event=events[1], status=202)
    backdate(portal, config.id, first["delivery"], 3600)
    transaction.commit()
    again = send(app, config.id, body, headers, event=events[1], status=200)
    assert again["duplicate"] is True and again["status"] == "queued"
    assert len(CALLS) == 1


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_after_a_failed_import_the_retry_is_queued(app, portal, scheme):
    config = scheme_source(portal, scheme)
    _settings, body, events = SCHEMES[scheme]
    headers = signed_headers(scheme, body)
    first = send(app, config.id, body, headers, event=events[1], status=202)
    finish(portal, config.id, first["delivery"], status="failed")
    again = send(app, config.id, body, headers, event=events[1], status=202)
    assert again["delivery"] == first["delivery"]
    assert len(CALLS) == 2


def test_the_same_body_to_two_sources_is_two_deliveries(app, portal):
    wp = scheme_source(portal, "hmac-sha256-base64", id="wp-one")
    other = scheme_source(portal, "hmac-sha256-base64", id="wp-two")
    headers = signed_headers("hmac-sha256-base64", WP_EXAMPLE)
    send(app, wp.id, WP_EXAMPLE, headers, event="post_update", status=202)
    send(app, other.id, WP_EXAMPLE, headers, event="post_update", status=202)
    assert [call["source_id"] for call in CALLS] == ["wp-one", "wp-two"]


def test_an_unsigned_source_cannot_preempt_a_signed_delivery(app, portal):
    open_source = scheme_source(portal, "none", id="open")
    wp = scheme_source(portal, "hmac-sha256-base64", id="wp")
    send(app, open_source.id, WP_EXAMPLE, {}, event="post_update", status=202)
    headers = signed_headers("hmac-sha256-base64", WP_EXAMPLE)
    answer = send(app, wp.id, WP_EXAMPLE, headers, event="post_update", status=202)
    assert answer["task"]
    assert [call["source_id"] for call in CALLS] == ["open", "wp"]


def test_github_delivery_header_is_the_delivery_id(app, portal):
    config = scheme_source(portal, "github")
    headers = signed_headers("github", WP_EXAMPLE)
    first = send(app, config.id, WP_EXAMPLE, {**headers, "X-GitHub-Delivery": "d-1"}, status=202)
    assert first["delivery"] == "github:d-1"
    finish(portal, config.id, first["delivery"], ago=3600)
    # GitHub's redelivery keeps the id: a duplicate, however late.
    send(app, config.id, WP_EXAMPLE, {**headers, "X-GitHub-Delivery": "d-1"}, status=200)
    # A new delivery of the same body has a new id.
    send(app, config.id, WP_EXAMPLE, {**headers, "X-GitHub-Delivery": "d-2"}, status=202)
    assert len(CALLS) == 2


# -- Ghost removals the signed body shows are not confirmed by a fetch ----------------------------

DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("event", "body", "as_of"),
    [
        ("post.deleted", (DATA / "ghost_webhook_post_deleted.SYNTH.json").read_bytes(), None),
        (
            "post.unpublished",
            json.dumps(
                {
                    "post": {
                        "current": {
                            "id": "5c7ece47da174000c0c5c6d7",
                            "status": "draft",
                            "updated_at": "2024-05-02T10:00:00.000Z",
                        },
                        "previous": {"status": "published"},
                    }
                }
            ).encode(),
            "2024-05-02T10:00:00.000Z",
        ),
    ],
)
def test_a_ghost_removal_shown_by_the_signed_body_is_queued_without_fetch(
    app, portal, event, body, as_of
):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=body)
    send(app, "ghost", body, headers, event=event, status=202)
    assert [(c["action"], c.get("shown_gone"), c.get("as_of")) for c in CALLS] == [
        ("remove", True, as_of)
    ]


def test_a_removal_event_whose_body_still_shows_the_post_published_is_fetched(app, portal):
    make_source(portal)
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=GHOST_BODY)
    send(app, "ghost", GHOST_BODY, headers, event="post.unpublished", status=202)
    assert CALLS[0]["action"] == "remove" and "shown_gone" not in CALLS[0]


def test_an_unsigned_removal_is_always_fetched(app, portal):
    make_source(portal, id="open", scheme="none", secret="", insecure=True)
    body = (DATA / "ghost_webhook_post_deleted.SYNTH.json").read_bytes()
    send(app, "open", body, {}, event="post.deleted", status=202)
    assert CALLS[0]["action"] == "remove" and "shown_gone" not in CALLS[0]


def test_ghost_page_events_are_imported_only_where_the_source_asks(app, portal):
    body = json.dumps({"page": {"current": {"id": "5c7ece47da174000c0c5c6d8"}}}).encode()
    headers = sign(scheme="ghost", secret=GHOST_SECRET, body=body)
    make_source(portal)
    url = "/plone/@blog-webhook/{}?event=page.published"
    assert post(app, url.format("ghost"), body, headers, status=202).json["ignored"] is True
    assert CALLS == []
    make_source(portal, id="with-pages", ghost_pages=True)
    answer = post(app, url.format("with-pages"), body, headers, status=202).json
    assert answer["remote_id"] == "page:5c7ece47da174000c0c5c6d8"
    assert [(call["remote_id"], call["action"]) for call in CALLS] == [
        ("page:5c7ece47da174000c0c5c6d8", "upsert")
    ]


# -- the add-on's own WebSub subscriptions (blogs/subscriptions.py) ---------------------------

OWN_TOPIC = "https://blog.example.org/own.xml"
OWN_HUB = "https://hub.example.org/"
OWN_CALLBACK = "https://www.example.org/plone/@blog-webhook/own"


def own_source(portal, *, request: bool = True) -> str:
    """A WebSub source without a secret of its own, and (``request``) a pending subscribe."""
    make_source(
        portal,
        id="own",
        kind="feed",
        api_key="",
        api_url=OWN_TOPIC,
        scheme="websub",
        secret="",
        websub=True,
    )
    secret = ""
    if request:
        secret = subscriptions.request(
            "own", mode="subscribe", hub=OWN_HUB, topic=OWN_TOPIC, callback=OWN_CALLBACK,
            portal=portal,
        )  # fmt: skip
        transaction.commit()
    return secret


def verification(mode="subscribe", topic=OWN_TOPIC, **extra):
    return {"hub.mode": mode, "hub.topic": topic, "hub.challenge": "ch-77", **extra}


def test_own_subscription_is_verified_only_as_asked(app, portal):
    own_source(portal)
    for params in (
        verification(topic="https://evil.example/feed"),
        verification(mode="unsubscribe"),  # we asked to subscribe
        verification(mode="publish"),
    ):
        answer = app.get("/plone/@blog-webhook/own", params=params, status=404)
        assert answer.json["type"] == "NotSubscribed"
        assert "ch-77" not in answer.text
    for lease in ("ten", "²", "-5"):
        app.get(
            "/plone/@blog-webhook/own",
            params=verification(**{"hub.lease_seconds": lease}),
            status=400,
        )
    portal._p_jar.sync()
    assert subscriptions.info("own", portal=portal)["status"] == "pending"
    before = time.time()
    answer = app.get(
        "/plone/@blog-webhook/own", params=verification(**{"hub.lease_seconds": "3600"}), status=200
    )
    assert answer.text == "ch-77"
    portal._p_jar.sync()
    state = subscriptions.get("own", portal=portal)
    assert state["status"] == "subscribed" and state["hub"] == OWN_HUB
    assert before + 3600 <= state["expires"] <= time.time() + 3600
    # Verified once: the same GET again is not a pending request any more.
    app.get("/plone/@blog-webhook/own", params=verification(), status=404)
    # An absurd lease is cut to ten years (the state stays showable).
    portal._p_jar.sync()
    subscriptions.request(
        "own", mode="subscribe", hub=OWN_HUB, topic=OWN_TOPIC, callback=OWN_CALLBACK,
        portal=portal,
    )  # fmt: skip
    transaction.commit()
    app.get("/plone/@blog-webhook/own", params=verification(**{"hub.lease_seconds": "9" * 40}))
    portal._p_jar.sync()
    assert subscriptions.get("own", portal=portal)["lease_seconds"] == subscriptions.MAX_LEASE
    assert subscriptions.info("own", portal=portal)["expires"] > "2030"


def test_a_denial_is_recorded(app, portal):
    own_source(portal)
    app.get(
        "/plone/@blog-webhook/own",
        params={"hub.mode": "denied", "hub.topic": "https://other.example/", "hub.reason": "x"},
        status=404,
    )
    app.get(
        "/plone/@blog-webhook/own",
        params={"hub.mode": "denied", "hub.topic": OWN_TOPIC, "hub.reason": "not allowed"},
        status=200,
    )
    portal._p_jar.sync()
    info = subscriptions.info("own", portal=portal)
    assert info["status"] == "denied" and info["reason"] == "not allowed"
    assert subscriptions.secrets_for("own", portal=portal) == []


def test_notifications_are_checked_against_the_subscription_secret(app, portal):
    secret = own_source(portal)
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>B</title></channel></rss>'
    content_type = {"Content-Type": "application/rss+xml"}
    wrong = {**sign(scheme="websub", secret="not-the-secret", body=body), **content_type}
    answer = app.post("/plone/@blog-webhook/own", params=body, headers=wrong, status=401)
    assert answer.json["type"] == "SignatureInvalid"
    # Signed with the pending request's secret (the hub switches when it verifies): accepted.
    right = {**sign(scheme="websub", secret=secret, body=body), **content_type}
    answer = app.post("/plone/@blog-webhook/own", params=body, headers=right, status=202)
    assert CALLS[0]["source_id"] == "own" and CALLS[0]["remote_id"] is None
    assert secret not in answer.text


def test_a_websub_source_not_subscribed_yet_refuses_notifications(app, portal):
    own_source(portal, request=False)
    body = b"<rss/>"
    headers = {**sign(scheme="websub", secret="guess", body=body), "Content-Type": "text/xml"}
    answer = app.post("/plone/@blog-webhook/own", params=body, headers=headers, status=401)
    assert "no verified WebSub subscription" in answer.json["message"]
    # Nor a verification of intent: nothing was asked for.
    app.get("/plone/@blog-webhook/own", params=verification(), status=404)


def test_the_unsubscribe_of_a_removed_source_is_verified(app, portal):
    own_source(portal)
    app.get("/plone/@blog-webhook/own", params=verification(**{"hub.lease_seconds": "60"}))
    portal._p_jar.sync()
    with api.env.adopt_roles(["Manager"]):
        storage.remove_source("own", portal=portal)
    entry = subscriptions.active("own", portal=portal)
    assert entry == {"hub": OWN_HUB, "topic": OWN_TOPIC, "callback": OWN_CALLBACK}
    subscriptions.request("own", mode="unsubscribe", portal=portal, **entry)
    transaction.commit()
    app.get("/plone/@blog-webhook/own", params=verification(), status=404)  # not a subscribe
    answer = app.get("/plone/@blog-webhook/own", params=verification("unsubscribe"), status=200)
    assert answer.text == "ch-77"
    portal._p_jar.sync()
    assert subscriptions.get("own", portal=portal) is None
    answer = app.get("/plone/@blog-webhook/own", params=verification("unsubscribe"), status=404)
    assert answer.json["type"] == "UnknownSource"
